"""The time machine reads an incident that changed no more after the moment as its row
(the fold the pipelines keep on it), and each ticker as the newest events of its area.
Both must give what the incidents' whole histories give.

A synthetic stretch of history (every lifecycle template, some incidents still open for
days) is read at many moments twice: as it is, and with every row's fold taken away, so
that every incident is rebuilt from all its events up to the moment and every ticker from
all the events the moment's incidents hold (``reconstruct.tickers_at`` over them, the
reference). The pictures must be the same, for the city and inside a district and a
street; the tickers of every street, district and the city too, long enough that their
older part (events before the window, of incidents still open) is reached."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, update

from pipelines.city.geography import City, demo_city
from pipelines.history import reconstruct as rc
from pipelines.history.state import HistoricState
from pipelines.settings import Settings, load_settings
from pipelines.spine import store
from tests.clock import TZ
from tests.history import load, make_history

pytestmark = pytest.mark.integration

H = 3_600_000
START = int(datetime(2026, 11, 1, tzinfo=TZ).timestamp() * 1000)
DAYS = 4
# moments on the third and fourth day, at the hour and between, at night and by day
MOMENTS = [START + 2 * 24 * H + h * H + m for h in (0, 15, 31) for m in (0, 1_234_567)]
TICKER = 400  # longer than a street's window holds: the older part is read too


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=200)


def settings_of(engine: Engine) -> Settings:
    base = load_settings(environ={})
    return dataclasses.replace(
        base, live=dataclasses.replace(base.live, ticker_length=TICKER, timezone=str(TZ))
    )


def picture(st: HistoricState) -> dict[str, Any]:
    p = st.pic
    inc = p.incidents.sort("incident_id").to_dicts()
    return {"live": p.live, "days": p.days, "hours": p.hours, "incidents": inc}


def tickers(st: HistoricState, city: City, areas: list[str]) -> dict[str, list[Any]]:
    return {a: sorted(st.ticker(a, TICKER), key=lambda x: (x["ts"], str(x))) for a in areas}


def reference_tickers(st: HistoricState, areas: list[str]) -> dict[str, list[Any]]:
    """Every incident rebuilt from its events: the rows hold all the events the moment's
    incidents have, which the former reading (and this reference) took the tickers from."""
    assert st.rows.settled is not None and st.rows.settled.is_empty()
    got = rc.tickers_at(st.rows.events, st.rows.alerts, st.at_ms, st.city.city_id, TICKER)
    return {a: sorted(got.get(a, []), key=lambda x: (x["ts"], str(x))) for a in areas}


def test_settled_rows_and_area_tickers_read_as_the_whole_histories(
    engine: Engine, city: City
) -> None:
    store.create_schema(engine)
    h = make_history(city, START, DAYS, 2500, 60, track_every_min=30, tz=str(TZ))
    load(engine, h)
    s = settings_of(engine)
    areas = city.areas.filter(pl.col("level").is_in(["street", "district", "city"]))
    area_ids = areas["area_id"].to_list()
    district = areas.filter(pl.col("level") == "district")["area_id"][0]
    street = areas.filter(pl.col("level") == "street")["area_id"][-1]
    scopes = (None, district, street)

    def read_all() -> tuple[dict[Any, Any], dict[Any, Any], list[HistoricState]]:
        pics, ticks, states = {}, {}, []
        for at in MOMENTS:
            for scope in scopes:
                st = HistoricState(engine, city, s, at, area_id=scope)
                pics[(at, scope)] = picture(st)
                inside = area_ids if scope is None else [scope]
                ticks[(at, scope)] = tickers(st, city, inside)
                states.append(st)
        return pics, ticks, states

    pics, ticks, _ = read_all()
    with engine.begin() as c:
        settled = c.execute(
            store.incidents.select().where(store.incidents.c.acc.is_not(None))
        ).all()
        assert len(settled) == 2500  # the loader keeps the fold, as the pipelines do
        c.execute(update(store.incidents).values(acc=None))
    ref_pics, _, states = read_all()
    assert ref_pics == pics
    # the reference tickers, from every event of the moment's incidents
    some_old = 0
    for st in states:
        scope = st.scope.area_id
        inside = area_ids if scope is None else [scope]
        assert ticks[(st.at_ms, scope)] == reference_tickers(st, inside), (st.at_ms, scope)
        lo = st.at_ms - 26 * H
        some_old += sum(x["ts"] < lo for t in ticks[(st.at_ms, scope)].values() for x in t)
    assert some_old  # the older part of a ticker was read
    assert sum(len(p["incidents"]) for p in pics.values()) > 1000
