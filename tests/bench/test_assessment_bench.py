"""Assessment at Nanjing scale: a month of history (≈600,000 incidents with their
lifecycle events, 15,000 workers' downsampled tracks) → the street-level monthly
scorecard, against a plain Polars scan of the same rows of the same tables."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, select

from pipelines import assessment as S
from pipelines.city.geography import City
from pipelines.settings import load_settings
from pipelines.spine import store
from tests.bench.conftest import RUNS, bench, median, with_baseline
from tests.history import load, make_history

pytestmark = [pytest.mark.bench, pytest.mark.slow]

INCIDENTS = int(os.environ.get("WANGGE_BENCH_ASSESS_INCIDENTS", "600000"))
WORKERS = int(os.environ.get("WANGGE_BENCH_ASSESS_WORKERS", "15000"))
MONTH = S.parse_period("2026-10")


def plain_scan(engine: Engine, period: S.Period, as_of_ms: int, events: bool = False) -> int:
    """Baseline: the rows the scorecard reads for the month — the month's incidents with
    their lifecycle summary, track slots, patrols, roster — read into Polars by the same
    reader (DB-API cursor → DataFrame), with no aggregation at all. ``events=True``: the
    month's incidents' lifecycle events instead of their summary (the previous baseline,
    when the scorecard aggregated the events in SQL)."""
    e, i, t = store.incident_events, store.incidents, store.track_points
    pa, w = store.patrols, store.workers
    s, u = period.start_ms, min(period.end_ms, as_of_ms)
    cohort: dict[str, Any] = {
        "incident_id": pl.String,
        "category": pl.String,
        "source": pl.String,
        "grid_id": pl.String,
        "street_id": pl.String,
        "district_id": pl.String,
        "reported_ms": pl.Int64,
    }
    if not events:  # the summary columns, in the same read
        cohort |= {c: pl.Int64 for c in store.SUMMARY_COLUMNS} | {
            "closed_level": pl.String,
            "report_handler_id": pl.String,
            "closed_ms": pl.Int64,
            "last_ms": pl.Int64,
        }
    reads = [
        (
            select(*[i.c[c] for c in cohort]).where(i.c.reported_ms >= s, i.c.reported_ms < u),
            cohort,
        ),
        (
            select(t.c.worker_id, t.c.slot).where(t.c.slot >= s // 60_000, t.c.slot < u // 60_000),
            {"worker_id": pl.String, "slot": pl.Int64},
        ),
        (select(pa.c.day, pa.c.grid_id), {"day": pl.String, "grid_id": pl.String}),
        (select(w.c.worker_id, w.c.grid_id), {"worker_id": pl.String, "grid_id": pl.String}),
    ]
    if events:
        reads.append(
            (
                select(e.c.incident_id, e.c.step, e.c.ts_ms, e.c.level, e.c.handler_id).where(
                    e.c.ts_ms >= s, e.c.ts_ms < as_of_ms
                ),
                {
                    "incident_id": pl.String,
                    "step": pl.String,
                    "ts_ms": pl.Int64,
                    "level": pl.String,
                    "handler_id": pl.String,
                },
            )
        )
    return sum(S._typed(engine, q, pl.Schema(schema)).collect().height for q, schema in reads)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def test_street_monthly_scorecard_at_city_scale(city: City, fresh_db: Any) -> None:
    settings = load_settings(environ={})
    _url, _schema, engine = fresh_db("sqlite")
    t_gen, h = timed(lambda: make_history(city, MONTH.start_ms, 31, INCIDENTS, WORKERS, seed=11))
    t_load, _ = timed(lambda: load(engine, h))
    sizes = {
        "incidents": h.incidents.height,
        "events": h.events.height,
        "track_points": h.tracks.height,
        "workers": h.workers.height,
        "patrols": h.patrols.height,
        "warnings": h.warnings.height,
    }
    bench("assessment_history", t_load, "s", generate_s=t_gen, **sizes)
    live_now = MONTH.end_ms - 1  # in progress: computed from SQL every time (no snapshot)
    runs, base, with_events, rows = [], [], [], 0
    for _ in range(RUNS):
        t, card = timed(lambda: S.raw_scorecard(engine, city, settings, "street", MONTH, live_now))
        runs.append(t)
        rows = card.height
        tb, _n = timed(lambda: plain_scan(engine, MONTH, live_now))
        base.append(tb)
        with_events.append(timed(lambda: plain_scan(engine, MONTH, live_now, events=True))[0])
    assert rows == len(city.ids("street"))
    assert card["reports"].sum() == sizes["incidents"]
    # the scorecard is "faster is better": ratio < 1 means cheaper than merely scanning
    ev_base = median(with_events)
    with_baseline(
        "assessment_street_month_s", "s", runs, base, rows=rows, target_s=10.0,
        events_scan_s=ev_base, events_scan_runs=with_events,
        ratio_to_events_scan=round(median(runs) / ev_base, 3), **sizes,
    )  # fmt: skip
    # the stages of one computation: SQL reads (pushed down) vs the Polars metrics
    flt = S.Filter(None, None)
    t_read, inputs = timed(
        lambda: S.read_inputs(engine, city, settings, "street", MONTH, live_now, flt)
    )
    t_comp, _ = timed(lambda: S.compute(inputs, city, settings, "street", MONTH, live_now, flt))
    bench("assessment_stage_sql_read", t_read, "s")
    bench("assessment_stage_polars", t_comp, "s")
    # a final month: first read computes and snapshots; later reads use the snapshot
    final_now = MONTH.end_ms + 2 * S.DAY_MS
    t_first, _ = timed(lambda: S.raw_scorecard(engine, city, settings, "street", MONTH, final_now))
    again = [
        timed(lambda: S.raw_scorecard(engine, city, settings, "street", MONTH, final_now))[0]
        for _ in range(RUNS)
    ]
    bench("assessment_snapshot_first_s", t_first, "s")
    bench("assessment_snapshot_read_s", median(again), "s", runs=again)
    assert store.table_count(engine, store.scorecard_snapshots) == rows
