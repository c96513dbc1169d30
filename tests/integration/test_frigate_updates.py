"""One Frigate object or review item is ONE video alert, updated in place, on a real
broker, Redis and SQL: through the gateway (MQTT and HTTP), the video pipeline, the live
state and SQL, to the panorama's counts and the warnings' inputs.

Messages follow Frigate's documented MQTT payloads (https://docs.frigate.video/integrations/mqtt/):
[FE] ``frigate/events`` — new, then an update "when Frigate finds a better snapshot … or
when a zone change occurs", then "a final message … with end_time set"; [FR]
``frigate/reviews`` — the same id again "when the severity changes from detection to
alert". Expected values come from the messages (the last of Frigate's sequence is what
the alert shows; each object counts once), not from the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import select

from dashboard.auth import Decision
from dashboard.backend import Backend
from dashboard.live import snapshot
from pipelines.city.geography import City, GridIndex
from pipelines.gateway.frigate import Alert, FrigateMap, translate
from pipelines.gateway.mqtt import FrigateSubscriber
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.runner import FeedWorker, make_worker
from pipelines.warnings.engine import WarningEngine
from tests.gateway_support import (
    NOW,
    client_for,
    credential,
    mqtt_broker_url,
    mqtt_gateway_settings,
    seed_registries,
    stream,
    wait_for,
)
from tests.integration.test_gateway_frigate import publish

pytestmark = pytest.mark.integration
T0 = NOW / 1000 - 120  # the object appeared two minutes ago
CLOCK = lambda: NOW / 1000  # noqa: E731


@pytest.fixture(scope="module")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from mqtt_broker_url(tmp_path_factory)


@pytest.fixture
def env(redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine, city, rclient, mqtt_url):
    s = mqtt_gateway_settings(
        redis_url,
        prefix,
        db_url,
        tmp_path,
        mqtt_url,
        frigate_cameras="front_door:C1,front_cam:C2",
        frigate_review_min_severity="detection",
    )
    s = dataclasses.replace(s, streams=dataclasses.replace(s.streams, batch_size=7))
    topic = s.gateway.frigate_topic_prefix
    seed_registries(engine, city)
    return {"s": s, "r": rclient, "topic": topic}


def obj(kind: str, frame: float, fid: str = "mxklsc", **after: Any) -> dict[str, Any]:
    """[FE] a frigate/events message of one tracked object."""
    a = {
        "id": f"{T0:.6f}-{fid}",
        "camera": "front_door",
        "frame_time": frame,
        "label": "person",
        "sub_label": None,
        "top_score": 0.72,
        "false_positive": False,
        "start_time": T0,
        "end_time": None,
        "current_zones": [],
    }
    a.update(after)
    return {"type": kind, "before": dict(a), "after": a}


def lifecycle(fid: str = "mxklsc") -> list[dict[str, Any]]:
    """[FE] new → update (score rises, a zone entered) → update (sub_label set) → end."""
    zones = ["driveway"]
    return [
        obj("new", T0 + 1, fid),
        obj("update", T0 + 6, fid, top_score=0.96, current_zones=zones),
        obj("update", T0 + 8, fid, top_score=0.96, current_zones=zones, sub_label="Eli"),
        obj("end", T0 + 8, fid, top_score=0.96, current_zones=zones, sub_label="Eli",
            end_time=T0 + 44),
    ]  # fmt: skip


FINAL = {
    "camera_id": "C1",
    "label": "intrusion",
    "score": 0.96,
    "sub_label": "Eli",
    "zones": "driveway",
    "end_ms": int((T0 + 44) * 1000),
    "ts_ms": int(T0 * 1000),
}


def review(kind: str, severity: str, end: float | None = None) -> dict[str, Any]:
    """[FR] a frigate/reviews message of one review item."""
    a = {
        "id": f"{T0:.6f}-fqk5ka",
        "camera": "front_cam",
        "start_time": T0,
        "end_time": end,
        "severity": severity,
        "data": {"detections": ["d1"], "objects": ["person"], "zones": []},
    }
    return {"type": kind, "before": dict(a), "after": a}


def xadd(r: redis.Redis, s: Settings, topic: str, msgs: list[dict[str, Any]]) -> None:
    """What the gateway writes for these messages, straight into the video stream."""
    fmap = FrigateMap.of(s.gateway)
    key = f"{s.redis.prefix}:{s.streams.video}"
    for m in msgs:
        a = translate(topic, m, fmap, lambda c: c in ("C1", "C2"))
        assert isinstance(a, Alert)
        r.xadd(key, {b"data": orjson.dumps(a.event)})


def drain(w: FeedWorker) -> dict[str, int]:
    got = {"applied": 0, "updated": 0, "superseded": 0, "redelivered": 0, "dead": 0}
    while (res := w.step()).acked:
        for k in got:
            got[k] += getattr(res, k)
    return got


def alerts(engine) -> list[dict[str, Any]]:
    return store.read_frame(engine, select(store.video_alerts)).to_dicts()


def video_counts(w: FeedWorker, city: City, area: str) -> tuple[int, int]:
    day = agg.local_day(int(T0 * 1000), w.settings.live.timezone)
    n = w.state.counts("video", [area], day=day)[0]
    labels = w.state.breakdown("video_label", area, ["intrusion", "smoke_fire"], day=day)
    return n, labels["intrusion"]


def test_object_over_mqtt_is_one_alert_with_its_final_values_on_the_panorama(
    env, city, engine
) -> None:
    s, r = env["s"], env["r"]
    sub = FrigateSubscriber(s, r, engine, clock=CLOCK)
    sub.start()
    try:
        assert sub.connected.wait(10)
        msgs = lifecycle()
        msgs.insert(2, msgs[1])  # the same update again (a QoS 1 re-send): a duplicate
        publish(s.gateway.mqtt_url, f"{env['topic']}/events", [orjson.dumps(m) for m in msgs])
        assert wait_for(lambda: sum(sub.counts.values()) == 5)
        assert sub.counts == {"written": 4, "duplicate": 1}
    finally:
        sub.stop()
    assert len(stream(r, s, "video")) == 4
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-mqtt", clock=CLOCK)
    got = drain(w)
    assert (got["applied"], got["updated"] + got["superseded"], got["dead"]) == (1, 3, 0)
    rows = alerts(engine)
    assert len(rows) == 1 and {k: rows[0][k] for k in FINAL} == FINAL
    grid_id = rows[0]["grid_id"]
    for area in city.ancestors(grid_id):  # grid, street, district, city
        assert video_counts(w, city, area) == (1, 1)  # counted once at every level
    b = Backend(s, city, r, engine, clock=CLOCK)
    snap = snapshot(b, Decision(True, city.city_id, "aggregates"))
    assert snap is not None and snap["kpi"]["video"] == 1
    assert snap["labels"].get("intrusion") == 1


def test_review_escalation_over_http_raises_the_severity_in_place(env, city, engine) -> None:
    s, r = env["s"], env["r"]
    cam = credential(engine, city, "camera", cameras=["C2"])
    h = {"Authorization": f"Bearer {cam}"}
    with client_for(s, city, engine) as c:
        res = c.post("/frigate/reviews", json=review("new", "detection"), headers=h)
        assert res.json()["accepted"] == 1
        w = make_worker("video", s, city, GridIndex(city), r, engine, "v-rv", clock=CLOCK)
        drain(w)
        (row,) = alerts(engine)
        assert (row["severity"], row["score"]) == ("detection", 0.6)
        res = c.post("/frigate/reviews", json=review("update", "alert"), headers=h)
        assert res.json()["accepted"] == 1
        res = c.post("/frigate/reviews", json=review("update", "alert"), headers=h)
        assert res.json() == {"accepted": 0, "duplicates": 1, "ignored": {}}
        res = c.post("/frigate/reviews", json=review("end", "alert", T0 + 30), headers=h)
        assert res.json()["accepted"] == 1
    got = drain(w)
    assert (got["applied"], got["updated"] + got["superseded"]) == (0, 2)
    (row,) = alerts(engine)
    assert (row["severity"], row["score"], row["end_ms"]) == ("alert", 1.0, int((T0 + 30) * 1000))
    assert (row["camera_id"], row["label"]) == ("C2", "intrusion")
    assert video_counts(w, city, city.city_id) == (1, 1)


def test_every_order_of_arrival_converges_and_counts_once(env, city, engine) -> None:
    """All 24 orders of one object's four messages, each as its own object, in one
    stream read in batches of 7 (so an object's messages span batches)."""
    s, r = env["s"], env["r"]
    perms = list(itertools.permutations(range(4)))
    for k, perm in enumerate(perms):
        msgs = lifecycle(f"perm{k}")
        xadd(r, s, "events", [msgs[i] for i in perm])
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-perm", clock=CLOCK)
    got = drain(w)
    assert (got["applied"], got["dead"]) == (len(perms), 0)
    assert got["updated"] + got["superseded"] == 3 * len(perms)
    rows = alerts(engine)
    assert len(rows) == len(perms)
    for row in rows:
        assert {k: row[k] for k in FINAL} == FINAL
    assert video_counts(w, city, city.city_id) == (len(perms), len(perms))


def test_a_label_change_moves_the_count_and_the_warnings_see_it(env, city, engine) -> None:
    """Our own feed's schema (a system sending revisions itself): an update in place that
    changes the label moves the label's count; the alert is still counted once."""
    s, r = env["s"], env["r"]
    key = f"{s.redis.prefix}:{s.streams.video}"
    base = {"alert_id": "va-1", "camera_id": "C1", "score": 0.5, "ts": int(T0 * 1000)}
    r.xadd(key, {b"data": orjson.dumps(base | {"label": "intrusion", "revision": 1})})
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-lab", clock=CLOCK)
    drain(w)
    assert video_counts(w, city, city.city_id) == (1, 1)
    r.xadd(key, {b"data": orjson.dumps(base | {"label": "smoke_fire", "revision": 2})})
    r.xadd(key, {b"data": orjson.dumps(base | {"label": "intrusion", "revision": 1})})  # stale
    drain(w)
    day = agg.local_day(int(T0 * 1000), s.live.timezone)
    labels = w.state.breakdown("video_label", city.city_id, ["intrusion", "smoke_fire"], day=day)
    assert labels == {"intrusion": 0, "smoke_fire": 1}
    assert w.state.counts("video", [city.city_id], day=day) == [1]
    inputs = WarningEngine(s, city, r, engine, clock=CLOCK).read_inputs(NOW)
    assert inputs.video.select("alert_id", "label").rows() == [("va-1", "smoke_fire")]
    # an update naming another camera is refused: the alert does not move
    r.xadd(key, {b"data": orjson.dumps(base | {"camera_id": "C2", "label": "intrusion",
                                                "revision": 3})})  # fmt: skip
    assert drain(w)["dead"] == 1
    (row,) = alerts(engine)
    assert (row["camera_id"], row["label"]) == ("C1", "smoke_fire")
    dl = store.read_frame(engine, select(store.dead_letters))
    assert dl["reason"].to_list() == ["moved_alert"]


def test_a_crash_between_commit_and_xack_does_not_count_twice(env, city, engine) -> None:
    """kill -9 after the SQL commit and the Redis write, before XACK: the entries stay
    pending, a restarted worker (same consumer) reads them again — nothing counts twice,
    nothing regresses; a re-publication of every message is a no-op too."""
    s, r = env["s"], env["r"]
    xadd(r, s, "events", lifecycle())
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-crash", clock=CLOCK)

    def killed(_ids: Any) -> None:
        raise SystemExit("kill -9 before XACK")

    w.consumer.ack = killed  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        w.step()
    assert len(alerts(engine)) == 1  # committed
    again = make_worker("video", s, city, GridIndex(city), r, engine, "v-crash", clock=CLOCK)
    got = drain(again)
    assert (got["applied"], got["updated"], got["dead"]) == (0, 0, 0)
    assert got["redelivered"] + got["superseded"] == 4
    xadd(r, s, "events", lifecycle())  # everything published again
    got = drain(again)
    assert (got["applied"], got["updated"], got["superseded"], got["dead"]) == (0, 0, 4, 0)
    rows = alerts(engine)
    assert len(rows) == 1 and {k: rows[0][k] for k in FINAL} == FINAL
    assert video_counts(again, city, city.city_id) == (1, 1)
    assert r.xpending(f"{s.redis.prefix}:{s.streams.video}", s.streams.group)["pending"] == 0


def test_a_failed_attempt_that_counted_a_duplicate_on_another_day_is_taken_back(
    env, city, engine
) -> None:
    """kill -9 after the Redis write, before the SQL commit (Redis is written inside the
    transaction): an alert id reused two days later reaches Redis first as a creator; the
    original, earlier in the stream, is then decided; the reuse comes back as a duplicate.
    Redis must end with one count, on the original's day (the crash test's scenario)."""
    from pipelines.spine.streams import Batch

    s, r = env["s"], env["r"]
    key = f"{s.redis.prefix}:{s.streams.video}"
    late_ts = int(T0 * 1000)
    early_ts = late_ts - 2 * 86_400_000
    ev = {"alert_id": "reused-1", "camera_id": "C1", "label": "intrusion", "score": 0.9}
    early = orjson.dumps({**ev, "ts": early_ts})
    late = orjson.dumps({**ev, "ts": late_ts})
    early_id = r.xadd(key, {b"data": early}).decode()
    late_id = r.xadd(key, {b"data": late}).decode()
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-fail", clock=CLOCK)

    def killed(_dead: Any) -> None:
        raise SystemExit("kill -9 after the Redis write, before the commit")

    w._dead_letter_redis = killed  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        w.process(Batch(entries=[(late_id, late)]))
    assert alerts(engine) == []  # rolled back; Redis has counted the reuse as a creator
    w = make_worker("video", s, city, GridIndex(city), r, engine, "v-next", clock=CLOCK)
    w.process(Batch(entries=[(early_id, early)]))
    w.process(Batch(entries=[(late_id, late)], retried=True))
    drain(w)  # the stream's own delivery of both: a no-op
    tz = s.live.timezone
    days = {agg.local_day(t, tz): 0 for t in (early_ts, late_ts)}
    for day in days:
        days[day] = w.state.counts("video", [city.city_id], day=day)[0]
    assert days == {agg.local_day(early_ts, tz): 1, agg.local_day(late_ts, tz): 0}
    ((row,),) = [alerts(engine)]
    assert row["entry_id"] == early_id
