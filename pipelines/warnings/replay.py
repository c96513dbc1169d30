"""The warnings of a past that was never watched live: the engine evaluated at past moments
over SQL history (a first start's backfill), so the time machine and the warnings' history
show the warnings a running city would have raised then.

:class:`PastEngine` is the :class:`WarningEngine` with its clock on each past moment in turn
and the inputs it reads live taken as of that moment from SQL history instead:

* the open incidents: each incident's row as of the moment (``store.incident_frame`` over its
  events up to then, the function the pipelines keep the ``incidents`` row with), the
  incidents touched since the previous moment re-read at each step;
* the workers' positions: each one's latest track point by the moment;
* the pipelines' health: none (the ``system`` rule has nothing to judge in the past);
* nothing goes to the live state at each moment (``warnings.republish`` after the last
  one makes what is open then the live list).

History is complete when it is replayed (no late rows), so the incremental reads never need
the live engine's hourly full re-read. A backfill thins the tracks to one point per worker
every ``track_every_s``: a worker is then online when seen within that interval (a quarter
more for its jitter) instead of ``online_minutes``. Whether a grid went unvisited, a worker
left their grid or stood still (``patrol_gap``'s gaps, ``left_grid``, ``idle``) needs the
live ping rate: such a past has none of these (``patrol_gap`` still finds a street whose
workers were all offline).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy import select

from pipelines.gridwork.tracks import POSITIONS_SCHEMA
from pipelines.history import spans
from pipelines.spine import store
from pipelines.spine.store.incidents import incident_frame
from pipelines.warnings.engine import WarningEngine
from pipelines.warnings.lifecycle import Warning
from pipelines.warnings.model import (
    AWAY_SCHEMA,
    DAY_MS,
    INCIDENT_OPTIONAL,
    INCIDENTS_SCHEMA,
    MINUTE_MS,
    SPREAD_SCHEMA,
    STREAMS_SCHEMA,
    Rule,
    empty,
)

# the event columns an incident's row as the engine reads it is made of (the free texts
# are not: they stay null in the rows made here)
UNREAD = ("source", "reporter_id", "description", "reason", "note", "photo_url", "onsite_by")
EVENT_COLUMNS = tuple(c.name for c in store.incident_events.columns if c.name not in UNREAD)
INCIDENT_COLUMNS = {
    **INCIDENTS_SCHEMA,
    **{k: v for k, v in INCIDENT_OPTIONAL.items() if k in store.incidents.c},
}


@dataclass
class PastEngine(WarningEngine):
    """The warnings engine at past moments (``at_ms``, moved forward by :func:`replay`)."""

    at_ms: int = 0
    track_every_s: float | None = None  # the tracks' thinning (None: pings as they came)
    # a slow rule (``RuleConfig.every_ms``) is evaluated at most this often (its findings
    # carried in between, as live): a replay of a week need not run them every step
    slow_every_s: float = 0.0
    _positions: pl.DataFrame | None = field(default=None, init=False)
    _positions_hi: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.clock = lambda: self.at_ms / 1000
        super().__post_init__()
        online = spans.online_minutes(self.cfg.online_minutes, self.track_every_s)
        self.cfg = dataclasses.replace(self.cfg, online_minutes=online)

    @property
    def thinned(self) -> bool:
        """Whether the tracks are thinned (``left_grid`` and ``idle`` cannot be told)."""
        return bool(self.track_every_s)

    def due(self, now_ms: int, every_rule: bool = False) -> dict[str, Rule]:
        rules = super().due(now_ms, every_rule)
        for name in list(rules):
            last, every = self._carried.get(name), self.cfg.every_ms(name)
            if not every or last is None or every_rule:
                continue
            if 0 <= now_ms - last[0] < max(every, self.slow_every_s * 1000):
                del rules[name]
        return rules

    def _incremental(self, now_ms: int, hi: int, full_ms: int, cached: object) -> bool:
        return cached is not None and hi <= now_ms  # history holds no late rows

    def read_work(self, now_ms: int) -> dict[str, pl.DataFrame]:
        if self.thinned:  # what only left_grid and idle read: they find nothing
            return {"away": empty(AWAY_SCHEMA), "spread": empty(SPREAD_SCHEMA)}
        return super().read_work(now_ms)

    def read_visits(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        if self.thinned:  # nor can an unvisited grid be told: every grid counts as visited
            return self.areas.grids.select("grid_id", last_ms=pl.lit(now_ms, pl.Int64))
        return super().read_visits(now_ms, positions)

    def read_workers(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        if self._workers is not None:  # the roster is the one stored: read once
            self._workers_ms = now_ms
        return super().read_workers(now_ms, positions)

    def read_incidents(self, now_ms: int) -> pl.DataFrame:
        """The incidents open at ``now_ms`` and reported within the SLA lookback, as their
        rows read then; each step re-reads the incidents touched since the previous one."""
        ev = store.incident_events
        since = now_ms - self.cfg.sla_lookback_days * DAY_MS
        step = self._incremental(now_ms, self._incidents_hi, 0, self._incidents)
        lo = self._incidents_hi if step else since
        touched = select(ev.c.incident_id).where(ev.c.ts_ms > lo, ev.c.ts_ms <= now_ms)
        cols = [ev.c[c] for c in EVENT_COLUMNS]
        with self.engine.connect() as conn:
            q = select(*cols).where(ev.c.incident_id.in_(touched), ev.c.ts_ms <= now_ms)
            hist = store.driver_frame(conn, q, ev, EVENT_COLUMNS).with_columns(
                pl.lit(None, pl.String).alias(c) for c in UNREAD
            )
        fresh = empty(INCIDENT_COLUMNS)
        if hist.height:
            rows = incident_frame(hist, self.cfg.flows)
            fresh = rows.select(pl.col(c).cast(t) for c, t in INCIDENT_COLUMNS.items())
        kept = self._incidents if step and self._incidents is not None else empty(INCIDENT_COLUMNS)
        got = pl.concat(
            [
                kept.filter(~pl.col("incident_id").is_in(fresh["incident_id"].implode())),
                fresh.filter(pl.col("status") != "closed"),
            ]
        ).filter(pl.col("reported_ms") > since)
        self._incidents, self._incidents_hi = got, now_ms
        return got

    def read_positions(self, now_ms: int) -> pl.DataFrame:
        """Each worker's latest track point by ``now_ms`` (the points since the previous
        step laid over the positions then)."""
        tp = store.track_points
        cols = [tp.c[c] for c in POSITIONS_SCHEMA]
        q = select(*cols).where(tp.c.ts_ms <= now_ms)
        if self._positions is not None and self._positions_hi <= now_ms:
            q = q.where(tp.c.ts_ms > self._positions_hi)
        with self.engine.connect() as conn:
            rows = conn.execute(q).fetchall()
        fresh = pl.DataFrame(rows, schema=POSITIONS_SCHEMA, orient="row").with_columns(
            pl.col("mock").fill_null(False)
        )
        if self._positions is not None and self._positions_hi <= now_ms:
            fresh = pl.concat([self._positions, fresh])
        got = fresh.sort("ts_ms").unique("worker_id", keep="last", maintain_order=True)
        self._positions, self._positions_hi = got, now_ms
        return got

    def read_streams(self, now_ms: int) -> pl.DataFrame:
        return empty(STREAMS_SCHEMA)

    def publish(self, warnings: list[Warning]) -> None:
        """Nothing: a past moment is not the live state."""


@dataclass
class ReplayResult:
    start_ms: int
    end_ms: int
    steps: int = 0
    opened: int = 0
    cleared: int = 0
    open_at_end: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        """One console line."""
        return (
            f"  warnings  {self.steps:,} past moments evaluated: {self.opened:,} warnings "
            f"opened, {self.cleared:,} cleared, {self.open_at_end:,} still open "
            f"in {self.elapsed_s:.1f} s"
        )


def replay(
    past: PastEngine,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[ReplayResult, int], None] | None = None,
    after_ms: int | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> ReplayResult:
    """Tick ``past`` at every ``step_ms`` after ``start_ms`` up to ``end_ms`` (both epoch ms)
    and at ``end_ms`` itself; the warnings it opens, updates and clears are persisted at
    those moments (``warnings`` and ``warning_actions``, as live). ``progress(result, at)``
    after each moment. ``after_ms``: the moments up to it are done (a replay resumed; the
    engine then reads in full at its first moment, as after a restart)."""
    if step_ms < MINUTE_MS:
        raise ValueError(f"a replay step of {step_ms} ms is shorter than a minute")
    t0 = timer()
    out = ReplayResult(start_ms, end_ms)
    moments = list(range(start_ms + step_ms, end_ms, step_ms))
    if end_ms > start_ms:
        moments.append(end_ms)
    if after_ms is not None:
        moments = [m for m in moments if m > after_ms]
    res: dict[str, Any] = {}
    for at in moments:
        if stop():
            break
        past.at_ms = at
        res = past.tick()
        out.steps += 1
        out.opened += res["new"]
        out.cleared += res["cleared"]
        if progress is not None:
            out.elapsed_s = timer() - t0
            progress(out, at)
    out.open_at_end = int(res.get("open", 0))
    out.elapsed_s = timer() - t0
    return out
