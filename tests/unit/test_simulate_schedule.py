"""When the scripted anomalies happen and where the dispute surge lands.

From the rule text (config.toml ``[simulate]``, README "Running the demo"): the dispute
surge starts ``anomaly_start_min`` simulated minutes after the start and lasts an hour,
the fire cluster 30 minutes after the surge starts (10 minutes), the patrol gap 60
minutes after it (three hours); 60 by default, so 60/90/120 minutes at 1×. With
``focus_street`` set (`wangge run`: the demo operator's street) the surge is there."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from pipelines.access import demo
from pipelines.city import geography as geo
from pipelines.city import simulator as simulate
from pipelines.dispatch.flows import load_flows
from pipelines.settings import SimulateSettings, load_settings
from tests.clock import named

MIN = 60_000
START = named("thu-10:00").ms


@pytest.fixture(scope="module")
def city() -> geo.City:
    return geo.demo_city(2026, n_grids=300)


def small(**kw: object) -> SimulateSettings:
    base = dataclasses.replace(
        SimulateSettings(),
        seed=5,
        workers=300,
        cameras=60,
        incidents_per_day=6000,
        malformed_share=0.0,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def windows(sim: simulate.Simulator) -> dict[str, tuple[float, float]]:
    """Each anomaly's (start, end) in minutes after the simulation's start."""
    return {
        a["kind"]: ((a["start_ms"] - START) / MIN, (a["end_ms"] - START) / MIN)
        for a in sim.anomalies
    }


@pytest.mark.parametrize("start_min", [60.0, 5.0])
def test_the_scripted_day_follows_anomaly_start_min(city: geo.City, start_min: float) -> None:
    sim = simulate.Simulator(city, small(anomaly_start_min=start_min), load_flows(), START)
    sim.advance(START + MIN)  # the day's script is written when the day begins
    a = start_min
    got = windows(sim)
    assert got["dispute_surge"] == (a, a + 60)
    assert got["patrol_gap"] == (a + 60, a + 240)
    assert got["fire_cluster"] == (a + 30, a + 40)


def test_the_default_is_60_90_120_minutes(city: geo.City) -> None:
    assert load_settings().simulate.anomaly_start_min == 60.0
    sim = simulate.Simulator(city, small(), load_flows(), START)
    sim.advance(START + MIN)
    got = windows(sim)
    assert [got[k][0] for k in ("dispute_surge", "fire_cluster", "patrol_gap")] == [60, 90, 120]


def test_the_demo_operators_street_gets_the_surge_and_reports(city: geo.City) -> None:
    _, street = demo.demo_areas(city)
    cfg = small(anomaly_start_min=2.0, focus_street=street)
    sim = simulate.Simulator(city, cfg, load_flows(), START)
    events = sim.advance(START + 62 * MIN)
    surge = next(a for a in sim.anomalies if a["kind"] == "dispute_surge")
    assert surge["area_id"] == street
    street_of = dict(zip(city.grids["grid_id"], city.grids["street_id"], strict=True))
    index = geo.GridIndex(city)
    disputes = 0
    for feed, payload in events:
        e = orjson.loads(payload)
        if feed != "reports" or e.get("step") != "reported" or e.get("category") != "dispute":
            continue
        grid = city.grids["grid_id"][int(index.assign([e["lon"]], [e["lat"]])[0])]
        in_window = surge["start_ms"] <= e["ts"] < surge["end_ms"]
        disputes += int(street_of[grid] == street and in_window)
    assert disputes >= 10  # the operator has something to handle within the hour
