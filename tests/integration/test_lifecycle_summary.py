"""The lifecycle summary on ``incidents``: the scorecard read from it equals the one
aggregated from the events, and a database from before the summary is upgraded."""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import Column, Engine, MetaData, Table, inspect, select

from pipelines import assessment as S
from pipelines.city.geography import City, demo_city
from pipelines.settings import Settings
from pipelines.spine import store
from tests.conftest import open_engine
from tests.history import load, make_history
from tests.unit.test_store_summary import event

pytestmark = pytest.mark.integration

OCT = S.parse_period("2026-10")
NOV = S.parse_period("2026-11")


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def _both(engine: Engine, period: S.Period, as_of: int, flt: S.Filter) -> list[pl.DataFrame]:
    return [
        S.read_incidents(engine, period, as_of, flt, summary=on).collect().sort("incident_id")
        for on in (True, False)
    ]


def test_summary_and_events_give_the_same_scorecard(
    engine: Engine, city: City, live_settings: Settings
) -> None:
    h = make_history(city, OCT.start_ms, 61, 3000, 200, seed=7)
    load(engine, h)
    # pipeline-written incidents too: an event before its period, late events, returns
    t = NOV.start_ms + 2 * S.HOUR_MS
    g = h.incidents.row(0, named=True)
    evs = [
        event("P1", "handling", t - 3 * S.HOUR_MS),  # before NOV starts
        event("P1", "reported", t, "grid", "W1"),
        event("P2", "reported", t, "grid", "W2"),
        event("P2", "resolved", t + S.HOUR_MS),
        event("P2", "returned", t + 2 * S.HOUR_MS),
        event("P2", "closed", t + 40 * S.DAY_MS, "street"),  # after NOV ends
    ]
    area = {k: g[k] for k in ("grid_id", "street_id", "district_id")}
    store.persist_report_events(engine, pl.DataFrame([{**e, **area} for e in evs]))
    street = S.Filter("street_id", g["street_id"])
    cases = [
        (OCT, OCT.end_ms + 40 * S.DAY_MS),  # everything summarised
        (OCT, OCT.start_ms + 12 * S.DAY_MS),  # as of the past: mostly aggregated
        (NOV, NOV.start_ms + 10 * S.DAY_MS),  # in progress: mixed
        (NOV, NOV.end_ms + 60 * S.DAY_MS),
    ]
    for period, as_of in cases:
        for flt in (S.Filter(None, None), street):
            fast, slow = _both(engine, period, as_of, flt)
            assert fast.height > 0
            assert fast.equals(slow), (period.key, as_of, flt)
        inputs = S.read_inputs(engine, city, live_settings, "street", period, as_of, street)
        events = dataclasses.replace(
            inputs, incidents=S.read_incidents(engine, period, as_of, street, summary=False)
        )
        a, b = (
            S.compute(x, city, live_settings, "street", period, as_of, street)
            for x in (inputs, events)
        )
        # equal up to float summation order (the rows arrive in another order)
        assert_frame_equal(a.sort("row_id"), b.sort("row_id"))


def test_an_old_database_is_upgraded_and_backfilled(db_url: Any) -> None:
    """``incidents`` without the summary columns: create_schema adds them (NULL: read
    through the events), backfill_summaries fills them."""
    url, schema = db_url
    old = MetaData()
    keep = [c.name for c in store.incidents.columns if c.name not in store.SUMMARY_COLUMNS]
    cols = [store.incidents.c[c] for c in keep]
    Table("incidents", old, *[Column(c.name, c.type, primary_key=c.primary_key) for c in cols])
    engine = store.make_engine(url, schema=schema)
    old.create_all(engine)
    evs = [
        event("A", "reported", 1_000, "grid", "W1"),
        event("A", "returned", 3_000),
        event("A", "resolved", 2_000),
        event("A", "closed", 4_000, "street"),
        event("B", "reported", 5_000, "grid", "W2"),
    ]
    rows = store.incident_rows(pl.DataFrame(evs))
    with engine.begin() as c:
        c.execute(Table("incidents", old).insert(), [{k: r[k] for k in keep} for r in rows])
    store.create_schema(engine)  # creates incident_events, adds the columns
    store.create_schema(engine)  # twice: nothing left to add
    assert store.add_missing_columns(engine) == []
    indexed = {tuple(i["column_names"]) for i in inspect(engine).get_indexes("incidents")}
    assert ("status",) in indexed and ("reported_ms",) in indexed  # the indexes, too
    with engine.begin() as c:
        store.insert_ignore(c, store.incident_events, evs)
    got = store.read_frame(engine, select(store.incidents)).sort("incident_id")
    assert got["first_ms"].is_null().all()
    day, as_of, flt = S.parse_period("1970-01-01"), 10_000_000, S.Filter(None, None)
    before = S.read_incidents(engine, day, as_of, flt).collect()  # through the events
    assert before.height == 2
    assert store.backfill_summaries(engine, chunk=1) == 2
    assert store.backfill_summaries(engine) == 0
    got = store.read_frame(engine, select(store.incidents)).sort("incident_id").to_dicts()
    want = sorted(rows, key=lambda r: r["incident_id"])
    assert [{k: r[k] for k in store.SUMMARY_COLUMNS} for r in got] == [
        {k: r[k] for k in store.SUMMARY_COLUMNS} for r in want
    ]
    assert got[0]["n_returned"] == 1 and got[0]["closed_level"] == "street"
    after = S.read_incidents(engine, day, as_of, flt).collect()  # from the summary
    assert after.sort("incident_id").equals(before.sort("incident_id"))
    engine.dispose()
    open_engine(db_url).dispose()
