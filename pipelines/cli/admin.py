"""Administration commands: `users`, `audit`, `export`, `workers`, `gateway` (credentials)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from pipelines.access import accounts, audit, sessions, text, wall_tokens
from pipelines.cli.dispatch import read_register
from pipelines.cli.runtime import check_city_sql, load_city, session_store, sql_engine
from pipelines.redis_client import connect
from pipelines.settings import Settings
from pipelines.spine.partitions import global_prefix


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass(f"password for {args.username}: ")
        again = getpass.getpass("again: ")
    except (EOFError, KeyboardInterrupt):
        raise accounts.AccountError("no password given") from None
    if again != first:
        raise accounts.AccountError("the two passwords differ")
    return first


def _sessions_note(store_: sessions.Sessions | None, username: str) -> str:
    if store_ is None:
        left = sessions.RECHECK_MS // 1000
        return f"; open sessions of {username} end at their next check (within {left} s)"
    return f"; every session of {username} ended"


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    actor = f"cli:{getpass.getuser()}"
    now_ms = int(time.time() * 1000)
    sub = args.users_cmd
    try:
        for what in ("username", "scope"):  # no control or bidi characters in ids
            text.check_id(str(getattr(args, what, "") or ""), what)
        city = load_city(settings) if sub in ("add", "set-role") else None
        with sql_engine(settings) as engine, session_store(settings) as ends:
            if city is not None:
                check_city_sql(engine, city)
            if sub == "list":
                users = accounts.list_users(engine)
                print(f"{'username':16s} {'role':19s} {'scope':14s} {'disabled':8s} name")
                for u in users:
                    flag = "yes" if u.disabled else "no"
                    print(
                        f"{u.username:16s} {u.role:19s} {u.scope_area_id:14s} {flag:8s} "
                        f"{u.display_name}"
                    )
                print(f"{len(users)} users")
            elif sub == "add":
                assert city is not None
                accounts.validate_role_scope(city, args.role, args.scope)
                if args.role == "wall" and args.password_stdin:
                    raise accounts.AccountError("wall users have no password: omit it")
                if accounts.get_user(engine, args.username) is not None:
                    raise accounts.DuplicateUser(f"user {args.username} already exists")
                password = None if args.role == "wall" else _read_password(args)
                u = accounts.create_user(
                    engine,
                    city,
                    args.username,
                    args.role,
                    args.scope,
                    password,
                    args.name,
                    now_ms=now_ms,
                    actor=actor,
                )
                print(f"created {u.username} ({u.role}, scope {u.scope_area_id})")
                if u.role == "wall":
                    print(f"next: wangge users issue-wall-token {u.username}")
            elif sub == "set-role":
                assert city is not None
                u = accounts.set_role(
                    engine,
                    city,
                    args.username,
                    args.role,
                    args.scope,
                    now_ms=now_ms,
                    actor=actor,
                    sessions=ends,
                )
                note = _sessions_note(ends, u.username)
                print(f"{u.username} is now {u.role} with scope {u.scope_area_id}{note}")
            elif sub == "disable":
                u = accounts.disable_user(
                    engine, args.username, now_ms=now_ms, actor=actor, sessions=ends
                )
                print(f"disabled {u.username}{_sessions_note(ends, u.username)}")
            elif sub == "enable":
                u = accounts.enable_user(engine, args.username, now_ms=now_ms, actor=actor)
                print(f"enabled {u.username} ({u.role}, scope {u.scope_area_id})")
                if u.role == "wall":
                    print(f"its tokens stay revoked: wangge users issue-wall-token {u.username}")
            elif sub == "set-password":
                password = _read_password(args)
                u = accounts.set_password(
                    engine, args.username, password, now_ms=now_ms, actor=actor, sessions=ends
                )
                print(f"new password for {u.username}{_sessions_note(ends, u.username)}")
            elif sub == "revoke-wall-tokens":
                n = wall_tokens.revoke_wall_tokens(
                    engine, args.username, now_ms, actor=actor, sessions=ends
                )
                note = _sessions_note(ends, args.username)
                print(f"revoked {n} wall tokens of {args.username}{note}")
            elif sub == "issue-wall-token":
                days = args.days if args.days is not None else settings.auth.wall_token_days
                token = wall_tokens.issue_wall_token(
                    engine, args.username, days, now_ms, actor=actor
                )
                d = settings.dashboard
                print(f"wall token for {args.username} (valid {days} days; shown only once):")
                print(token)
                print(f"open: http://{d.host}:{d.port}/wall?token={token}")
    except (accounts.AccountError, text.BadText, audit.AuditKeyMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with sql_engine(settings) as engine:
            if args.audit_cmd in ("verify", "anchor"):
                result = audit.verify(engine, anchor=getattr(args, "anchor", None))
                if args.audit_cmd == "anchor" and result.ok:
                    print(result.anchor)  # SEQ:HASH — keep it outside the database
                    return 0
                print(result.describe())
                if not result.ok and result.bad_seq is not None:
                    row = audit.row(engine, result.bad_seq)
                    print(f"  row: {row}" if row else f"  (no row with seq {result.bad_seq})")
                return 0 if result.ok else 1
            days = args.days if args.days is not None else settings.auth.audit_retention_days
            actor = f"cli:{getpass.getuser()}"
            n = audit.purge(engine, days, int(time.time() * 1000), actor=actor)
            print(f"purged {n} audit rows older than {days} days")
    except audit.AuditKeyMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """``wangge export scorecard``: the same file the assessment page exports."""
    from pipelines import assessment as scorecard
    from pipelines.assessment import exports
    from pipelines.assessment.pdf_font import PdfFontError

    try:
        period = scorecard.parse_period(args.period, settings.live.timezone)
    except scorecard.PeriodError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    city = load_city(settings)
    scope = args.scope or city.city_id
    level = city.level_of(scope)
    if level is None:
        print(f"error: unknown area {scope!r} for --scope", file=sys.stderr)
        return 2
    order = ("city", "district", "street", "grid", "worker")
    if order.index(args.level) < order.index(level):
        print(f"error: --level {args.level} is above the scope's level ({level})", file=sys.stderr)
        return 2
    now_ms = int(time.time() * 1000)
    with sql_engine(settings) as engine:
        check_city_sql(engine, city)
        card = scorecard.scorecard(engine, city, settings, args.level, period, now_ms, scope)
        report = _progress_lines() if args.progress else exports.no_progress
        shown = scorecard.Shown.of(card)
        try:
            f = exports.export_shown(shown, city, settings, args.format, args.lang, report)
        except PdfFontError as exc:  # no CJK font to embed: what to install, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(f.data)
        tmp.replace(out)
        audit.record(
            engine,
            actor=f"cli:{getpass.getuser()}",
            role="cli",
            scope=scope,
            action="export",
            target=exports.audit_target(shown),
            detail=exports.audit_detail(shown, f, args.format, "cli"),
            now_ms=now_ms,
        )
    state = "final" if card.final else "in progress"
    print(f"wrote {out} ({f.rows} rows, {len(f.data)} bytes, {state}) sha256 {f.sha256}")
    return 0


def _progress_lines() -> Callable[[str, int, int], None]:
    """An export's progress as stderr lines: each new stage, every 10 % and 100 %."""
    from pipelines.assessment import exports

    last = ("", -10)

    def report(stage: str, done: int, total: int) -> None:
        nonlocal last
        pct = exports.percent(stage, done, total)
        if stage != last[0] or pct >= min(last[1] + 10, 100) > last[1]:
            print(f"{pct:3d}% {stage} {done}/{total}", file=sys.stderr, flush=True)
            last = (stage, pct)

    return report


