"""Backfill: a simulated past, fed through the real streams, so a first start looks lived in.

The simulator runs from ``now − backfill_days`` up to now as fast as the pipelines take
it, and every event goes into the feed streams like a live one (the feed workers decode,
validate, aggregate, write the live state and SQL). What history needs decides the
volume: reports (every lifecycle step), video alerts and the incidents' lifecycles are
whole; the worker tracks, which at the live 10–30 s ping interval would be tens of
millions of points a week, are thinned to one point per on-shift worker about every
``backfill_track_every_s`` (still every grid's daily patrol coverage and the recent
visits the patrol-gap rule reads). No malformed events and no scripted anomalies: the
past is a normal city (a daily dispute surge in the same street would teach the surge
rule's baseline that a surge is normal there); ``Simulator.resume`` then carries the
same simulation on live, so the incidents open at the end of the backfill go on through
their lifecycles and the anomalies come ``anomaly_start_min`` after the live start.

Nothing here talks to Redis: ``publish``, ``backlog`` and ``wait`` are passed in (the CLI
gives the streams and the worker processes, tests in-process workers on an injected
clock). Flow control keeps at most ``max_backlog`` entries unacknowledged, so Redis
memory stays bounded whatever the span.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.city import geography as geo
from pipelines.city.simulator.core import Simulator
from pipelines.city.simulator.mixes import DAY_MS, HOUR_MS, MINUTE_MS
from pipelines.dispatch.flows import Flows
from pipelines.settings import SimulateSettings
from pipelines.spine.events import FEEDS

# Simulated time advanced (and published) per step. An hour: the video and location
# workers then take an hour's alerts and pings per batch (~800 and ~6,000) instead of
# ten minutes' (~140 and ~1,000), so their per-batch work (SQL round trips, frames,
# scripts) is shared by several times more events.
STEP_MS = HOUR_MS
MAX_BACKLOG = 60_000  # entries published but not yet acknowledged, all feeds
CAUGHT_UP_MS = 1_000  # the backfill ends this close to now; the live feed takes over
# Reports are held for this much simulated time and published incident by incident (each
# incident's steps in time order): a batch then touches a few hundred incidents instead
# of one per event, which the report pipeline's per-incident SQL and state work repays
# (measured: 1.8× fewer CPU seconds per report event in the worker).
GROUP_MS = 12 * HOUR_MS


@dataclass
class BackfillProgress:
    """Where a running backfill is (passed to the progress callback after every step)."""

    start_ms: int
    end_ms: int  # "now" as of this step (it moves while the backfill runs)
    sim_ms: int  # simulated clock: everything up to here is published
    published: int
    backlog: int  # published, not yet acknowledged by the pipelines
    elapsed_s: float

    @property
    def fraction(self) -> float:
        span = max(self.end_ms - self.start_ms, 1)
        done = (self.sim_ms - self.start_ms) / span
        if self.published and self.backlog:  # the last stretch: draining
            done = min(done, 1.0 - self.backlog / max(self.published, 1))
        return float(min(max(done, 0.0), 1.0))


@dataclass
class BackfillResult:
    start_ms: int
    end_ms: int
    events: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.events.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


def parse_span(text: str) -> float:
    """A span such as ``7d``, ``36h``, ``90m`` or ``2.5`` (days) in days."""
    t = text.strip().lower()
    unit = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440}
    try:
        days = float(t[:-1]) * unit[t[-1]] if t and t[-1] in unit else float(t)
    except ValueError:
        raise ValueError(f"{text!r} is not a span (e.g. 7d, 36h, 90m)") from None
    if not days > 0:
        raise ValueError(f"the span must be positive, got {text!r}")
    return days


def backfill_config(cfg: SimulateSettings) -> SimulateSettings:
    """The simulator's settings for the past: thinned tracks, no malformed events, no
    scripted anomalies, no rate cap, no command centre (its steps are planned by the
    incidents' standard flows like the other incidents')."""
    every = max(float(cfg.backfill_track_every_s), 1.0)
    return dataclasses.replace(
        cfg,
        ping_min_s=every * 0.75,
        ping_max_s=every * 1.25,
        malformed_share=0.0,
        anomalies=False,
        rate=0.0,
        command_share=0.0,
    )


def backfill_simulator(
    city: geo.City, cfg: SimulateSettings, flows: Flows, end_ms: int, days: float
) -> Simulator:
    """A simulator starting ``days`` before ``end_ms`` with :func:`backfill_config`."""
    start = int(end_ms) - round(days * DAY_MS)
    return Simulator(city, backfill_config(cfg), flows, start)


def run_backfill(
    sim: Simulator,
    publish: Callable[[str, list[bytes]], None],
    backlog: Callable[[], int],
    wait: Callable[[], None],
    now_ms: Callable[[], int],
    *,
    progress: Callable[[BackfillProgress], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
    step_ms: int = STEP_MS,
    group_ms: int = GROUP_MS,
    max_backlog: int = MAX_BACKLOG,
    timer: Callable[[], float] = time.perf_counter,
) -> BackfillResult:
    """Advance ``sim`` up to ``now_ms()`` (which moves: the backfill chases the clock until
    it is within :data:`CAUGHT_UP_MS`), publishing each step's events per feed in time
    order; wait (``wait()``, while ``backlog()`` > ``max_backlog``) for the pipelines to
    keep up, and at the end until they acknowledged everything. Never publishes an event
    later than ``now_ms()``. ``stop()`` true ends it early (not waiting for the rest)."""
    t0 = timer()
    start = sim.clock_ms
    res = BackfillResult(start, start, {f: 0 for f in FEEDS})

    def report(end: int, pending: int) -> None:
        if progress is not None:
            progress(
                BackfillProgress(
                    start, end, sim.clock_ms, res.total, pending, elapsed_s=timer() - t0
                )
            )

    held: list[tuple[bytes, bytes]] = []  # (incident id, payload) of the reports held
    held_from = start

    def release() -> None:
        nonlocal held_from
        if held:
            held.sort(key=lambda h: h[0])  # stable: each incident's steps stay in time order
            publish("reports", [p for _, p in held])
            res.events["reports"] += len(held)
            held.clear()
        held_from = sim.clock_ms

    end = now_ms()
    while not stop():
        end = now_ms()
        if sim.clock_ms >= end - CAUGHT_UP_MS:
            break
        until = min(sim.clock_ms + step_ms, end)
        batch: dict[str, list[bytes]] = {}
        for feed, payload in sim.advance(until):
            batch.setdefault(feed, []).append(payload)
        if group_ms > 0:
            for p in batch.pop("reports", []):
                held.append((_incident_of(p), p))
            if sim.clock_ms - held_from >= group_ms:
                release()
        for feed in FEEDS:
            if batch.get(feed):
                publish(feed, batch[feed])
                res.events[feed] += len(batch[feed])
        pending = backlog()
        while pending > max_backlog and not stop():
            wait()
            pending = backlog()
        report(end, pending)
    release()
    pending = backlog()
    while pending > 0 and not stop():
        wait()
        pending = backlog()
        report(end, pending)
    res.end_ms = sim.clock_ms
    res.elapsed_s = timer() - t0
    report(end, 0)
    return res


def _incident_of(payload: bytes) -> bytes:
    """The incident id of a simulator's report payload (``"incident_id":"…"``)."""
    i = payload.index(b'"incident_id":"') + 15
    return payload[i : payload.index(b'"', i)]


def describe_span(ms: int) -> str:
    """``6d 23h``, ``5h 30m``, ``45m`` (for the console)."""
    days, rest = divmod(max(int(ms), 0), DAY_MS)
    hours, rest = divmod(rest, HOUR_MS)
    minutes = rest // MINUTE_MS
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"
