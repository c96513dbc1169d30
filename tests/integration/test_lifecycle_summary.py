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
from pipelines.city.geography import City
from pipelines.dispatch.flows import load_flows
from pipelines.settings import Settings
from pipelines.spine import store
from tests.conftest import open_engine
from tests.history import load, make_history
from tests.unit.test_store_summary import event

pytestmark = pytest.mark.integration

OCT = S.parse_period("2026-10")
NOV = S.parse_period("2026-11")


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


def test_stage_times_and_merged_duplicates_reach_the_scorecard(engine: Engine) -> None:
    """When each flow stage was left (from the summary, from the events, and after a row
    summarised before those columns existed is backfilled), and a merge (a ``closed``
    event naming ``duplicate_of``) keeps the duplicate out of every on-time rate."""
    h, t = S.HOUR_MS, 1_000 * S.HOUR_MS
    steps = [("reported", 0), ("accepted", h // 2), ("dispatched", h), ("handling", 2 * h)]
    steps += [("resolved", 5 * h), ("verified", 6 * h), ("closed", 7 * h)]
    evs = [{**event("A", st, t + dt, "grid"), "duplicate_of": None} for st, dt in steps]
    evs += [
        {**event("B", "reported", t + 10), "duplicate_of": None},
        {**event("B", "closed", t + 3 * h), "duplicate_of": "A"},  # merged into A
    ]
    store.persist_report_events(engine, pl.DataFrame(evs))
    period, flt = S.parse_period("1970-02-11..1970-02-12"), S.Filter(None, None)
    assert period.start_ms <= t < period.end_ms
    fast, slow = _both(engine, period, t + 100 * h, flt)
    assert fast.equals(slow)
    a, b = fast.to_dicts()
    left = {k: a[k] for k in ("left_accept_ms", "left_dispatch_ms", "left_handle_ms")}
    assert left == {"left_accept_ms": t + h // 2, "left_dispatch_ms": t + h,
                    "left_handle_ms": t + 5 * h}  # fmt: skip
    assert a["left_verify_ms"] == t + 6 * h and a["duplicate_of"] is None
    assert b["duplicate_of"] == "A" and b["left_accept_ms"] == t + 3 * h
    # a row summarised before the stage columns existed: read through the events, backfilled
    with engine.begin() as c:
        c.execute(
            store.incidents.update()
            .where(store.incidents.c.incident_id == "A")
            .values(left_accept_ms=None, left_dispatch_ms=None)
        )
    assert (
        S.read_incidents(engine, period, t + 100 * h, flt)
        .collect()
        .sort("incident_id")
        .equals(fast)
    )
    assert store.backfill_summaries(engine) == 1
    assert (
        S.read_incidents(engine, period, t + 100 * h, flt)
        .collect()
        .sort("incident_id")
        .equals(fast)
    )
    # the sanitation flow (shipped): A within every stage; B is in no on-time rate
    flags = S.incident_flags(fast.lazy(), t + 100 * h, load_flows()).collect()
    by_id = {r["incident_id"]: r for r in flags.to_dicts()}
    assert by_id["A"]["stage_accept_ok"] and by_id["A"]["resolve_ok"]
    counted = [c for c in flags.columns if c.endswith("_counted")]
    assert not any(by_id["B"][c] for c in counted) and not by_id["B"]["closed"]
