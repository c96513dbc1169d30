"""`wangge status`: the running instance's URLs and demo accounts, stream health, dead
letters and live-state meta."""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import redis
from sqlalchemy import Engine

from pipelines.cli import console
from pipelines.cli.runtime import runtime
from pipelines.history import spans
from pipelines.settings import Settings
from pipelines.spine import health


def health_lines(r: redis.Redis, s: Settings, now_ms: int) -> list[str]:
    """Per stream: length, group lag, oldest pending age, dead letters by reason, restarts
    in the last hour, newest applied event's age, and STALE with why when it is."""
    th = health.thresholds_of(s)
    done = health.BACKFILL.read(r, s.redis.prefix)
    out = []
    for feed, h in health.read_health(r, s, now_ms).items():
        age = h.event_age_s(now_ms)
        dead = ",".join(f"{k}={v}" for k, v in sorted(h.dead.items())) or "0"
        why = health.stale_reasons(h, th, now_ms, backfill=done is not None)
        out.append(
            f"{feed:10s} length={h.length} lag={h.lag} pending={h.pending} "
            f"oldest_pending_s={h.pending_age_s(now_ms)} dead={dead} "
            f"restarts_1h={h.restarts_within(now_ms)} "
            f"newest_event_s={'-' if age is None else age} "
            + (f"STALE({','.join(why)})" if why else "ok")
        )
    if done is not None:
        out.append(f"backfill   running, {done * 100:.0f}% done (the lag above is its backlog)")
    replay = health.REPLAY.read(r, s.redis.prefix)
    if replay is not None:
        out.append(
            f"warnings   evaluating the backfilled past, {replay * 100:.0f}% done "
            "(the live warnings start after)"
        )
    return out


def cut_short_line(engine: Engine, s: Settings) -> str | None:
    """A backfill cut short (Ctrl-C, a crash), which the next `wangge run` resumes."""
    cut = spans.unfinished(engine)
    if cut is None:
        return None
    at = datetime.fromtimestamp((cut.resume_ms or cut.start_ms) / 1000, ZoneInfo(s.live.timezone))
    return (
        f"backfill   cut short: its events up to {at:%Y-%m-%d %H:%M} are in; "
        "the next `wangge run` resumes it"
    )


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """The running `wangge run` (its URLs and demo accounts), then the streams' health (of
    its embedded Redis when no Redis is configured)."""
    from pipelines.spine.runner import live_state

    info = console.read_run_file(settings)
    if info is not None:
        print(f"wangge run (pid {info['pid']}):", end="")
        print(console.accounts_text(info["accounts"], info["dashboard"], info["gateway"]))
        if not settings.redis.url and info.get("redis"):
            redis_ = dataclasses.replace(settings.redis, url=str(info["redis"]))
            settings = dataclasses.replace(settings, redis=redis_)
    with runtime(settings, embedded_ok=False) as rt:
        s = rt.settings
        st = live_state(rt.r, s)
        for line in health_lines(rt.r, s, int(time.time() * 1000)):
            print(line)
        print(f"deadletter length={rt.r.xlen(st.deadletter_key)} {st.deadletter_counts()}")
        cut = cut_short_line(rt.engine, s)
        if cut and health.BACKFILL.read(rt.r, s.redis.prefix) is None:
            print(cut)
        print(f"meta {st.meta()}")
        from pipelines.cli.db import layout_lines

        for line in layout_lines(rt.engine):
            print(f"db {line}")
    return 0
