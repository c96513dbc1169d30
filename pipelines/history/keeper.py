"""Builds and keeps the time machine's checkpoints (``checkpoints``), with the clock
passed in: every whole hour of the last ``live.checkpoint_days`` that has a history gets
one, each built from the one an hour before when that one holds (a step over an hour's
events), else from the incidents concerned then; checkpoints that no longer hold are
rebuilt, those older than the span dropped.

Runs as a thread of the city services (``wangge run``, ``wangge pipelines``); the
benchmark and the tests call ``keep`` with their clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipelines.city.geography import City
from pipelines.dispatch.flows import flows_for
from pipelines.history import checkpoints as cps
from pipelines.history import reconstruct as rc
from pipelines.history.state import Scope, read_incidents, window_of
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.store.sql import hour_end

log = logging.getLogger("wangge.history")

HOUR_MS = cps.HOUR_MS
# An hour is checkpointed this long after it ends (events still in flight then would
# only make it not hold)
SETTLE_MS = 5 * 60_000


def states_at(
    engine: Engine,
    city: City,
    settings: Settings,
    at_ms: int,
    base: cps.Checkpoint | None = None,
) -> pl.DataFrame:
    """The city's incident states a picture holds at ``at_ms`` (``STATE_COLUMNS``): from
    ``base`` and the incidents touched since it, or from every incident concerned."""
    tz = settings.live.timezone
    lo, hi = window_of(at_ms, settings.live.bucket_ttl_hours * HOUR_MS)
    city_wide = Scope(None, None, (), ())
    states = None if base is None else base.states
    with engine.connect() as conn:
        since = None if base is None else base.at_ms
        events, settled, later = read_incidents(conn, hi, lo, tz, city_wide, since, states)
    df = rc.incidents_at(
        events, at_ms, city.city_id, tz, flows_for(settings), settled, states, lo, later
    )
    return df.select(rc.STATE_COLUMNS)


@dataclass
class Built:
    """What one pass did."""

    built: list[int] = field(default_factory=list)  # hours checkpointed
    stepped: int = 0  # … of which from the checkpoint an hour before
    dropped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    done: bool = True  # False: the time budget ran out first


def first_event_ms(engine: Engine) -> int | None:
    ev = store.incident_events
    with engine.connect() as conn:
        got = conn.execute(select(func.min(ev.c.ts_ms))).scalar()
    return None if got is None else int(got)


def keep(
    engine: Engine,
    city: City,
    settings: Settings,
    now_ms: int,
    *,
    budget_s: float | None = None,
    perf: Callable[[], float] = time.perf_counter,
) -> Built:
    """One pass: checkpoint every whole hour of the kept span that has a history and no
    checkpoint that holds, oldest first (each steps from the one before), until
    ``budget_s`` runs out; drop the others."""
    t0 = perf()
    out = Built()
    key = cps.key_of(city.city_id, settings.live.timezone, flows_for(settings))
    span = settings.live.checkpoint_days * 24 * HOUR_MS
    newest = (now_ms - SETTLE_MS) // HOUR_MS * HOUR_MS
    full_ms = cps.FULL_EVERY_H * HOUR_MS  # from a full one: the span's first hours need it
    keep_from = ((now_ms - span) // HOUR_MS * HOUR_MS + HOUR_MS) // full_ms * full_ms
    with engine.begin() as conn:
        out.dropped = cps.prune(conn, key, keep_from)
    first = first_event_ms(engine)
    if span <= 0 or first is None:
        out.seconds = perf() - t0
        return out
    start = max(keep_from, hour_end(first))
    with engine.connect() as conn:
        holding = cps.held(conn, key, start, newest)
    prev: cps.Checkpoint | None = None
    for h in range(start, newest + 1, HOUR_MS):
        if h in holding:
            prev = None
            continue
        if budget_s is not None and perf() - t0 > budget_s:
            out.done = False
            break
        with engine.connect() as conn:
            marks = cps.marks_upto(conn, h)  # before any event read
            if prev is not None and (
                prev.at_ms != h - HOUR_MS or not cps.held(conn, key, prev.at_ms, prev.at_ms)
            ):
                prev = None  # history before it changed since it was built
            if prev is None:
                prev = cps.nearest(conn, key, h - 1, HOUR_MS)
        states = states_at(engine, city, settings, h, prev)
        with engine.begin() as conn:
            out.bytes += cps.write(conn, key, h, marks, states, now_ms, prev is not None)
        out.stepped += prev is not None
        out.built.append(h)
        prev = cps.Checkpoint(h, marks, states)
    out.seconds = perf() - t0
    return out


def run(
    engine: Engine,
    city: City,
    settings: Settings,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    every_s: float = 60.0,
) -> None:
    """Keep checkpoints until ``stop``: a pass every ``every_s`` (a few seconds of work
    each, so a first start's week is checkpointed within minutes)."""
    built, seconds = 0, 0.0  # since the last line said
    while not stop.is_set():
        try:
            done = keep(engine, city, settings, int(clock() * 1000), budget_s=5.0)
            built, seconds = built + len(done.built), seconds + done.seconds
            if built and done.done:  # one line when caught up, not one per pass
                log.info("time machine: %d hourly checkpoints kept in %.1f s", built, seconds)
                built, seconds = 0, 0.0
            wait = every_s if done.done else 1.0
        except SQLAlchemyError as exc:  # the database is away: try again later
            log.warning("time machine checkpoints: %s", str(exc).splitlines()[0])
            wait = every_s
        except Exception:  # a bug must not end the thread: the pages read without them
            log.exception("time machine checkpoints")
            wait = every_s
        stop.wait(wait)
