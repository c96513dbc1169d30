"""rebuild-live: the Redis live state rebuilt from SQL, aside, then switched at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import redis
from sqlalchemy import Engine

from pipelines import warnings
from pipelines.city.geography import City
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.aggregate import EMPTY_STATE
from pipelines.spine.clockjob import Clock, ClockJob, live_state
from pipelines.spine.events import stream_order
from pipelines.spine.state import LiveState

# -------------------------------------------------------------------- rebuild-live

Progress = Callable[[str, int, int], None]


def rebuild_live(
    settings: Settings,
    city: City,
    r: redis.Redis,
    engine: Engine,
    clock: Clock = time.time,
    *,
    chunk: int = 250,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Rebuild the Redis live state of this prefix from SQL, aside, then switch at once.

    The state is built in the staging area ``rebuild`` (``Keys.stage``) in bounded steps (``chunk``
    incidents or alerts, 5 × ``chunk`` positions, patrols or dead letters per call, so no
    call holds Redis for long: 24,000 incidents take 96 calls of < 0.15 s each) by
    the same functions the pipelines use (``aggregate.incident_states`` and the same Lua
    scripts), so it equals what they built. Then one MULTI/EXEC (per partition and one for
    the global keys when partitioned: a transaction stays in one slot) renames every staged key
    onto its live name and deletes the live-state keys the new state lacks: readers see
    the old state or the new one, never a part, and a failure before the switch leaves
    the old state untouched. Streams, dashboard caches, sessions and leases are kept.
    ``progress(stage, done, total)`` is called after every step.
    """
    live = live_state(r, settings)
    staging = _staging(live)
    staging.delete_live()
    say = progress or (lambda _stage, _done, _total: None)
    try:
        counts = _build(settings, city, staging, engine, clock, chunk, say)
        say("switch", 0, 1)
        counts["keys"] = live.switch_from(staging)
        say("switch", 1, 1)
    finally:
        staging.delete_live()
    return counts


def _staging(live: LiveState) -> LiveState:
    """The staging area ``rebuild`` beside the live keys (``P:rebuild:…`` untagged; per
    base ``P:{tag}:rebuild:…``, in the live keys' slots, on a cluster / partitioned)."""
    return live.staged("rebuild")


def _build(
    settings: Settings,
    city: City,
    state: LiveState,
    engine: Engine,
    clock: Clock,
    chunk: int,
    say: Progress,
) -> dict[str, int]:
    tz, cid = settings.live.timezone, city.city_id
    now_ms = int(clock() * 1000)
    window = now_ms - state.closed_ttl_s * 1000
    counts: dict[str, int] = {}
    tickers = _Tickers(state.ticker_length)

    total = store.distinct_count(engine, store.incident_events.c.incident_id)
    done = 0
    for ids, events in store.events_by_incident(engine, chunk):
        states = agg.incident_states(events, cid, tz, flows_for(settings))
        rows = [
            # closed before the live window: its effects count, it keeps no hash
            [i, "2" if st[10] == "0" and int(st[1]) < window else "1", st, EMPTY_STATE, ""]
            for i, st in states.items()
        ]
        state.push_incidents(rows)
        ticks = agg.report_tickers(events)
        tickers.add(events.select("entry_id", "ts_ms", "street_id", "district_id"), ticks, cid)
        done += len(ids)
        say("incidents", done, total)
    counts["incidents"] = done

    total = store.table_count(engine, store.video_alerts)
    done = 0
    for alerts in store.rows_by_key(engine, store.video_alerts, chunk):
        fields = agg.alert_rows(alerts, cid, tz)
        state.set_alerts([(a, f[0], f[1:], []) for a, f in fields.items()])
        ticks = {e: fields[a][-1] for a, e in alerts.select("alert_id", "entry_id").iter_rows()}
        tickers.add(alerts.select("entry_id", "ts_ms", "street_id", "district_id"), ticks, cid)
        done += alerts.height
        say("video", done, total)
    counts["video"] = done
    tickers.push(state)

    total = store.table_count(engine, store.worker_positions)
    done = 0
    for pos in store.rows_by_key(engine, store.worker_positions, 5 * chunk):
        state.apply_locations(list(pos.select("worker_id", "ts_ms", "packed").iter_rows()), [])
        done += pos.height
        say("positions", done, total)
    counts["positions"] = done

    total = store.table_count(engine, store.patrols)
    done = 0
    grids = city.grids.select(agg.CHAIN)
    for visits in store.rows_by_key(engine, store.patrols, 5 * chunk):
        chain = visits.join(grids, on="grid_id", how="inner")
        state.apply_locations([], list(chain.select("day", *agg.CHAIN).iter_rows()))
        done += visits.height
        say("patrols", done, total)
    counts["patrols"] = done

    total = store.table_count(engine, store.dead_letters)
    done = 0
    for dl in store.rows_by_key(engine, store.dead_letters, 5 * chunk):
        state.restore_dead_letter_counts(
            [
                (s, e, reason, "", b"", str(int(e.split("-")[0]) // 86_400_000))
                for s, e, reason in dl.select("stream", "entry_id", "reason").iter_rows()
            ]
        )
        done += dl.height
        say("dead_letters", done, total)
    counts["dead_letters"] = done

    counts["warnings"] = warnings.republish(engine, state, city)
    say("warnings", counts["warnings"], counts["warnings"])
    ClockJob(settings, city, state, state.r, clock=clock).tick()
    return counts


_TICKER_SCHEMA = {
    "area": pl.String,
    "ts": pl.Int64,
    "_ems": pl.UInt64,
    "_eseq": pl.UInt64,
    "line": pl.Binary,
}


@dataclass
class _Tickers:
    """The newest ``length`` events per street, district and city, for the tickers."""

    length: int
    rows: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_TICKER_SCHEMA))

    def add(self, events: pl.DataFrame, lines: dict[str, bytes], city_id: str) -> None:
        if events.is_empty():
            return
        df = events.with_columns(
            stream_order(),
            line=pl.col("entry_id").replace_strict(lines, return_dtype=pl.Binary),
            city=pl.lit(city_id),
        )
        parts = [
            df.select(area=a, ts="ts_ms", _ems="_ems", _eseq="_eseq", line="line")
            for a in ("street_id", "district_id", "city")
        ]
        newest = pl.concat([self.rows, *parts]).sort(["area", "ts", "_ems", "_eseq"])
        self.rows = newest.group_by("area", maintain_order=True).tail(self.length)

    def push(self, state: LiveState) -> None:
        pipe = state.r.pipeline(transaction=False)
        for area, ts_lines in self.rows.group_by("area", maintain_order=True):
            pipe.lpush(state.keys.ticker(str(area[0])), *ts_lines["line"].to_list())
        pipe.execute()
