"""The time machine's hourly checkpoints give the picture the whole history gives, and
are not used once the history up to them has changed.

A synthetic stretch of history (every lifecycle template, some incidents open for days)
is checkpointed hour by hour (``keeper.keep``, each hour stepped from the one before),
then read at seeded moments — on the hour and between, city-wide and inside a district
and a street — with the checkpoints and without them (every incident concerned read from
SQL). Everything the pages read must be the same. Then an event arrives late, through the
reports pipeline's own writer: the checkpoints from its hour on no longer hold, a moment
after it shows it (the plain reading is the reference), and the next pass rebuilds
exactly those checkpoints."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, select

from pipelines.city.geography import City, demo_city
from pipelines.dispatch.flows import flows_for
from pipelines.history import checkpoints as cps
from pipelines.history import keeper
from pipelines.history.state import HistoricState
from pipelines.settings import Settings, load_settings
from pipelines.spine import store
from pipelines.spine.store.sql import hour_end
from tests.clock import TZ
from tests.history import load, make_history

pytestmark = pytest.mark.integration

H = 3_600_000
START = int(datetime(2026, 11, 1, tzinfo=TZ).timestamp() * 1000)
DAYS = 4
NOW = START + DAYS * 24 * H + 17 * 60_000  # the clock passed in


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=200)


def settings() -> Settings:
    base = load_settings(environ={})
    live = dataclasses.replace(base.live, timezone=str(TZ), checkpoint_days=2)
    return dataclasses.replace(base, live=live)


def reads(st: HistoricState, areas: list[str]) -> dict[str, Any]:
    """What the pages read (the read interface), and the incidents the picture holds."""
    day = st.pic.day
    out: dict[str, Any] = {
        "incidents": st.pic.incidents.to_dicts(),
        "live": st.pic.live,
        "days": st.pic.days,
        "hours": st.pic.hours,
        "warnings": st.warnings(),
        "positions": st.positions(),
    }
    for a in areas:
        out[f"open:{a}"] = st.counts("open", [a]), st.counts("reports", [a], day)
        out[f"ticker:{a}"] = st.ticker(a, 30)
    return out


def key(s: Settings, city: City) -> str:
    return cps.key_of(city.city_id, s.live.timezone, flows_for(s))


def test_pictures_from_checkpoints_are_those_of_the_whole_history(
    engine: Engine, city: City
) -> None:
    store.create_schema(engine)
    load(engine, make_history(city, START, DAYS, 2500, 60, track_every_min=30, tz=str(TZ)))
    s = settings()
    done = keeper.keep(engine, city, s, NOW)
    newest = (NOW - keeper.SETTLE_MS) // H * H
    every = cps.FULL_EVERY_H * H
    first = (newest - 47 * H) // every * every  # two days, from the full one before
    assert done.built == list(range(first, newest + 1, H))  # hourly
    assert done.stepped == len(done.built) - 1  # each from the one an hour before
    assert keeper.keep(engine, city, s, NOW).built == []  # they hold: nothing to do
    with engine.connect() as conn:
        cp = store.history_checkpoints
        full = dict(conn.execute(select(cp.c.at_ms, cp.c.full)).all())
        sizes = dict(conn.execute(select(cp.c.at_ms, cp.c.incidents)).all())
    assert full == {h: int(h % every == 0) for h in done.built}
    assert max(sizes[h] for h in done.built if not full[h]) < min(
        sizes[h] for h in done.built if full[h]
    )  # an hour's changes, not every state

    areas = city.areas.filter(pl.col("level").is_in(["street", "district"]))
    district = areas.filter(pl.col("level") == "district")["area_id"][0]
    streets = areas.filter(pl.col("level") == "street")
    street = streets.filter(pl.col("parent_id") == district)["area_id"][0]
    rng = random.Random(7)
    moments = [done.built[5], done.built[-1]]  # on the hour
    moments += [rng.randrange(done.built[0], NOW) for _ in range(6)]
    used = folded = 0
    for at in moments:
        for scope, asked in ((None, [city.city_id, district, street]), (district, [street])):
            a = HistoricState(engine, city, s, at, now_ms=NOW, area_id=scope)
            b = HistoricState(engine, city, s, at, now_ms=NOW, area_id=scope, use_checkpoint=False)
            assert b.rows.base is None
            used += a.rows.base is not None
            folded += a.rows.later is not None and a.rows.later.height > 0
            assert reads(a, asked) == reads(b, asked), (at, scope)
            assert a.pic.incidents.height > 20
    assert used == 2 * len(moments)  # every moment found its checkpoint
    assert folded >= len(moments)  # and folded later events onto checkpoint states
    # an hour before the kept span: no checkpoint, the plain reading
    old = HistoricState(engine, city, s, done.built[0] - 7 * H, now_ms=NOW)
    assert old.rows.base is None


def test_a_late_event_retires_the_checkpoints_after_it(engine: Engine, city: City) -> None:
    store.create_schema(engine)
    h = make_history(city, START, DAYS, 800, 20, track_every_min=60, tz=str(TZ))
    load(engine, h)
    s = settings()
    built = keeper.keep(engine, city, s, NOW).built
    late_ms = built[20] - 30 * 60_000  # half an hour before the 21st checkpoint
    some = h.events.filter(pl.col("step") == "reported").row(0, named=True)
    event = {
        **some,
        "event_id": "LATE-1",
        "incident_id": "LATE-INC",
        "entry_id": f"{NOW}-0",  # it arrives now
        "ts_ms": late_ms,  # it happened then (a phone that was offline)
    }
    batch = pl.DataFrame([event]).select(store.EVENT_COLUMNS)
    with engine.begin() as conn:  # the reports pipeline's writer
        d = store.decide_reports(conn, batch, flows_for(s), tz=s.live.timezone)
    assert d.verdicts[f"{NOW}-0"] == "accepted"

    with engine.connect() as conn:
        holding = set(cps.held(conn, key(s, city), built[0], built[-1]))
    assert holding == set(built[:20])  # from the late event's hour on, none holds
    assert hour_end(late_ms) == built[20]

    at = built[22] + 10 * 60_000
    a = HistoricState(engine, city, s, at, now_ms=NOW)
    b = HistoricState(engine, city, s, at, now_ms=NOW, use_checkpoint=False)
    assert "LATE-INC" in b.pic.incidents["incident_id"].to_list()
    assert reads(a, [city.city_id]) == reads(b, [city.city_id])
    # from the newest checkpoint that holds, before the late event's hour
    assert a.rows.base is not None
    assert "LATE-INC" not in a.rows.base["incident_id"].to_list()

    again = keeper.keep(engine, city, s, NOW)
    assert again.built == built[20:]
    assert again.stepped == len(again.built)  # the first from the 20th, which held
    a = HistoricState(engine, city, s, at, now_ms=NOW)
    assert a.rows.base is not None and "LATE-INC" in a.rows.base["incident_id"].to_list()
    assert reads(a, [city.city_id]) == reads(b, [city.city_id])


def test_a_damaged_checkpoint_is_read_around(engine: Engine, city: City) -> None:
    """A blob that cannot be decoded (a disk fault, a hand edit) is as if missing: a moment
    whose chain holds it is read from the checkpoints before it or without any."""
    store.create_schema(engine)
    load(engine, make_history(city, START, DAYS, 800, 20, track_every_min=60, tz=str(TZ)))
    s = settings()
    built = keeper.keep(engine, city, s, NOW).built
    every = cps.FULL_EVERY_H * H
    fulls = [h for h in built if h % every == 0]
    bad = fulls[-1]  # the newest full one: every chain after it holds it
    cp = store.history_checkpoints
    with engine.begin() as conn:
        conn.execute(cp.update().where(cp.c.at_ms == bad).values(states=b"not parquet"))
        assert cps.states_of(conn, key(s, city), bad + 2 * H) is None
        older = cps.nearest(conn, key(s, city), bad + 2 * H)
    assert older is not None and older.at_ms == bad - H  # the chain before it
    for at in (bad + 20 * 60_000, bad + 2 * H + 5 * 60_000):
        a = HistoricState(engine, city, s, at, now_ms=NOW)
        b = HistoricState(engine, city, s, at, now_ms=NOW, use_checkpoint=False)
        assert a.rows.base is not None
        assert reads(a, [city.city_id]) == reads(b, [city.city_id]), at


def test_marks_count_an_event_at_the_end_of_its_hour(engine: Engine) -> None:
    store.create_schema(engine)
    at = START + 5 * H
    with engine.begin() as conn:
        store.bump_marks(conn, [at, at - 1, at - H + 1])  # all in (at - 1 h, at]
        before = cps.marks_upto(conn, at)
        store.bump_marks(conn, [at + 1])  # the next hour's
        assert cps.marks_upto(conn, at) == before == 1
        assert cps.marks_upto(conn, at - H) == 0
        store.bump_marks(conn, [at - H])  # the hour before's end
        assert cps.marks_upto(conn, at - H) == 1
        assert cps.marks_upto(conn, at + H) == 3


def test_a_pass_stops_at_its_budget_and_the_next_goes_on(engine: Engine, city: City) -> None:
    store.create_schema(engine)
    load(engine, make_history(city, START, DAYS, 300, 10, track_every_min=60, tz=str(TZ)))
    s = settings()
    ticks = iter(range(1_000_000))  # the timer passed in: a second per reading
    perf = lambda: float(next(ticks))  # noqa: E731
    first = keeper.keep(engine, city, s, NOW, budget_s=10.5, perf=perf)
    assert not first.done and 3 <= len(first.built) <= 10
    rest = keeper.keep(engine, city, s, NOW)
    assert rest.done and rest.built[0] == first.built[-1] + H
    assert rest.stepped == len(rest.built)  # the first from the last of the first pass
    with engine.connect() as conn:
        every = set(cps.held(conn, key(s, city), first.built[0], rest.built[-1]))
    assert every == set(first.built) | set(rest.built)
