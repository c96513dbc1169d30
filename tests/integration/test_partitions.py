"""PostgreSQL tier: the time-partitioned history tables (``store.partitions``).

The partitions of local months (days for track points) exist ahead, a row of any period
lands (a default partition takes the ones without a partition and moves on when it gets
one), the narrower keys stay true (an event id, an alert id, a (worker, slot) are stored
once), retention drops whole partitions, the scorecard and warnings reads scan only the
partitions of their window (``EXPLAIN (FORMAT JSON)``), and ``migrate`` converts a
database's plain tables. Skipped unless ``DATABASE_URL`` is PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import redis
from sqlalchemy import Engine, and_, event

from pipelines import assessment as S
from pipelines.assessment.sources import aggregated_query
from pipelines.city.geography import City, demo_city
from pipelines.gridwork.tracks import purge_tracks
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.store import migrate as M
from pipelines.spine.store import partitions as P
from pipelines.warnings.engine import WarningEngine
from tests.conftest import private_database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="PostgreSQL tier (DATABASE_URL=postgresql://…)",
    ),
]

SH = ZoneInfo("Asia/Shanghai")
DAY = 86_400_000


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    """Milliseconds of a local (Asia/Shanghai) date-time."""
    return int(datetime(y, mo, d, h, mi, tzinfo=SH).timestamp() * 1000)


NOW = ms(2026, 12, 5, 10)


def where(engine: Engine, table: str) -> dict[str, str]:
    """key → the partition holding the row."""
    key = {"incident_events": "event_id", "video_alerts": "alert_id", "track_points": "slot"}
    with engine.connect() as c:
        rows = c.exec_driver_sql(f"SELECT {key[table]}, tableoid::regclass::text FROM {table}")
        return {str(k): str(v).rsplit(".", 1)[-1] for k, v in rows}


def names(engine: Engine, table: str) -> list[str]:
    with engine.connect() as c:
        return [p.name for p in P.partitions(c, table)]


def ev(eid: str, iid: str, step: str, ts: int, entry: str) -> dict[str, Any]:
    return {
        "event_id": eid,
        "incident_id": iid,
        "step": step,
        "ts_ms": ts,
        "category": "sanitation",
        "severity": 2,
        "source": "worker",
        "reporter_id": "R1",
        "handler_id": None,
        "grid_id": "g1",
        "street_id": "s1",
        "district_id": "d1",
        "lon": 118.8,
        "lat": 32.0,
        "description": None,
        "level": None,
        "entry_id": entry,
    }


def decide(engine: Engine, rows: list[dict[str, Any]]) -> dict[str, str]:
    from pipelines.spine.store.incidents import with_action_columns

    batch = with_action_columns(pl.DataFrame(rows, infer_schema_length=None))
    with engine.begin() as c:
        return store.decide_reports(c, batch.select(store.EVENT_COLUMNS)).verdicts


def test_partitions_of_local_months_and_days_exist_ahead(engine: Engine) -> None:
    for t in P.PARTITIONED:
        assert P.is_partitioned(engine, t)
        assert names(engine, t) == [f"{t}_default"]
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", ahead=3)
    months = ["202612", "202701", "202702", "202703"]
    days = ["20261205", "20261206", "20261207", "20261208"]
    assert names(engine, "incident_events") == [f"incident_events_p{m}" for m in months] + [
        "incident_events_default"
    ]
    assert names(engine, "track_points")[:-1] == [f"track_points_p{d}" for d in days]
    with engine.connect() as c:
        dec = next(p for p in P.partitions(c, "video_alerts") if p.name.endswith("202612"))
    assert (dec.lo_ms, dec.hi_ms) == (ms(2026, 12, 1), ms(2027, 1, 1))  # local midnight
    assert P.ensure_partitions(engine, NOW, "Asia/Shanghai", ahead=3) == []  # idempotent


def test_rows_of_any_period_land_and_move_into_a_new_partition(engine: Engine) -> None:
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", ahead=1)
    past, future = ms(2019, 3, 9, 12), ms(2031, 7, 1, 0, 30)
    verdicts = decide(
        engine,
        [
            ev("e-past", "I1", "reported", past, "1-1"),
            ev("e-now", "I2", "reported", NOW, "1-2"),
            ev("e-future", "I3", "reported", future, "1-3"),
        ],
    )
    assert set(verdicts.values()) == {"accepted"}
    assert where(engine, "incident_events") == {
        "e-past": "incident_events_default",
        "e-now": "incident_events_p202612",
        "e-future": "incident_events_default",
    }
    # the 2031-07 partition made later: its row moves out of the default partition
    P.ensure_partitions(engine, future, "Asia/Shanghai", ahead=0)
    assert where(engine, "incident_events")["e-future"] == "incident_events_p203107"
    assert store.table_count(engine, store.incident_events) == 3


def test_an_event_id_is_stored_once_whatever_its_time(engine: Engine) -> None:
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", back=2)
    a = ev("dup", "I1", "reported", NOW, "5-1")
    b = ev("dup", "I2", "reported", NOW - 40 * DAY, "5-2")  # same id, another month
    got = decide(engine, [b, a])
    assert got == {"5-1": "accepted", "5-2": "duplicate"}  # the first in stream order
    assert decide(engine, [b]) == {"5-2": "duplicate"}  # redelivered: decided the same
    # an earlier entry claiming the id arrives late: it takes the id from the stored one
    c = ev("dup", "I3", "reported", NOW - 70 * DAY, "4-9")
    assert decide(engine, [c]) == {"4-9": "accepted"}
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT incident_id, ts_ms FROM incident_events WHERE event_id = 'dup'"
        ).all()
    assert rows == [("I3", NOW - 70 * DAY)]
    # the bench/test writer skips a stored id too
    store.persist_report_events(engine, pl.DataFrame([ev("dup", "I4", "reported", NOW, "6-1")]))
    assert store.table_count(engine, store.incident_events) == 1


def alert(aid: str, entry: str, ts: int, rev: int | None, score: float) -> dict[str, Any]:
    return {
        "alert_id": aid,
        "camera_id": "cam1",
        "label": "person",
        "score": score,
        "ts_ms": ts,
        "lon": 118.8,
        "lat": 32.0,
        "grid_id": "g1",
        "street_id": "s1",
        "district_id": "d1",
        "entry_id": entry,
        "revision": rev,
        "rev_entry": entry,
        "end_ms": None,
        "sub_label": None,
        "zones": None,
        "severity": None,
    }


def test_an_alert_is_one_row_updated_in_place(engine: Engine) -> None:
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", back=1)

    def decide_alerts(rows: list[dict[str, Any]]) -> dict[str, str]:
        with engine.begin() as c:
            return store.decide_alerts(c, pl.DataFrame(rows, infer_schema_length=None)).statuses

    assert decide_alerts([alert("A", "9-1", NOW, 1, 0.5)]) == {"9-1": "A"}
    assert decide_alerts([alert("A", "9-2", NOW, 2, 0.8)]) == {"9-2": "U"}
    # an earlier creating entry (started in the month before) displaces the stored one
    decide_alerts([alert("A", "8-1", NOW - 30 * DAY, None, 0.4)])
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT entry_id, ts_ms, score FROM video_alerts").all()
    assert len(rows) == 1 and rows[0][:2] == ("8-1", NOW - 30 * DAY)
    assert where(engine, "video_alerts")["A"] == "video_alerts_p202611"


def test_the_earliest_point_of_a_slot_wins_once(engine: Engine) -> None:
    P.ensure_partitions(engine, NOW, "Asia/Shanghai")
    slot_ms = 60_000
    base = (NOW // slot_ms) * slot_ms

    def pt(ts: int) -> dict[str, Any]:
        return {
            "worker_id": "W1",
            "slot": ts // slot_ms,
            "ts_ms": ts,
            "lon": 118.8,
            "lat": 32.0,
            "grid_id": "g1",
            "accuracy": None,
            "speed": None,
            "battery": None,
            "mock": None,
        }

    for ts in (base + 30_000, base + 50_000, base + 10_000, base + 20_000):
        store.persist_tracks(engine, pl.DataFrame([pt(ts)]), slot_ms=slot_ms)
    store.persist_tracks(engine, pl.DataFrame([pt(base + 5_000), pt(base + 1_000)]))
    with engine.connect() as c:
        rows = c.exec_driver_sql("SELECT slot, ts_ms FROM track_points").all()
    assert rows == [(base // slot_ms, base + 1_000)]


def test_retention_drops_whole_days_and_trims_the_boundary_day(engine: Engine) -> None:
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", back=9, ahead=0)
    # one point at 06:00 and 18:00 local of each of the 10 days up to today
    pts = []
    for d in range(10):
        for h in (6, 18):
            ts = ms(2026, 11, 26 + d, h) if d < 5 else ms(2026, 12, d - 4, h)
            pts.append((f"W{d}", ts))
    rows = [
        {"worker_id": w, "slot": ts // 60_000, "ts_ms": ts, "lon": 1.0, "lat": 1.0, "grid_id": "g"}
        for w, ts in pts
    ]
    with engine.begin() as c:
        store.insert_ignore(c, store.track_points, rows)
    now = ms(2026, 12, 5, 12)  # retention 3 days: the cutoff is 2026-12-02 12:00 local
    cutoff = now - 3 * DAY
    older = sum(1 for _, ts in pts if ts < cutoff)
    before = names(engine, "track_points")
    got = purge_tracks(engine, 3, now)
    assert got["track_points"] == older == 13
    after = names(engine, "track_points")
    dropped = sorted(set(before) - set(after))
    assert dropped == [f"track_points_p202611{d}" for d in range(26, 31)] + [
        "track_points_p20261201"
    ]
    assert "track_points_p20261202" in after  # the boundary day: its 06:00 row deleted
    with engine.connect() as c:
        kept = sorted(c.exec_driver_sql("SELECT ts_ms FROM track_points").scalars())
    assert kept == sorted(ts for _, ts in pts if ts >= cutoff)
    assert purge_tracks(engine, 3, now)["track_points"] == 0


# ------------------------------------------------------------------ pruning


def scanned(engine: Engine, statements: list[tuple[str, Any]], table: str) -> set[str]:
    """The partitions of ``table`` the plans of these statements scan."""
    out: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        rel = node.get("Relation Name")
        if rel and rel.startswith(table):
            out.add(rel)
        for child in node.get("Plans", []):
            walk(child)

    with engine.connect() as c:
        for sql, params in statements:
            plan = c.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar_one()
            walk(plan[0]["Plan"])
    return out


@contextmanager
def captured(engine: Engine, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on ``table`` run meanwhile, with their parameters."""
    got: list[tuple[str, Any]] = []

    def hook(conn: Any, cur: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        if table in sql and sql.lstrip().upper().startswith("SELECT"):
            got.append((sql, params))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield got
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def _history(engine: Engine) -> None:
    """Incidents reported in Oct, Nov and Dec 2026, each with later events."""
    P.ensure_partitions(engine, NOW, "Asia/Shanghai", back=3)
    rows = []
    for m, month in enumerate((10, 11, 12)):
        for k in range(20):
            t = ms(2026, month, 1 + k % 4, 9)
            iid = f"I{month}-{k}"
            rows += [
                ev(f"{iid}:r", iid, "reported", t, f"{m + 1}-{k * 3}"),
                ev(f"{iid}:a", iid, "accepted", t + 3_600_000, f"{m + 1}-{k * 3 + 1}"),
            ]
    decide(engine, rows)
    with engine.begin() as c:
        c.exec_driver_sql("ANALYZE incident_events")


def test_a_months_scorecard_read_scans_that_months_partition(engine: Engine) -> None:
    _history(engine)
    nov = S.parse_period("2026-11")
    i = store.incidents
    cohort = and_(i.c.reported_ms >= nov.start_ms, i.c.reported_ms < nov.end_ms)
    q = aggregated_query(cohort, nov.start_ms, nov.end_ms)  # the read of a closed month
    sql = str(q.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    stmts: list[tuple[str, Any]] = [(sql, {})]
    assert (
        len(S.read_incidents(engine, nov, nov.end_ms, S.Filter(None, None), False).collect()) == 20
    )
    assert scanned(engine, stmts, "incident_events") == {"incident_events_p202611"}


@pytest.fixture
def city() -> City:
    return demo_city(2026, n_grids=300)


def test_the_warnings_report_read_scans_its_windows_partitions(
    engine: Engine, city: City, live_settings: Settings, rclient: redis.Redis
) -> None:
    _history(engine)
    now = ms(2026, 12, 3, 12)  # the window (7 days of recurrence) spans Nov and Dec
    warn = WarningEngine(live_settings, city, rclient, engine, clock=lambda: now / 1000)
    lo = now - warn.cfg.horizon_ms()
    with captured(engine, "incident_events") as stmts:
        warn.read_reports(now)
    expected = {
        f"incident_events_p{p.label}"
        for p in P.periods(now, "month", "Asia/Shanghai", ahead=0, back=3)
        if p.hi_ms > lo and p.lo_ms <= now
    }
    assert expected == {"incident_events_p202611", "incident_events_p202612"}
    assert scanned(engine, stmts, "incident_events") == expected


# ------------------------------------------------------------------ migration


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[Engine, str, str | None]]:
    """A database created before partitioning (every table plain): engine, url, schema."""
    with private_database(tmp_path) as (url, schema):
        eng = store.make_engine(url, schema=schema)
        store.load_table_modules()
        store.metadata.create_all(eng)
        yield eng, url, schema
        eng.dispose()


@pytest.fixture
def plain_db(plain: tuple[Engine, str, str | None]) -> Engine:
    return plain[0]


def test_migrate_converts_plain_tables_and_keeps_every_row(plain_db: Engine) -> None:
    eng = plain_db
    assert {v["layout"] for v in P.layout(eng).values()} == {"plain"}
    evs = [ev(f"e{k}", f"I{k % 7}", "reported", NOW - k * 5 * DAY, f"1-{k}") for k in range(40)]
    with eng.begin() as c:
        store.insert_ignore(c, store.incident_events, evs)
        store.insert_ignore(c, store.video_alerts, [alert("A", "1-1", NOW, 1, 0.5)])
    lines: list[str] = []
    done = M.migrate(eng, NOW, "Asia/Shanghai", chunk=7, progress=lines.append)
    assert [d.table for d in done] == list(P.PARTITIONED)
    assert [d.rows for d in done] == [40, 1, 0]
    assert {v["layout"] for v in P.layout(eng).values()} == {"partitioned"}
    assert store.table_count(eng, store.incident_events) == 40
    # NOW - 39 * 5 days is 2026-05-27: every month from May to Dec, then 3 ahead
    months = [f"2026{m:02d}" for m in range(5, 13)] + ["202701", "202702", "202703"]
    assert names(eng, "incident_events") == [f"incident_events_p{m}" for m in months] + [
        "incident_events_default"
    ]
    assert where(eng, "incident_events")["e39"] == "incident_events_p202605"
    with eng.connect() as c:
        ix = set(c.exec_driver_sql("SELECT indexname FROM pg_indexes").scalars())
    assert {"incident_events_pkey", "ix_incident_events_ts_incident", "video_alerts_pkey"} <= ix
    assert not [n for n in ix if n.endswith("__plain")]
    store.create_schema(eng)  # the schema upgrade runs on the converted tables
    assert M.migrate(eng, NOW, "Asia/Shanghai") == []


def test_migrate_refuses_when_the_table_changes_meanwhile(plain_db: Engine) -> None:
    eng = plain_db
    evs = [ev(f"e{k}", "I1", "reported", NOW - k * DAY, f"1-{k}") for k in range(10)]
    with eng.begin() as c:
        store.insert_ignore(c, store.incident_events, evs)

    def write_meanwhile(line: str) -> None:  # a writer still running
        if "rows copied" in line:
            with eng.begin() as c:
                store.insert_ignore(
                    c, store.incident_events, [ev(f"x{line}", "I2", "reported", NOW, "2-1")]
                )

    with pytest.raises(M.MigrationRefused, match="stop the pipelines"):
        M.migrate(eng, NOW, "Asia/Shanghai", chunk=4, progress=write_meanwhile)
    assert P.layout(eng)["incident_events"]["layout"] == "plain"
    assert store.table_count(eng, store.incident_events) > 10
    with eng.connect() as c:
        assert P.relkind(c, "incident_events__part") is None  # the copy is dropped


def test_the_clock_job_creates_the_partitions_ahead_at_its_first_tick(
    engine: Engine, city: City, live_settings: Settings, rclient: redis.Redis
) -> None:
    from pipelines.spine.clockjob import ClockJob, live_state

    now = ms(2027, 1, 31, 23)
    job = ClockJob(
        live_settings, city, live_state(rclient, live_settings), rclient, lambda: now / 1000, engine
    )
    job.tick()
    assert P.AHEAD == 3
    assert names(engine, "incident_events") == [
        "incident_events_p202701",
        "incident_events_p202702",
        "incident_events_p202703",
        "incident_events_p202704",
        "incident_events_default",
    ]
    assert names(engine, "track_points")[:2] == ["track_points_p20270131", "track_points_p20270201"]


def test_the_cli_reports_plain_tables_and_converts_them(
    plain: tuple[Engine, str, str | None], tmp_path: Path
) -> None:
    from tests.integration.test_cli import cli_env, wangge

    eng, url, schema = plain
    with eng.begin() as c:
        store.insert_ignore(c, store.incident_events, [ev("e1", "I1", "reported", NOW, "1-1")])
    env = cli_env(tmp_path, DATABASE_URL=url, WANGGE_DATABASE_SCHEMA=schema or "")
    got = wangge("db", "partitions", env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout.count("PLAIN (not partitioned)") == 3
    assert "wangge db migrate-partitions" in got.stdout
    got = wangge("db", "migrate-partitions", env=env)
    assert got.returncode == 0, got.stderr
    assert "incident_events: partitioned (1 rows)" in got.stdout
    assert "incident_events  partitioned by month" in got.stdout
    assert "track_points     partitioned by day" in got.stdout
    assert P.layout(eng)["incident_events"]["layout"] == "partitioned"
    assert store.table_count(eng, store.incident_events) == 1
