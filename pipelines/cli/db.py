"""``wangge db``: the database's history tables — their layout (``partitions``) and the
conversion of a PostgreSQL database's plain tables into partitioned ones
(``migrate-partitions``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from sqlalchemy import Engine

from pipelines.cli.runtime import sql_engine
from pipelines.settings import Settings


def add_parsers(sub: Any) -> None:
    d = sub.add_parser("db", help="database: history-table partitions (PostgreSQL)")
    ds = d.add_subparsers(dest="db_cmd", required=True)
    ds.add_parser("partitions", help="the history tables' layout and partitions")
    m = ds.add_parser(
        "migrate-partitions",
        help="convert plain history tables into partitioned ones (stop the pipelines first)",
    )
    m.add_argument("--chunk", type=int, default=50_000, help="rows copied per transaction")


def layout_lines(engine: Engine) -> list[str]:
    """One line per history table: partitioned (how many, by what), plain (with what to
    do) or SQLite."""
    from pipelines.spine.store import partitions as P

    out = []
    for name, info in P.layout(engine).items():
        kind = info["layout"]
        if kind == "partitioned":
            names = [n for n in info["names"] if not n.endswith("_default")]
            span = f" {names[0]}..{names[-1]}" if names else ""
            out.append(f"{name:16s} partitioned by {info['period']}: {info['partitions']}{span}")
        elif kind == "plain":
            out.append(
                f"{name:16s} PLAIN (not partitioned): stop the pipelines, then run "
                "`wangge db migrate-partitions`"
            )
        else:
            out.append(f"{name:16s} {kind}")
    return out


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.spine.store import migrate as M

    with sql_engine(settings) as engine:
        if args.db_cmd == "partitions":
            for line in layout_lines(engine):
                print(line)
            return 0
        try:
            done = M.migrate(
                engine,
                int(time.time() * 1000),
                settings.live.timezone,
                chunk=args.chunk,
                progress=lambda s: print(s, flush=True),
            )
        except M.MigrationRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not done:
            print("nothing to migrate: every history table is partitioned already")
        for line in layout_lines(engine):
            print(line)
    return 0