def cmd_workers(settings: Settings, args: argparse.Namespace) -> int:
    """``workers import FILE``: validate every row (errors by line), then all or nothing."""
    from pipelines.gridwork import tracks as work

    city = load_city(settings)
    grid_ids = set(city.grids["grid_id"].to_list())
    rows = read_register(args.file, lambda text: work.parse_roster_csv(text, grid_ids))
    if rows is None:
        return 1
    with sql_engine(settings) as engine:
        check_city_sql(engine, city)
        n = work.import_roster(
            engine,
            rows,
            replace=args.replace,
            actor=f"cli:{getpass.getuser()}",
            now_ms=int(time.time() * 1000),
        )
    print(f"imported {n} workers" + (" (roster replaced)" if args.replace else ""))
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway``: serve; ``gateway credentials add|list|revoke``: who may send."""
    if args.gateway_cmd is None:
        from pipelines.gateway.server import serve

        return serve(settings, args.port)
    from pipelines.gateway import credentials as cr

    actor = f"cli:{getpass.getuser()}"
    now_ms = int(time.time() * 1000)
    sub = args.credentials_cmd
    try:
        with sql_engine(settings) as engine:
            if sub == "list":
                rows = cr.list_all(engine, include_revoked=not args.active)
                print(f"{'credential':16s} {'kind':8s} {'state':8s} {'name':24s} may send")
                for c in rows:
                    state = "revoked" if c.revoked else "active"
                    print(
                        f"{c.credential_id:16s} {c.kind:8s} {state:8s} {c.name[:24]:24s} "
                        f"{c.describe()}"
                    )
                print(f"{len(rows)} credentials")
            elif sub == "revoke":
                c = cr.revoke(engine, args.credential_id, now_ms=now_ms, actor=actor)
                _bump_revocations(settings)
                print(f"revoked {c.credential_id} ({c.kind}, {c.name})")
            else:
                city = load_city(settings)
                cams = [x for x in (args.cameras or "").split(",") if x.strip()]
                c, secret = cr.create(
                    engine,
                    city,
                    args.kind,
                    args.name,
                    now_ms=now_ms,
                    actor=actor,
                    area_id=args.area,
                    worker_id=args.worker,
                    device_id=args.device_id,
                    cameras=cams,
                    rate_per_minute=args.rate,
                )
                print(f"created {c.credential_id} ({c.kind}: {c.describe()})")
                print(f"key (shown only once): {secret}")
                _print_usage(settings, c, secret)
    except cr.CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _bump_revocations(settings: Settings) -> None:
    """Tell running gateways at once (they re-check within gateway.credential_cache_s
    anyway when Redis cannot be reached from here)."""
    from pipelines.gateway.credentials import generation_key

    if not settings.redis.url:
        return
    try:
        r = connect(settings.redis.url, socket_timeout=3)
        r.incr(generation_key(global_prefix(settings)))
        r.close()
    except redis.RedisError as exc:
        print(
            f"note: Redis not reachable ({exc}); gateways stop the key within "
            f"{settings.gateway.credential_cache_s:g} s",
            file=sys.stderr,
        )


def _print_usage(settings: Settings, c: Any, secret: str) -> None:
    g = settings.gateway
    base = f"http://{g.host}:{g.port}"
    if c.kind in ("phone", "fleet"):
        dev = c.device_id if c.kind == "phone" else "<the worker's id>"
        print(f"Traccar Client: Server URL {base}/?key={secret}  Device identifier {dev}")
    elif c.kind == "camera":
        print(f"Frigate push: POST {base}/frigate/events  Authorization: Bearer {secret}")
    else:
        print(f"Open311: endpoint {base}/open311/v2/  api_key={secret}")
        if c.kind == "hotline":
            print(f"batch: POST {base}/batch/reports  Authorization: Bearer {secret}")
