"""The ``wangge`` command: run, pipelines, worker, simulate, geo, rebuild-live, status."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipelines.access import audit
from pipelines.city import geography as geo
from pipelines.cli.admin import cmd_audit, cmd_export, cmd_gateway, cmd_users, cmd_workers
from pipelines.cli.data import (
    _positive_int,
    cmd_backfill_summaries,
    cmd_geo,
    cmd_rebuild_live,
    cmd_simulate,
)
from pipelines.cli.db import add_parsers as add_db_parsers
from pipelines.cli.db import cmd_db
from pipelines.cli.dispatch import add_parsers as add_dispatch_parsers
from pipelines.cli.dispatch import cmd_flows, cmd_units
from pipelines.cli.run import cmd_pipelines, cmd_run, cmd_worker
from pipelines.cli.runtime import FEEDS
from pipelines.cli.status import cmd_status
from pipelines.ops import lifeline
from pipelines.settings import Settings, load_settings

# ------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wangge", description="Wangge 网格 — grid governance platform")
    p.add_argument("--config", help="path of config.toml (default: the project's)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run", help="start everything (embedded Redis, pipelines, simulator, dashboard)"
    )
    run.add_argument("--port", type=int, help="dashboard port (0 = any free port)")
    run.add_argument("--no-simulate", action="store_true", help="do not start the simulator")
    run.add_argument(
        "--gateway-port", type=int, help="ingest gateway port (0 or taken = any free port)"
    )
    sub.add_parser("pipelines", help="run the pipeline workers and the clock job")
    w = sub.add_parser("worker", help="one pipeline worker process (used by `pipelines`)")
    w.add_argument("--feed", choices=FEEDS, required=True)
    w.add_argument("--name", required=True, help="consumer name (stable across restarts)")
    w.add_argument(
        "--partition",
        type=int,
        default=0,
        help="the feed partition it reads ([streams] partitions)",
    )
    sim = sub.add_parser("simulate", help="live simulated feeds into Redis, or a JSONL file")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--speed", type=float, help="simulated seconds per real second")
    sim.add_argument("--rate", type=float, help="cap on events per second (0 = natural)")
    sim.add_argument("--malformed-share", type=float, dest="malformed_share")
    sim.add_argument("--duration", type=float, help="stop after this many seconds")
    sim.add_argument("--out", help="write a JSONL file instead of publishing")
    sim.add_argument("--events", type=int, default=100_000, help="events to write with --out")
    sim.add_argument("--start", type=float, help="simulation start (epoch seconds) for --out")
    sim.add_argument("--replay", help="publish the events of a JSONL file")
    sim.add_argument(
        "--via",
        choices=("redis", "gateway"),
        default="redis",
        help="write the streams directly, or drive the ingest gateway as real senders do",
    )
    sim.add_argument("--gateway-url", help="the gateway (default http://gateway.host:port/)")
    sim.add_argument(
        "--backfill",
        metavar="SPAN",
        help="simulate the past SPAN (7d, 36h, 90m) up to now through the streams and the"
        " pipelines (worker processes of this command), then stop; an empty database only",
    )
    sim.add_argument(
        "--force",
        action="store_true",
        help="--backfill into a database that already holds events (adds to its history)",
    )
    g = sub.add_parser("geo", help="geography: info, import, export")
    gs = g.add_subparsers(dest="geo_cmd", required=True)
    gs.add_parser("info", help="summary of the configured city (builds the demo city cache)")
    gi = gs.add_parser("import", help="import a GeoJSON city (grids, or district outlines)")
    gi.add_argument("file")
    gi.add_argument("--out", help="output directory (default var/geo/<file stem>)")
    gi.add_argument(
        "--grids",
        type=_positive_int,
        help="grids to generate inside district outlines (a positive number; default geo.grids)",
    )
    gi.add_argument("--name", help="the city's name (e.g. 杭州市) when the file does not give it")
    gr = gs.add_parser(
        "rebind",
        help="whose city the database holds; bind it to the configured city",
        description="Without a flag: show the database's city and the configured one. "
        "A database serves one city; to switch it to the configured city choose what "
        "happens to the data it holds.",
    )
    grm = gr.add_mutually_exclusive_group()
    grm.add_argument(
        "--discard-data",
        action="store_true",
        help="delete the previous city's data (not accounts nor the audit log) and Redis keys",
    )
    grm.add_argument(
        "--keep-data",
        action="store_true",
        help="the same city with new areas: keep the history (then run rebuild-live)",
    )
    ge = gs.add_parser("export", help="write one level's simplified GeoJSON")
    ge.add_argument("--level", choices=geo.LEVELS, default="district")
    ge.add_argument("--parent")
    ge.add_argument("--out", required=True)
    sub.add_parser("rebuild-live", help="rebuild the Redis live state from SQL")
    sub.add_parser(
        "backfill-summaries",
        help="compute the lifecycle summary of incidents stored before it existed",
    )
    sub.add_parser("status", help="stream lengths, consumer lag, dead letters")
    roles = "city_leader, district_commander, street_operator, supervisor, admin, wall"
    u = sub.add_parser("users", help="accounts: add, list, disable, enable, set-role, wall tokens")
    us = u.add_subparsers(dest="users_cmd", required=True)
    ua = us.add_parser("add", help="create an account (prompts for the password)")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, help=roles)
    ua.add_argument("--scope", required=True, help="area id the role is bound to")
    ua.add_argument("--name", help="display name")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    us.add_parser("list", help="all accounts with role, scope and state")
    ud = us.add_parser("disable", help="disable an account (and revoke its wall tokens)")
    ud.add_argument("username")
    ue = us.add_parser("enable", help="enable a disabled account (wall tokens stay revoked)")
    ue.add_argument("username")
    up = us.add_parser("set-password", help="set a new password (every session ends)")
    up.add_argument("username")
    up.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    uv = us.add_parser("revoke-wall-tokens", help="revoke a wall's tokens (its screens sign out)")
    uv.add_argument("username")
    ur = us.add_parser("set-role", help="change an account's role and scope")
    ur.add_argument("username")
    ur.add_argument("--role", required=True, help=roles)
    ur.add_argument("--scope", required=True, help="area id the role is bound to")
    uw = us.add_parser("issue-wall-token", help="a token for a wall user (printed once)")
    uw.add_argument("username")
    uw.add_argument("--days", type=int, help="validity (default auth.wall_token_days)")
    a = sub.add_parser("audit", help="audit log: verify the hash chain, purge old rows")
    aus = a.add_subparsers(dest="audit_cmd", required=True)
    av = aus.add_parser("verify", help="check the chain (exit 1 and the first bad row if tampered)")
    av.add_argument("--anchor", help="SEQ:HASH printed by `audit anchor` earlier: must still hold")
    aus.add_parser("anchor", help="verify, then print the head (SEQ:HASH) to keep elsewhere")
    ap = aus.add_parser("purge", help="delete rows older than the retention")
    ap.add_argument("--days", type=int, help="retention (default auth.audit_retention_days)")
    ex = sub.add_parser("export", help="exports: scorecards (监督考核) as XLSX, CSV or PDF")
    exs = ex.add_subparsers(dest="export_cmd", required=True)
    es = exs.add_parser("scorecard", help="a ranked scorecard, exactly as the page shows it")
    es.add_argument("--period", required=True, help="2026-10, 2026-W44, 2026-10-05 or A..B")
    es.add_argument("--level", choices=("district", "street", "grid", "worker"), required=True)
    es.add_argument("--format", choices=("xlsx", "csv", "pdf"), default="xlsx")
    es.add_argument("--out", required=True, help="file to write")
    es.add_argument("--scope", help="area id whose rows to export (default: the whole city)")
    es.add_argument("--lang", choices=("zh-CN", "en"), default="zh-CN")
    es.add_argument("--progress", action="store_true", help="print progress to stderr")
    gw = sub.add_parser(
        "gateway", help="the ingest gateway (OsmAnd, Open311, Frigate, batch API); credentials"
    )
    gw.add_argument("--port", type=int, help="port (default gateway.port)")
    gws = gw.add_subparsers(dest="gateway_cmd")
    gc = gws.add_parser("credentials", help="who may send: add, list, revoke")
    gcs = gc.add_subparsers(dest="credentials_cmd", required=True)
    ga = gcs.add_parser("add", help="a new credential; its key is printed once")
    ga.add_argument("kind", choices=("phone", "fleet", "camera", "hotline", "app"))
    ga.add_argument("--name", required=True, help="who it is for (shown in lists and audit)")
    ga.add_argument("--area", help="fleet / camera / hotline / app: area id (default: city)")
    ga.add_argument("--worker", help="phone: the roster worker id it sends as")
    ga.add_argument("--device-id", dest="device_id", help="phone: its device identifier")
    ga.add_argument("--cameras", help="camera: registered camera ids, comma-separated")
    ga.add_argument("--rate", type=int, help="events per minute (default: the kind's)")
    gl = gcs.add_parser("list", help="every credential (revoked ones marked)")
    gl.add_argument("--active", action="store_true", help="only those not revoked")
    gr = gcs.add_parser("revoke", help="revoke a credential at once")
    gr.add_argument("credential_id")
    wk = sub.add_parser("workers", help="the worker roster: import a CSV")
    wks = wk.add_subparsers(dest="workers_cmd", required=True)
    wi = wks.add_parser("import", help="CSV: worker_id,name,type,grid_id[,phone]; all or nothing")
    wi.add_argument("file")
    wi.add_argument("--replace", action="store_true", help="the file is the whole roster")
    add_dispatch_parsers(sub)
    add_db_parsers(sub)
    return p


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "pipelines": cmd_pipelines,
    "worker": cmd_worker,
    "simulate": cmd_simulate,
    "geo": cmd_geo,
    "rebuild-live": cmd_rebuild_live,
    "backfill-summaries": cmd_backfill_summaries,
    "status": cmd_status,
    "users": cmd_users,
    "audit": cmd_audit,
    "export": cmd_export,
    "workers": cmd_workers,
    "gateway": cmd_gateway,
    "units": cmd_units,
    "flows": cmd_flows,
    "db": cmd_db,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = load_settings(args.config)
    if argv is None:  # a process of its own: a child of `wangge run` ends with it
        lifeline.watch_supervisor()
    try:
        return COMMANDS[args.cmd](settings, args)
    except audit.AuditKeyMissing as exc:  # a command that writes the audit log, no key
        print(f"error: {exc}", file=sys.stderr)
        return 2
