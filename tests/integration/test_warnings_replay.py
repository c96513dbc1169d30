"""The warnings of a past, evaluated again from SQL history alone (``warnings.replay``),
are the warnings the engine raised live then.

A seeded morning on the day shift runs through the real pipelines on a simulated clock
while the live engine ticks (incidents from Redis-fed SQL rows, positions from Redis,
stream health); its anomalies bring a report surge, a fire, a street whose workers go
offline, and a street whose overdue incidents are all closed half way through. Then the
warnings are deleted and the past engine is evaluated at the same moments over the
history: every warning and every action on one must come out the same."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from pipelines import warnings as W
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.cli.backfill import store_registries
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish
from pipelines.warnings.replay import PastEngine, replay
from tests.clock import TZ

pytestmark = [pytest.mark.integration, pytest.mark.clock]

MIN = 60_000
START = int(datetime(2026, 12, 3, 9, 40, tzinfo=TZ).timestamp() * 1000)  # a Thursday
TICK_MS = 10 * MIN
END = START + 150 * MIN
CLOSE_AT = START + 70 * MIN  # the overdue street's incidents are closed then


def warning_rows(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every warning and every action on one (without the actions' serial ids)."""
    w, wa = store.warnings, store.warning_actions
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(w).order_by(w.c.warning_id))]
        acts = conn.execute(
            select(wa.c.warning_id, wa.c.action, wa.c.actor, wa.c.note, wa.c.at_ms).order_by(
                wa.c.at_ms, wa.c.warning_id, wa.c.action, wa.c.note
            )
        )
        return rows, [dict(r._mapping) for r in acts]


def forget_warnings(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(store.warning_actions.delete())
        conn.execute(store.warnings.delete())


def old_incidents(city: City, street: str) -> tuple[list[bytes], list[bytes]]:
    """Incidents reported in ``street`` before the run, accepted, and past their stage
    deadlines during it; and their closes at ``CLOSE_AT``."""
    cells = city.grids.filter(city.grids["street_id"] == street)
    before, closes = [], []
    for k, cat in enumerate(("fire", "public_order", "safety_hazard", "dispute") * 3):
        g = cells.row(k % cells.height, named=True)
        base = dict(
            incident_id=f"OLD{k}",
            category=cat,
            severity=3,
            source="hotline",
            lon=g["lon"],
            lat=g["lat"],
            description="old",
        )
        for i, step in enumerate(("reported", "accepted")):
            ts = START - (300 - 20 * k) * MIN + i * MIN
            before.append(encode(dict(base, event_id=f"OLD{k}-{i}", ts=ts, step=step)))
        closes.append(encode(dict(base, event_id=f"OLD{k}-c", ts=CLOSE_AT, step="closed")))
    return before, closes


def test_the_past_engine_raises_what_the_live_engine_raised(
    live_settings: Settings, engine: Engine, rclient: redis.Redis
) -> None:
    city = demo_city(2026, n_grids=300)
    settings = dataclasses.replace(
        live_settings,
        streams=dataclasses.replace(live_settings.streams, block_ms=1),
        # a track point per ping (the minute slot would keep one a minute: the live
        # position could then be a ping no point keeps)
        pipelines=dataclasses.replace(live_settings.pipelines, persist_tracks_every_s=1),
        simulate=dataclasses.replace(
            live_settings.simulate,
            workers=80,
            cameras=40,
            malformed_share=0.0,
            incidents_per_day=2500,
            video_alerts_per_day=1500,
            anomaly_start_min=20.0,
        ),
    )
    now = [START]
    clock = lambda: now[0] / 1000  # noqa: E731
    sim = simulate.Simulator(city, settings.simulate, flows_for(settings), start_ms=START)
    store_registries(engine, rclient, settings, sim)  # the cameras and the roster in SQL
    index = GridIndex(city)
    feeds = {
        f: make_worker(f, settings, city, index, rclient, engine, f"{f}-w", clock=clock)
        for f in ("reports", "locations", "video")
    }
    job = ClockJob(settings, city, live_state(rclient, settings), rclient, clock=clock)
    live = W.WarningEngine(settings, city, rclient, engine, clock=clock)
    street = city.grids["street_id"][-1]
    before, closes = old_incidents(city, street)
    publish(rclient, feeds["reports"].consumer.stream, before)

    moments = []
    t = START
    while t < END:
        t += TICK_MS
        events = sim.advance(t)
        now[0] = t
        extra = closes if t == CLOSE_AT else []
        for f, w in feeds.items():
            got = [p for g, p in events if g == f] + (extra if f == "reports" else [])
            publish(rclient, w.consumer.stream, got)
            while w.step().acked:
                pass
        job.tick()
        live.tick()
        moments.append(t)

    seen = warning_rows(engine)
    rules = {w["rule"] for w in seen[0]}
    # not vacuous: the rules over reports, incidents and workers all spoke, and the
    # overdue street's warning changed when its incidents were closed
    assert {"surge", "fusion", "sla", "patrol_gap", "left_grid", "idle"} <= rules, rules
    actions = {a["action"] for a in seen[1]}
    assert {"open", "clear", "escalate"} <= actions, actions
    sla = [w for w in seen[0] if w["key"] == f"sla:{street}"]
    assert len(sla) == 1 and sla[0]["first_seen_ms"] < CLOSE_AT < sla[0]["closed_ms"]

    forget_warnings(engine)
    res = replay(PastEngine(settings, city, rclient, engine), START, END, TICK_MS)
    assert res.steps == len(moments) and res.opened == len(seen[0])
    assert warning_rows(engine) == seen

    # stopped half way (Ctrl-C), then resumed by a new engine after the last moment done:
    # the same warnings (the new engine reads in full at its first moment, as after a
    # restart of the live one)
    forget_warnings(engine)
    done: list[int] = []
    first = replay(
        PastEngine(settings, city, rclient, engine),
        START,
        END,
        TICK_MS,
        stop=lambda: len(done) >= len(moments) // 2,
        progress=lambda _r, at: done.append(at),
    )
    assert first.steps == len(moments) // 2 and done == moments[: first.steps]
    rest = replay(
        PastEngine(settings, city, rclient, engine), START, END, TICK_MS, after_ms=done[-1]
    )
    assert rest.steps == len(moments) - first.steps
    assert warning_rows(engine) == seen
