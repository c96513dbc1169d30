"""Measure ``incident_events`` on PostgreSQL: plain vs monthly vs daily partitions.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python -m tests.bench.partition_layout [rows] [events|tracks]

Each layout gets a private schema (dropped afterwards) holding ``rows`` events spread
evenly over 12 local months (generated in SQL), then times: the pipeline's insert path
(``insert_ignore``, batches of 2,000 into the current month), the scorecard's one-month
read (``assessment.sources._aggregated``'s GROUP BY, pruned), and the id lookups
``decide_reports`` makes without a time bound (event ids, incident ids: one index probe
per partition). Results (README "Production") are printed as a table.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import polars as pl
from sqlalchemy import Engine, text

from pipelines.spine import store
from pipelines.spine.store import partitions as P

TZ = "Asia/Shanghai"
NOW_MS = 1_764_892_800_000  # 2025-12-05 08:00 Asia/Shanghai
DAY = 86_400_000


def _populate(engine: Engine, rows: int, lo: int, hi: int) -> None:
    span = hi - lo
    with engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO incident_events (event_id, incident_id, step, ts_ms, category,"
            " severity, source, grid_id, street_id, district_id, lon, lat, entry_id)"
            f" SELECT 'e' || g, 'i' || (g / 6), CASE WHEN mod(g, 6) = 0 THEN 'reported'"
            " ELSE 'accepted' END,"
            f" {lo} + (g::bigint * {span}) / {rows}, 'fire', 2, 'app', 'g' || mod(g, 900),"
            " 's' || mod(g, 60), 'd' || mod(g, 8), 121.4, 31.2, '1-' || g"
            f" FROM generate_series(0, {rows - 1}) g"
        )
        c.exec_driver_sql("ANALYZE incident_events")


def _timed(fn: Any, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def measure(url: str, layout: str, rows: int) -> dict[str, float]:
    schema = f"wgbench_{uuid.uuid4().hex[:8]}"
    admin = store.make_engine(url)
    with admin.begin() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = store.make_engine(url, schema=schema)
    try:
        year = P.periods(NOW_MS, "month", TZ, ahead=1, back=11)
        lo, hi = year[0].lo_ms, year[-2].hi_ms
        if layout == "plain":
            store.metadata.tables["incident_events"].create(engine)
        else:
            P.PERIODS["incident_events"] = layout
            store.create_schema(engine)
            back = 11 if layout == "month" else (NOW_MS - lo) // DAY + 1
            P.ensure_partitions(engine, NOW_MS, TZ, ahead=1, back=int(back))
        t = time.perf_counter()
        _populate(engine, rows, lo, hi)
        load_s = time.perf_counter() - t
        n_parts = 1
        if layout != "plain":
            with engine.connect() as c:
                n_parts = len(P.partitions(c, "incident_events"))
        month = P.period_of(NOW_MS - 40 * DAY, "month", TZ)
        read_sql = text(
            "SELECT incident_id, min(CASE WHEN step <> 'reported' THEN ts_ms END),"
            " min(CASE WHEN step = 'accepted' THEN ts_ms END), count(*)"
            " FROM incident_events WHERE ts_ms >= :lo AND ts_ms < :hi GROUP BY incident_id"
        )

        def month_read() -> None:
            with engine.connect() as c:
                c.execute(read_sql, {"lo": month.lo_ms, "hi": month.hi_ms}).all()

        ids = [f"e{(i * 2_654_435_761) % rows}" for i in range(1000)]
        incs = [f"i{(i * 2_654_435_761) % (rows // 6)}" for i in range(1000)]

        def by_event() -> None:
            with engine.connect() as c:
                c.execute(
                    text("SELECT incident_id FROM incident_events WHERE event_id = ANY(:ids)"),
                    {"ids": ids},
                ).all()

        def by_incident() -> None:
            with engine.connect() as c:
                c.execute(
                    text("SELECT * FROM incident_events WHERE incident_id = ANY(:ids)"),
                    {"ids": incs},
                ).all()

        seq = [0]

        def insert_batch() -> None:
            seq[0] += 1
            batch = [
                {
                    "event_id": f"n{seq[0]}-{k}",
                    "incident_id": f"n{seq[0]}-{k // 3}",
                    "step": "reported",
                    "ts_ms": NOW_MS + k,
                    "category": "fire",
                    "severity": 2,
                    "grid_id": "g1",
                    "street_id": "s1",
                    "district_id": "d1",
                    "lon": 121.4,
                    "lat": 31.2,
                    "entry_id": f"{NOW_MS}-{seq[0] * 10_000 + k}",
                }
                for k in range(2000)
            ]
            with engine.begin() as c:
                store.insert_ignore(c, store.incident_events, batch)

        return {
            "partitions": n_parts,
            "load_rows_per_s": rows / load_s,
            "insert_2000_ms": _timed(insert_batch),
            "month_read_ms": _timed(month_read),
            "by_event_1000_ms": _timed(by_event),
            "by_incident_1000_ms": _timed(by_incident),
        }
    finally:
        engine.dispose()
        with admin.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def measure_tracks(url: str, layout: str, rows: int) -> dict[str, float]:
    """``track_points``: ``rows`` points over 40 days; the pipeline's write (2,000 points
    of the current minute, the earliest-per-slot decision), the warnings' last-hour read,
    one worker's day (the dashboard) and a day of retention (drop vs delete)."""
    schema = f"wgbench_{uuid.uuid4().hex[:8]}"
    admin = store.make_engine(url)
    with admin.begin() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = store.make_engine(url, schema=schema)
    try:
        P.PERIODS["track_points"] = layout
        store.create_schema(engine)
        start = P.period_of(NOW_MS - 40 * DAY, "day", TZ).lo_ms
        back = 2 if layout == "month" else 41
        P.ensure_partitions(engine, NOW_MS, TZ, ahead=1, back=back, tables=("track_points",))
        span = NOW_MS - start
        t = time.perf_counter()
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO track_points (worker_id, slot, ts_ms, lon, lat, grid_id)"
                f" SELECT 'w' || mod(g, 2000), ({start} + (g::bigint * {span}) / {rows}) / 60000,"
                f" {start} + (g::bigint * {span}) / {rows}, 118.8, 32.0, 'g' || mod(g, 900)"
                f" FROM generate_series(0, {rows - 1}) g ON CONFLICT DO NOTHING"
            )
            c.exec_driver_sql("ANALYZE track_points")
        load_s = time.perf_counter() - t
        with engine.connect() as c:
            n_parts = len(P.partitions(c, "track_points"))
        minute = [0]

        def write() -> None:
            minute[0] += 1
            ts = NOW_MS + minute[0] * 60_000
            n = 2000
            pts = pl.DataFrame(
                {
                    "worker_id": [f"w{k}" for k in range(n)],
                    "slot": [ts // 60_000] * n,
                    "ts_ms": [ts + k for k in range(n)],
                    "lon": [118.8] * n,
                    "lat": [32.0] * n,
                    "grid_id": ["g1"] * n,
                },
            ).with_columns(
                [pl.lit(None, pl.Float64).alias(c) for c in ("accuracy", "speed", "battery")]
                + [pl.lit(None, pl.Boolean).alias("mock")]
            )
            store.persist_tracks(engine, pts, slot_ms=60_000)

        def last_hour() -> None:
            with engine.connect() as c:
                c.exec_driver_sql(
                    "SELECT worker_id, count(*), min(ts_ms), max(ts_ms) FROM track_points"
                    f" WHERE ts_ms > {NOW_MS - 3_600_000} AND ts_ms <= {NOW_MS} GROUP BY worker_id"
                ).all()

        def worker_day() -> None:
            with engine.connect() as c:
                c.exec_driver_sql(
                    "SELECT ts_ms, lon, lat FROM track_points WHERE worker_id = 'w7' AND"
                    f" ts_ms >= {NOW_MS - 20 * DAY} AND ts_ms < {NOW_MS - 19 * DAY} ORDER BY 1"
                ).all()

        from pipelines.gridwork.tracks import purge_tracks

        t = time.perf_counter()
        purge_tracks(engine, 30, NOW_MS)  # 10 days out of retention
        first_purge = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        purge_tracks(engine, 29, NOW_MS)  # one more day
        day_purge = (time.perf_counter() - t) * 1000
        return {
            "partitions": n_parts,
            "load_rows_per_s": rows / load_s,
            "write_2000_ms": _timed(write),
            "last_hour_ms": _timed(last_hour),
            "worker_day_ms": _timed(worker_day),
            "purge_10_days_ms": first_purge,
            "purge_1_day_ms": day_purge,
        }
    finally:
        engine.dispose()
        with admin.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def main() -> None:
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000
    which = sys.argv[2] if len(sys.argv) > 2 else "events"
    print(f"{which}, {rows:,} rows (best of 5, ms)")
    layouts = ("plain", "month", "day") if which == "events" else ("month", "day")
    for layout in layouts:
        res = measure(url, layout, rows) if which == "events" else measure_tracks(url, layout, rows)
        print(layout.ljust(6), " ".join(f"{k}={v:,.0f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
