"""``wangge units`` and ``wangge flows``: the units incidents are dispatched to, and the
standard processing flows (checked, then listed)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.cli.runtime import check_city_sql, load_city, sql_engine
from pipelines.dispatch import flows as F
from pipelines.dispatch import units as U
from pipelines.settings import Settings
from pipelines.spine.csvimport import RowError


def read_register(
    path: str, parse: Callable[[str], tuple[list[dict[str, Any]], list[RowError]]]
) -> list[dict[str, Any]] | None:
    """The file's valid rows, or None after printing every problem by line (first 200)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return None
    rows, errors = parse(text)
    if errors:
        for e in errors[:200]:
            print(f"{path}: {e}", file=sys.stderr)
        more = " (first 200 shown)" if len(errors) > 200 else ""
        print(f"{len(errors)} bad rows{more}; nothing imported", file=sys.stderr)
        return None
    return rows


def cmd_units(settings: Settings, args: argparse.Namespace) -> int:
    """``units import FILE [--replace]`` (all or nothing) · ``units list [--area ID]``."""
    city = load_city(settings)
    if args.units_cmd == "import":
        rows = read_register(args.file, lambda text: U.parse_units_csv(text, city))
        if rows is None:
            return 1
        with sql_engine(settings) as engine:
            check_city_sql(engine, city)
            n = U.import_units(
                engine,
                rows,
                replace=args.replace,
                actor=f"cli:{getpass.getuser()}",
                now_ms=int(time.time() * 1000),
            )
        print(f"imported {n} units" + (" (list replaced)" if args.replace else ""))
        return 0
    with sql_engine(settings) as engine:
        check_city_sql(engine, city)
        listed = U.list_units(engine, [args.area] if args.area else None)
    for u in listed:
        kind = U.UNIT_TYPES[u["type"]]
        print(f"{u['unit_id']}\t{u['name']}\t{kind.zh} ({u['type']})\t{u['level']}\t{u['area_id']}")
    print(f"{len(listed)} units", file=sys.stderr)
    return 0


def checked_flows(settings: Settings) -> F.Flows | None:
    """The configured flows, or None after printing every problem (a start stops there)."""
    path = settings.dispatch.flows
    try:
        return F.load_flows(settings.path(path) if path else None)
    except F.FlowError as exc:
        print(f"error: [dispatch] flows: {exc.source}: the flow file is invalid:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def seed_demo_units(engine: Any, city: Any, now_ms: int) -> int:
    """The demo city's units when none are registered yet (`wangge run`); 0 otherwise."""
    if U.list_units(engine):
        return 0
    rows = U.demo_units(city)
    return U.import_units(engine, rows, replace=False, actor="system:demo", now_ms=now_ms)


def cmd_flows(settings: Settings, args: argparse.Namespace) -> int:
    """``flows check [FILE]``: check a flow file (default: the configured one) and list it."""
    path = args.file if args.file is not None else settings.dispatch.flows
    try:
        flows = F.load_flows(settings.path(path) if path else None)
    except F.FlowError as exc:
        print(f"{exc.source}: {len(exc.problems)} problems; the file is not used", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    for line in describe(flows.flows):
        print(line)
    print(f"{flows.source}: {len(flows.flows)} flows, every category covered", file=sys.stderr)
    return 0


def describe(flows: Sequence[F.Flow]) -> list[str]:
    """One line per flow: id, category from severity, stage deadlines and escalation."""
    out = []
    for f in flows:
        stages = " → ".join(f"{s.name} {s.hours:g}h ({s.unit})" for s in f.stages)
        path = "→".join(f.escalation)
        out.append(
            f"{f.id}\t{f.name_zh}\t{f.category} ≥{f.min_severity}\t{stages}\t"
            f"total {f.total_hours:g}h\tescalate {path} after {f.escalate_after_hours:g}h"
        )
    return out


def add_parsers(sub: Any) -> None:
    un = sub.add_parser("units", help="the units incidents are dispatched to (处置单位)")
    uns = un.add_subparsers(dest="units_cmd", required=True)
    ui = uns.add_parser("import", help="CSV: unit_id,name,type,level,area_id; all or nothing")
    ui.add_argument("file")
    ui.add_argument("--replace", action="store_true", help="the file is the whole list")
    ul = uns.add_parser("list", help="every unit (or those serving one area)")
    ul.add_argument("--area", help="an area id")
    fl = sub.add_parser("flows", help="the standard processing flows (标准处置流程)")
    fls = fl.add_subparsers(dest="flows_cmd", required=True)
    fc = fls.add_parser("check", help="check a flow file and list its flows")
    fc.add_argument("file", nargs="?", help="default: [dispatch] flows (or the shipped file)")
