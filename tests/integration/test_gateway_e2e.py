"""End to end: a Traccar Client-style phone, an Open311 client and a Frigate publisher →
gateway → streams → pipelines → live state and SQL → what the panorama shows, on a real
Redis, a real MQTT broker and real SQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select

from dashboard.auth import Decision
from dashboard.backend import Backend
from dashboard.live import markers, snapshot
from pipelines.city.geography import City, GridIndex
from pipelines.gateway.mqtt import FrigateSubscriber
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.partitions import keys_of
from pipelines.spine.runner import ClockJob, make_worker
from tests.gateway_support import (
    NOW,
    client_for,
    credential,
    grid,
    mqtt_broker_url,
    mqtt_gateway_settings,
    seed_registries,
    wait_for,
)
from tests.integration.test_gateway_frigate import event, publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from mqtt_broker_url(tmp_path_factory)


def test_phone_hotline_and_camera_reach_the_panorama(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine, city, rclient, mqtt_url
) -> None:
    s = mqtt_gateway_settings(
        redis_url,
        prefix,
        db_url,
        tmp_path,
        mqtt_url,
        frigate_cameras="front_door:C1",
    )
    through_the_gateway(s, rclient, engine, city, mqtt_url)


def through_the_gateway(
    s: Settings, rclient: Any, engine: Engine, city: City, mqtt_url: str
) -> None:
    """The three senders through the gateway to the panorama's reads, with ``s``'s Redis
    (one server or a cluster) and its feed partitions (a worker per partition)."""
    parts = s.streams.partitions
    topic = s.gateway.frigate_topic_prefix
    seed_registries(engine, city)
    phone = credential(engine, city, "phone", worker_id="W1", device_id="48241179")
    hotline = credential(engine, city, "hotline")
    g5, lon5, lat5 = grid(city, 0)  # W1's own grid (the street's markers show its roster)
    street = city.ancestors(g5)[1]
    clock = lambda: NOW / 1000  # noqa: E731
    sub = FrigateSubscriber(s, rclient, engine, clock=clock)
    sub.start()
    try:
        assert sub.connected.wait(10)
        with client_for(s, city, engine) as c:
            # the phone: Traccar Client 9's JSON, a simulated (mock) fix
            fix = {
                "device_id": "48241179",
                "location": {
                    "timestamp": datetime.fromtimestamp((NOW - 5000) / 1000, UTC).isoformat(),
                    "coords": {
                        "latitude": lat5,
                        "longitude": lon5,
                        "accuracy": 8,
                        "speed": 1.2,
                        "heading": 90,
                        "altitude": 10,
                    },
                    "is_moving": True,
                    "mock": True,
                    "battery": {"level": 0.66, "is_charging": False},
                },
            }
            r = c.post(
                f"/?key={phone}",
                content=orjson.dumps(fix),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 200
            # the hotline: an Open311 POST
            r = c.post(
                "/open311/v2/requests.json",
                data={
                    "api_key": hotline,
                    "service_code": "sanitation",
                    "lat": str(lat5),
                    "long": str(lon5),
                    "description": "垃圾满溢",
                    "attribute[severity]": "3",
                },
            )
            srid = r.json()[0]["service_request_id"]
        # the camera: Frigate publishes a tracked object's new and update messages
        t0 = NOW / 1000 - 60
        msgs = [event("new", t0 + 1), event("update", t0 + 3, score=0.93)]
        for m in msgs:
            m["after"]["start_time"] = t0
            m["after"]["id"] = f"{t0:.6f}-e2e"
        publish(mqtt_url, f"{topic}/events", [orjson.dumps(m) for m in msgs])
        # one video alert per object: both revisions are written, the pipeline updates it
        assert wait_for(lambda: sub.counts.get("written", 0) == 2)
    finally:
        sub.stop()
    assert [g["alert_id"] for g in feed_entries(rclient, s, "video")] == [f"fe-{t0:.6f}-e2e"] * 2
    # the pipelines
    index = GridIndex(city)
    for feed in ("locations", "reports", "video"):
        for p in range(parts):
            name = f"{feed}-p{p}-e2e"
            w = make_worker(feed, s, city, index, rclient, engine, name, clock=clock, partition=p)
            while w.step().acked:
                pass
    ClockJob(s, city, w.state, rclient, clock=clock).tick()
    # live state
    pos = agg.unpack_position(w.state.positions()["W1"])
    assert (pos["grid_id"], pos["mock"], pos["battery"]) == (g5, True, 66.0)
    inc = w.state.incident(srid)
    assert inc and inc["status"] == "reported"
    # SQL
    rows = store.read_frame(engine, select(store.incidents))
    assert rows.select("incident_id", "source", "severity", "grid_id").rows() == [
        (srid, "hotline", 3, g5)
    ]
    vids = store.read_frame(engine, select(store.video_alerts))
    assert vids.select("camera_id", "label", "score").rows() == [("C1", "intrusion", 0.93)]
    points = store.read_frame(engine, select(store.track_points))
    assert points.select("worker_id", "mock").rows() == [("W1", True)]
    # the panorama's own reads: the street's KPIs, its markers, the city's video count
    b = Backend(s, city, rclient, engine, clock=clock)
    # what the street's command centre is granted (authorize itself is tested elsewhere)
    sees = frozenset({"positions", "names", "tracks", "incidents"})
    street_grant = Decision(True, street, "aggregates", sees)
    snap = snapshot(b, street_grant)
    assert snap is not None
    assert (snap["kpi"]["reports"], snap["kpi"]["open"], snap["kpi"]["online"]) == (1, 1, 1)
    feats = markers(b, street_grant)["features"]
    kinds = {(f["properties"]["k"], f["properties"]["id"]) for f in feats}
    assert ("w", "W1") in kinds and ("inc", srid) in kinds
    city_snap = snapshot(b, Decision(True, city.city_id, "aggregates"))
    assert city_snap is not None and city_snap["kpi"]["video"] == 1
    assert city_snap["labels"].get("intrusion") == 1


def feed_entries(r: Any, s: Settings, feed: str) -> list[dict[str, Any]]:
    """Every entry of a feed's streams (all its partitions), in id order."""
    keys = keys_of(s)
    got = [
        (eid, f[b"data"])
        for p in range(keys.partitions)
        for eid, f in r.xrange(keys.stream(getattr(s.streams, feed), p))
    ]
    return [orjson.loads(d) for _, d in sorted(got)]
