"""The simulator's command path: with every incident handed over (command_share 1.0) and a
fixed seed, a couple of simulated hours later incidents were accepted and dispatched by
the simulated street command centre (actor ``sim-<street_id>``) and handled by the grid
worker the centre dispatched to, whose phone answered through the gateway's /tasks
(actor = that worker). Real Redis (own prefix), real SQL, the gateway app and the reports
pipeline; the simulated clock drives everything (no sleeps of simulated time)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex
from pipelines.city.simulator.command import CommandCentre, centre_id
from pipelines.dispatch import actions
from pipelines.dispatch.flows import load_flows
from pipelines.gateway.app import create_app
from pipelines.gateway.feeder import simulator_keys
from pipelines.settings import SimulateSettings
from pipelines.spine import store
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.clock import named
from tests.gateway_support import gateway_settings

pytestmark = pytest.mark.integration
MIN = 60_000
START = named("thu-10:00").ms
MINUTES = 150


@pytest.fixture
def run(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine: Any, city: City, rclient: Any
) -> Iterator[dict[str, Any]]:
    s = gateway_settings(redis_url, prefix, db_url, tmp_path, fleet_rate_per_minute=100_000)
    cfg = dataclasses.replace(
        SimulateSettings(),
        seed=11,
        workers=300,
        cameras=10,
        incidents_per_day=500,
        malformed_share=0.0,
        anomalies=False,
        command_share=1.0,
    )
    sim = simulate.Simulator(city, cfg, load_flows(), START, command=True)
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    now = {"ms": START}
    clock = lambda: now["ms"] / 1000  # noqa: E731
    keys = simulator_keys(engine, city, START)
    w = make_worker("reports", s, city, GridIndex(city), rclient, engine, "sim-cmd", clock=clock)
    stop = threading.Event()

    def pipeline() -> None:
        while not stop.is_set():
            if not w.step().acked:
                stop.wait(0.02)

    t = threading.Thread(target=pipeline, daemon=True)
    t.start()
    try:
        yield {"settings": s, "sim": sim, "now": now, "clock": clock, "keys": keys}
    finally:
        stop.set()
        t.join(10)


def test_incidents_go_through_the_command_centre_and_the_workers_phone(
    run: dict[str, Any], engine: Any, city: City, rclient: Any
) -> None:
    s, sim, now = run["settings"], run["sim"], run["now"]
    stream = f"{s.redis.prefix}:{s.streams.reports}"
    app = create_app(s, clock=run["clock"], city=city, engine=engine)
    with TestClient(app, client=("10.1.2.3", 5000)) as c:

        def transport(
            method: str, path: str, body: bytes | None, headers: dict[str, str]
        ) -> tuple[int, bytes]:
            if body is not None:
                headers = {**headers, "Content-Type": "application/json"}
            r = c.request(method, path, content=body, headers=headers)
            return r.status_code, r.content

        ctx = actions.ActionContext.of(engine, rclient, s, city)
        centre = CommandCentre(sim, ctx, transport, run["keys"]["fleet"])
        for _ in range(MINUTES):
            now["ms"] += MIN
            reports = [p for feed, p in sim.advance(now["ms"]) if feed == "reports"]
            if reports:
                publish(rclient, stream, reports)
            centre.step(now["ms"])

    handed: dict[str, dict[str, dict[str, Any]]] = {}
    t = store.incident_events
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.ts_ms))]
    by_incident: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:  # each step's first event (a failed check sends one round again)
        by_incident.setdefault(r["incident_id"], {}).setdefault(r["step"], r)
    street_of = dict(zip(city.grids["grid_id"], city.grids["street_id"], strict=True))
    roster = dict(zip(sim.roster["worker_id"], sim.roster["grid_id"], strict=True))
    dispatched = {i: ev for i, ev in by_incident.items() if "dispatched" in ev}
    assert dispatched, centre.counts
    for i, ev in dispatched.items():
        street = street_of[ev["reported"]["grid_id"]]
        assert ev["accepted"]["actor_id"] == centre_id(street)
        assert ev["dispatched"]["actor_id"] == centre_id(street)
        # dispatched to a roster worker of the incident's own grid
        assert roster[ev["dispatched"]["handler_id"]] == ev["reported"]["grid_id"]
        handed[i] = ev
    handled = {i: ev for i, ev in handed.items() if "handling" in ev}
    assert handled, (centre.counts, centre.phones.counts)
    for ev in handled.values():
        # the phone of the worker the centre dispatched to, through the gateway
        assert ev["handling"]["actor_id"] == ev["dispatched"]["handler_id"]
        assert ev["handling"]["ts_ms"] > ev["dispatched"]["ts_ms"]
    assert centre.phones.counts.get("polls", 0) > 0
    # the whole loop, where it came round: the worker resolved with a note and a photo and
    # checked on site, the centre closed it with its level
    for ev in handled.values():
        if "closed" not in ev:
            continue
        worker, street = ev["dispatched"]["handler_id"], street_of[ev["reported"]["grid_id"]]
        assert ev["resolved"]["actor_id"] == worker and ev["resolved"]["photo_url"]
        assert ev["resolved"]["note"]
        assert ev["verified"]["onsite_by"] == worker
        assert ev["closed"]["actor_id"] == centre_id(street) and ev["closed"]["level"] == "grid"
    # every event is within the simulated time that passed
    assert all(START < r["ts_ms"] <= START + MINUTES * MIN for r in rows)
