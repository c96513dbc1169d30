"""The time machine's proof: a seeded day runs through the real pipeline (simulated
clock), the pages' live reads are taken area by area at several moments while it runs,
and afterwards ``HistoricState`` rebuilds each moment from SQL alone and must read the
same, area by area — once from every incident concerned, once from the hourly checkpoints
built afterwards."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from dashboard import live as L
from dashboard.auth import Decision
from dashboard.backend import Backend
from dashboard.pages.panorama import queries as q
from pipelines import warnings as W
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex
from pipelines.dispatch.flows import flows_for
from pipelines.history import keeper
from pipelines.history.state import HistoricState
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish
from pipelines.warnings.replay import PastEngine, replay
from tests.clock import TZ
from tests.integration.test_warnings_replay import forget_warnings, warning_rows

pytestmark = [pytest.mark.integration, pytest.mark.clock]  # runs on a clock passed in

MIN = 60_000
# 22:00 local: the run crosses midnight, so a moment's day counters start afresh
START = int(datetime(2026, 12, 3, 22, 0, tzinfo=TZ).timestamp() * 1000)
TICK_MS = 10 * MIN
SNAPSHOTS = (START + 40 * MIN, START + 130 * MIN, START + 170 * MIN)


def reads(st: Any, city: City, s: Settings, now_ms: int) -> dict[str, Any]:
    """What the pages read at ``now_ms``, through the read interface only: the panel of
    every area (its children's metrics, breakdowns, hourly trend, ticker), every grid's
    metrics, the open incidents of every street, positions, patrols and warnings."""
    day = agg.local_day(now_ms, s.live.timezone)
    out: dict[str, Any] = {}
    for a in city.areas["area_id"].to_list():
        out[f"panel:{a}"] = panel_reads(st, city, s, now_ms, a)
    grids = city.grids["grid_id"].to_list()
    for m in ("open", "overdue", "online", "warn_level", "reports", "closed", "coverage"):
        out[f"grids:{m}"] = st.metric_for(m, grids, day)
    for street in city.areas.filter(city.areas["level"] == "street")["area_id"]:
        rows = st.open_incidents(street)
        out[f"inc:{street}"] = sorted((r["incident_id"], tuple(sorted(r.items()))) for r in rows)
        for r in rows:
            got = st.incident(r["incident_id"])
            out[f"hash:{r['incident_id']}"] = {k: got[k] for k in ("status", "open", "overdue")}
    out["positions"] = st.positions()
    out["patrolled"] = sorted(st.patrolled(day))
    warns = sorted(st.warnings(), key=lambda w: w["id"])
    out["warnings"] = [
        {k: w[k] for k in ("id", "rule", "area_id", "level", "status", "first_ms")} for w in warns
    ]
    return out


def panel_reads(st: Any, city: City, s: Settings, now_ms: int, a: str) -> dict[str, Any]:
    """One area's panel: its and its children's metrics, breakdowns, trend and ticker."""
    view = q.view_of(city, a)
    assert view is not None
    day = agg.local_day(now_ms, s.live.timezone)
    hours = q.hours_back(now_ms)
    raw = st.read_areas([a, *view.children], day, a, hours, q.breakdown_spec(), 1000)
    raw.pop("meta")  # freshness: when the pipelines applied it, not what
    raw["ticker"] = sorted(raw["ticker"], key=lambda x: (x["ts"], str(x)))
    return dict(raw)


def shown(b: Backend, city: City, street: str, at_ms: int | None) -> dict[str, Any]:
    """The panorama panels of the city and of a street (markers: as a viewer who may see
    positions and incidents, and as one who sees counts only), live or at ``at_ms``."""
    out: dict[str, Any] = {}
    for area in (city.city_id, street):
        for sees in (frozenset(), frozenset({"positions", "incidents"})):
            grant = Decision(True, area, "aggregates", sees)
            got = L.panel(b, grant, "open", False, "zh-CN", at_ms=at_ms)
            assert got is not None
            got.pop("fresh")  # live freshness vs "showing <moment>"
            # the live ticker keeps arrival order, history (like rebuild-live) time order:
            # the newest 20 can differ at the edge of a batch (whole tickers are compared
            # in ``reads``)
            got.pop("ticker")
            got["markers"]["features"] = sorted(got["markers"]["features"], key=str)
            out[f"{area}:{'+'.join(sorted(sees))}"] = got
    people = out[f"{street}:incidents+positions"]["markers"]["features"]
    counts = out[f"{street}:"]["markers"]["features"]
    assert not any(f["properties"]["k"] == "w" for f in counts)  # no one's position
    assert all(f["properties"]["k"] != "c" for f in people)
    return out


def test_the_past_reads_as_it_read_live(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis
) -> None:
    # Track points every second: a stored position is then the last ping itself (with the
    # default minute slot it may lag by up to one slot, which the UI says).
    settings = dataclasses.replace(
        live_settings,
        streams=dataclasses.replace(live_settings.streams, block_ms=1),
        pipelines=dataclasses.replace(live_settings.pipelines, persist_tracks_every_s=1),
        live=dataclasses.replace(live_settings.live, ticker_length=1000),
        simulate=dataclasses.replace(
            live_settings.simulate,
            workers=80,
            cameras=40,
            malformed_share=0.0,
            incidents_per_day=1500,
            video_alerts_per_day=1000,
            anomaly_start_min=20.0,
        ),
    )
    now = [START]
    clock = lambda: now[0] / 1000  # noqa: E731
    sim = simulate.Simulator(city, settings.simulate, flows_for(settings), start_ms=START)
    store.replace_table(
        engine, store.cameras, sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    index = GridIndex(city)
    feeds = {
        f: make_worker(f, settings, city, index, rclient, engine, f"{f}-w", clock=clock)
        for f in ("reports", "locations", "video")
    }
    live = live_state(rclient, settings)
    job = ClockJob(settings, city, live, rclient, clock=clock)
    eng = W.WarningEngine(settings, city, rclient, engine, clock=clock)

    # a few incidents from before the run, still open: they pass their deadline during it
    # (all in one street: its share of breached deadlines rises, so does its SLA warning)
    street = city.grids["street_id"][0]
    cells = city.grids.filter(city.grids["street_id"] == street)
    old = []
    for k, cat in enumerate(("fire", "public_order", "fire", "safety_hazard") * 2):
        g = cells.row(k % cells.height, named=True)
        for i, step in enumerate(("reported", "accepted")):
            old.append(
                encode(
                    dict(
                        event_id=f"OLD{k}-{i}",
                        incident_id=f"OLD{k}",
                        ts=START - (150 - 20 * k) * MIN + i * MIN,
                        step=step,
                        category=cat,
                        severity=3,
                        source="hotline",
                        lon=g["lon"],
                        lat=g["lat"],
                        description="old",
                    )
                )
            )
    publish(rclient, feeds["reports"].consumer.stream, old)

    seen: dict[int, dict[str, Any]] = {}
    panels: dict[int, dict[str, Any]] = {}  # what the dashboard's panels showed
    b = Backend(settings, city, rclient, engine, clock=clock)
    t = START
    while t < SNAPSHOTS[-1]:
        t += TICK_MS
        events = sim.advance(t)
        now[0] = t
        for f, w in feeds.items():
            publish(rclient, w.consumer.stream, [p for g, p in events if g == f])
            while w.step().acked:
                pass
        job.tick()
        eng.tick()
        if t in SNAPSHOTS:
            seen[t] = reads(live, city, settings, t)
            panels[t] = shown(b, city, street, None)

    assert set(seen) == set(SNAPSHOTS)
    # not vacuous: incidents open and overdue, closures, video, workers and warnings
    last = seen[SNAPSHOTS[-1]][f"panel:{city.city_id}"]
    assert last["open"][0] > 0 and last["overdue"][0] > 0 and last["closed"][0] > 0
    assert last["video"][0] > 0 and last["online"][0] > 0 and last["coverage"][0] > 0
    assert any(seen[m]["warnings"] for m in SNAPSHOTS)
    # the first moment is before midnight, the others after: day counters restarted
    first = seen[SNAPSHOTS[0]][f"panel:{city.city_id}"]
    assert agg.local_day(SNAPSHOTS[0], "Asia/Shanghai") != agg.local_day(
        SNAPSHOTS[1], "Asia/Shanghai"
    )
    assert first["reports"][0] > 0

    for m in SNAPSHOTS:
        past = HistoricState(engine, city, settings, m, now_ms=now[0])
        got = reads(past, city, settings, m)
        assert got.keys() == seen[m].keys()
        for key in seen[m]:
            assert got[key] == seen[m][key], (m, key)
        # a picture of one district or street (what its pages build) reads the same there
        for area in (city.areas.filter(city.areas["level"] == "district")["area_id"][0], street):
            part = HistoricState(engine, city, settings, m, now_ms=now[0], area_id=area)
            view = q.view_of(city, area)
            assert view is not None
            for a in (area, *view.children):
                assert panel_reads(part, city, settings, m, a) == seen[m][f"panel:{a}"], (m, a)
        # the dashboard's own panels (the pages' code) at the moment, as they were shown
        past_panels = shown(b, city, street, m)
        for key, want in panels[m].items():
            for part in want:
                assert past_panels[key][part] == want[part], (m, key, part)
        part = HistoricState(engine, city, settings, m, now_ms=now[0], area_id=street)
        rows = part.open_incidents(street)
        got_inc = sorted((r["incident_id"], tuple(sorted(r.items()))) for r in rows)
        assert got_inc == seen[m][f"inc:{street}"]

    # the same pictures from the hourly checkpoints (each stepped from the one before)
    kept = keeper.keep(engine, city, settings, now[0])
    assert kept.built and kept.stepped == len(kept.built) - 1
    for m in SNAPSHOTS:
        past = HistoricState(engine, city, settings, m, now_ms=now[0])
        assert past.rows.base is not None and past.rows.base.height > 0
        got = reads(past, city, settings, m)
        for key in seen[m]:
            assert got[key] == seen[m][key], ("checkpoint", m, key)

    # the warnings the engine raised live, raised again from history alone: the past
    # engine evaluated at the same moments over SQL (no Redis positions, no incidents
    # table) opens, updates, escalates and clears the same warnings at the same moments
    live_warnings = warning_rows(engine)
    assert live_warnings[0] and any(a["action"] == "clear" for a in live_warnings[1])
    forget_warnings(engine)
    past_engine = PastEngine(settings, city, rclient, engine)
    got_replay = replay(past_engine, START, now[0], TICK_MS)
    assert got_replay.steps == (now[0] - START) // TICK_MS
    assert warning_rows(engine) == live_warnings
