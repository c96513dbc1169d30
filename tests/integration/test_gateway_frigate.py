"""Frigate over a real MQTT broker and over HTTP, on a real Redis and SQL: one tracked
object is one video alert, updated in place, through the video pipeline.

Messages follow Frigate's documented payloads ([FE] docs/docs/integrations/mqtt.md,
frigate/events; [FR] frigate/reviews). Each test uses its own topic prefix."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from sqlalchemy import select

from pipelines.city.geography import GridIndex
from pipelines.gateway.mqtt import FrigateSubscriber
from pipelines.ops.metrics import exposition
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.runner import make_worker
from tests.conftest import sample
from tests.gateway_support import (
    NOW,
    client_for,
    credential,
    mqtt_broker_url,
    mqtt_gateway_settings,
    seed_registries,
    slow_uplink,
    stream,
    wait_for,
)

pytestmark = pytest.mark.integration
T0 = NOW / 1000 - 120  # the object appeared two minutes ago


@pytest.fixture(scope="module")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from mqtt_broker_url(tmp_path_factory)


def event(kind: str, frame: float, end: float | None = None, score: float = 0.8) -> dict[str, Any]:
    """[FE] a frigate/events message of one tracked object."""
    after = {
        "id": f"{T0:.6f}-mxklsc",
        "camera": "front_door",
        "frame_time": frame,
        "label": "person",
        "sub_label": None,
        "top_score": score,
        "false_positive": False,
        "start_time": T0,
        "end_time": end,
        "current_zones": ["driveway"],
    }
    return {"type": kind, "before": copy.deepcopy(after), "after": after}


@pytest.fixture
def env(redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine, city, rclient, mqtt_url):
    s = mqtt_gateway_settings(
        redis_url,
        prefix,
        db_url,
        tmp_path,
        mqtt_url,
        frigate_cameras="front_door:C1,garage:C2",
    )
    topic = s.gateway.frigate_topic_prefix
    seed_registries(engine, city)
    return {"s": s, "r": rclient, "topic": topic}


def publish(url: str, topic: str, payloads: list[bytes]) -> None:
    from pipelines.gateway.mqtt import parse_url

    host, port, _, _ = parse_url(url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.connect(host, port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def test_connected_means_subscribed_even_on_a_slow_link(
    redis_url, prefix, db_url, tmp_path, engine, city, rclient, mqtt_url
) -> None:
    """``connected`` is the broker's SUBACK, not the SUBSCRIBE leaving the gateway: on a
    link that holds the gateway's packets for a second, a message published the moment
    ``connected`` is set still reaches it (set on sending, the subscription would not
    exist yet at the broker and the message would go to nobody)."""
    seed_registries(engine, city)
    with slow_uplink(mqtt_url, 1.0) as via:
        s = mqtt_gateway_settings(
            redis_url, prefix, db_url, tmp_path, via, frigate_cameras="front_door:C1"
        )
        sub = FrigateSubscriber(s, rclient, engine)
        sub.start()
        try:
            assert sub.connected.wait(15)
            topic = f"{s.gateway.frigate_topic_prefix}/events"
            publish(mqtt_url, topic, [orjson.dumps(event("new", T0 + 1))])
            assert wait_for(lambda: sub.counts.get("written") == 1, 15)
        finally:
            sub.stop()


def test_mqtt_object_lifecycle_is_one_alert(env, city, engine, mqtt_url) -> None:
    s, r = env["s"], env["r"]
    sub = FrigateSubscriber(s, r, engine)
    before = exposition().decode()
    sub.start()
    try:
        assert sub.connected.wait(10)
        assert sample(exposition().decode(), "wangge_mqtt_subscribed") == 1
        msgs = [
            event("new", T0 + 1, score=0.7),
            event("update", T0 + 5, score=0.9),
            event("update", T0 + 5, score=0.9),  # the same message again (QoS 1 re-send)
            event("end", T0 + 5, end=T0 + 60, score=0.9),
        ]
        publish(mqtt_url, f"{env['topic']}/events", [orjson.dumps(m) for m in msgs])
        publish(mqtt_url, f"{env['topic']}/events", [b"{not json", orjson.dumps({"type": "new"})])
        assert wait_for(
            lambda: (
                sub.counts.get("dead:malformed", 0) == 2
                and sub.counts.get("written", 0) + sub.counts.get("duplicate", 0) == 4
            )
        )
        # every revision is written once; the exact re-send (same id, same revision) is a
        # duplicate
        assert sub.counts.get("written") == 3 and sub.counts.get("duplicate") == 1
        # the same outcomes on /metrics (this process's counters: the difference)
        now = exposition().decode()
        name = "wangge_mqtt_messages_total"
        assert {
            k: sample(now, name, outcome=k) - sample(before, name, outcome=k)
            for k in ("written", "duplicate", "dead:malformed")
        } == {"written": 3, "duplicate": 1, "dead:malformed": 2}
    finally:
        sub.stop()
    assert wait_for(lambda: sample(exposition().decode(), "wangge_mqtt_subscribed") == 0)
    got = stream(r, s, "video")
    assert [g["alert_id"] for g in got] == ["fe-" + event("new", 0)["after"]["id"]] * 3
    assert [g["revision"] for g in got] == sorted({g["revision"] for g in got})
    # the malformed ones are dead letters (stream "frigate"), with payload and reason
    dl = r.xrange(f"{s.redis.prefix}:{s.streams.deadletter}")
    assert [(f[b"stream"], f[b"reason"]) for _, f in dl] == [(b"frigate", b"malformed")] * 2
    assert dl[0][1][b"payload"] == b"{not json"
    # through the video pipeline: ONE alert, counted once, updated in place to its end
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-t", clock=lambda: NOW / 1000)
    res = w.step()
    # (in one batch, the end is the update shown; the update it overtook is superseded)
    assert (res.applied, res.updated + res.superseded, res.dead) == (1, 2, 0)
    day = agg.local_day(int(T0 * 1000), s.live.timezone)
    assert w.state.counts("video", [city.city_id], day=day) == [1]
    rows = store.read_frame(engine, select(store.video_alerts))
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert (row["camera_id"], row["label"], row["score"]) == ("C1", "intrusion", 0.9)
    assert row["end_ms"] == int((T0 + 60) * 1000)
    sql_dl = store.read_frame(engine, select(store.dead_letters))
    assert sql_dl["stream"].to_list() == ["frigate", "frigate"]


def test_mqtt_ignores_what_is_not_configured(env, engine, mqtt_url) -> None:
    s, r = env["s"], env["r"]
    sub = FrigateSubscriber(s, r, engine)
    sub.start()
    try:
        assert sub.connected.wait(10)
        dog = event("new", T0 + 1)
        dog["after"]["label"] = "dog"
        porch = event("new", T0 + 1)
        porch["after"]["camera"] = "porch"
        fp = event("new", T0 + 1)
        fp["after"]["false_positive"] = True
        publish(mqtt_url, f"{env['topic']}/events", [orjson.dumps(m) for m in (dog, porch, fp)])
        assert wait_for(
            lambda: sum(v for k, v in sub.counts.items() if k.startswith("ignored")) == 3
        )
    finally:
        sub.stop()
    assert sub.counts == {"ignored:label": 1, "ignored:camera": 1, "ignored:false_positive": 1}
    assert stream(r, s, "video") == []


def test_http_push_of_the_same_payloads(env, city, engine) -> None:
    s, r = env["s"], env["r"]
    cam = credential(engine, city, "camera", cameras=["C1"])
    other = credential(engine, city, "camera", cameras=["C2"])
    hotline = credential(engine, city, "hotline")
    with client_for(s, city, engine) as c:
        h = {"Authorization": f"Bearer {cam}"}
        res = c.post(
            "/frigate/events", json=[event("new", T0 + 1), event("update", T0 + 2)], headers=h
        )
        assert res.status_code == 200 and res.json() == {
            "accepted": 2,  # the object's new and update: two revisions of one alert
            "duplicates": 0,
            "ignored": {},
        }
        res = c.post("/frigate/events", json=event("update", T0 + 2), headers=h)
        assert res.json()["duplicates"] == 1
        review = {
            "type": "new",
            "after": {
                "id": "rv1",
                "camera": "front_door",
                "start_time": T0,
                "end_time": None,
                "severity": "alert",
                "data": {"objects": ["person"], "detections": ["x"]},
            },
        }
        assert c.post("/frigate/reviews", json=review, headers=h).json()["accepted"] == 1
        assert (
            c.post(
                "/frigate/events", json=event("new", T0 + 1), headers={"X-Api-Key": other}
            ).status_code
            == 403
        )
        assert (
            c.post(
                "/frigate/events", json=event("new", T0 + 1), headers={"X-Api-Key": hotline}
            ).status_code
            == 403
        )
        bad = c.post("/frigate/events", json=[event("new", T0 + 1), {"type": "new"}], headers=h)
        assert bad.status_code == 400
        assert bad.json()["error"]["items"][0]["index"] == 1
        assert c.post("/frigate/events", content=b"{", headers=h).status_code == 400
        assert c.post("/frigate/nothing", json={}, headers=h).status_code == 404
        assert c.post("/frigate/events", json={}).status_code == 401
    assert len(stream(r, s, "video")) == 3  # the object's two revisions and the review item
