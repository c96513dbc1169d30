"""Workers in the loop, end to end on a real Redis (own prefix), real SQL, the gateway app
and the reports pipeline running beside it: an incident dispatched to a worker is in that
worker's ``GET /tasks`` (not in another worker's, not for a revoked key); the worker's
answers through ``POST /tasks/{id}`` are lifecycle events with the worker as actor; a
replayed request id writes nothing; a resolve without the photo the flow requires is
refused and writes nothing; the on-site check is the worker's verify task.

Expected deadlines and records come from the shipped flow file (read here with tomllib)."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from pipelines.city.geography import City, GridIndex
from pipelines.dispatch import actions
from pipelines.dispatch.flows import DEFAULT_FILE
from pipelines.gateway import credentials as cr
from pipelines.gateway.app import create_app
from pipelines.spine import store
from pipelines.spine.runner import make_worker, stream_name
from pipelines.spine.streams import publish
from tests.gateway_support import NOW, credential, gateway_settings, grid, seed_registries

pytestmark = pytest.mark.integration
MIN = 60_000
H = 3_600_000
FLOW = {f["id"]: f for f in tomllib.loads(DEFAULT_FILE.read_text("utf-8"))["flow"]}["dispute"]


class Clock:
    """The one clock of the gateway, the pipeline and the actions (moved by the test)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def tick(self, ms: int = MIN) -> int:
        self.ms += ms
        return self.ms


@pytest.fixture
def loop(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine: Any, city: City, rclient: Any
) -> Iterator[dict[str, Any]]:
    """Settings, the clock, the reports pipeline in a thread, the action context."""
    s = gateway_settings(redis_url, prefix, db_url, tmp_path, phone_rate_per_minute=10_000)
    reg = seed_registries(engine, city)  # W1..W4 in grids 0..3; W5 joins W1 in grid 0
    w5 = {**reg["workers"][0], "worker_id": "W5", "name": "网格员5"}
    store.replace_table(engine, store.workers, [*reg["workers"], w5])
    clock = Clock(NOW - 2 * H)
    w = make_worker("reports", s, city, GridIndex(city), rclient, engine, "tasks-t", clock=clock)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            if not w.step().acked:
                stop.wait(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ctx = actions.ActionContext.of(engine, rclient, s, city)
    try:
        yield {"settings": s, "clock": clock, "ctx": ctx, "stream": stream_name(s, "reports")}
    finally:
        stop.set()
        t.join(10)


def report(r: Any, s: Any, city: City, incident_id: str, ts: int, category: str) -> None:
    _, lon, lat = grid(city, 0)  # W1's grid
    ev = {
        "event_id": f"rep-{incident_id}",
        "incident_id": incident_id,
        "ts": ts,
        "step": "reported",
        "category": category,
        "severity": 1,
        "source": "hotline",
        "reporter_id": "12345-000001",
        "lon": lon,
        "lat": lat,
        "description": "楼上噪音扰民",
    }
    publish(r, f"{s.redis.prefix}:{s.streams.reports}", [orjson.dumps(ev)])


def events_of(engine: Any, incident_id: str) -> list[dict[str, Any]]:
    t = store.incident_events
    with engine.connect() as conn:
        rows = conn.execute(
            select(t).where(t.c.incident_id == incident_id).order_by(t.c.ts_ms, t.c.event_id)
        )
        return [dict(r._mapping) for r in rows]


def wait_status(engine: Any, incident_id: str, status: str, clock: Clock) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 10
    while True:
        row = actions.load_incident(engine, incident_id)
        if (row and row["status"] == status) or time.monotonic() > deadline:
            assert row is not None and row["status"] == status, row
            return row
        time.sleep(0.05)


def test_a_dispatched_incident_is_the_workers_task_and_its_answers_are_events(
    loop: dict[str, Any], engine: Any, city: City, rclient: Any
) -> None:
    s, clock, ctx = loop["settings"], loop["clock"], loop["ctx"]
    gid, _, _ = grid(city, 0)
    street = city.ancestors(gid)[1]
    phone1 = credential(engine, city, "phone", worker_id="W1", device_id="dev-w1")
    phone2 = credential(engine, city, "phone", worker_id="W2", device_id="dev-w2")
    phone5 = credential(engine, city, "phone", worker_id="W5", device_id="dev-w5")
    old = credential(engine, city, "phone", worker_id="W1", device_id="dev-w1-old")
    old_id = next(c.credential_id for c in cr.list_all(engine) if c.device_id == "dev-w1-old")
    cr.revoke(engine, old_id, now_ms=clock.ms, actor="test")

    reported = clock.ms
    report(rclient, s, city, "INC-T1", reported, "dispute")
    wait_status(engine, "INC-T1", "reported", clock)
    operator = actions.Actor("op-street", "street_operator", street)
    clock.tick()
    actions.perform(ctx, actions.Request("accept", "INC-T1", "acc-INC-T1"), operator, clock.ms)
    dispatched = clock.tick()
    actions.perform(
        ctx,
        actions.Request("dispatch", "INC-T1", "dis-INC-T1", handler_id="W1"),
        operator,
        dispatched,
    )
    wait_status(engine, "INC-T1", "dispatched", clock)

    app = create_app(s, clock=clock, city=city, engine=engine)
    with TestClient(app, client=("10.1.2.3", 5000)) as c:

        def tasks(key: str) -> Any:
            return c.get("/tasks", headers={"Authorization": f"Bearer {key}"})

        def answer(key: str, **body: Any) -> Any:
            return c.post(
                "/tasks/INC-T1",
                content=orjson.dumps(body),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )

        r = tasks(phone1)
        assert r.status_code == 200, r.text
        (task,) = r.json()["tasks"]
        assert task["incident_id"] == "INC-T1" and task["task"] == "handle"
        assert task["category"] == "dispute" and task["place"]["grid_id"] == gid
        assert task["due_ms"] == dispatched + FLOW["stages"]["handle"]["hours"] * H
        assert task["actions"] == ["handle"]
        assert tasks(phone2).json()["tasks"] == []  # another worker's phone
        assert tasks(phone5).json()["tasks"] == []  # the same grid's other worker
        assert tasks(old).status_code == 401  # a revoked phone
        assert r.json()["worker_id"] == "W1"

        # other workers may not answer W1's task; nothing is written
        n0 = len(events_of(engine, "INC-T1"))
        clock.tick()
        r = answer(phone5, action="handle", request_id="w5-handle-1")
        assert r.status_code == 403 and r.json()["error"]["code"] == "not_assigned", r.text
        r = answer(phone2, action="handle", request_id="w2-handle-1")
        assert r.status_code == 403 and r.json()["error"]["code"] == "out_of_scope", r.text
        assert len(events_of(engine, "INC-T1")) == n0

        r = answer(phone1, action="handle", request_id="w1-handle-1")
        assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text
        assert len(events_of(engine, "INC-T1")) == n0 + 1
        # the same request again: a duplicate, nothing new
        r = answer(phone1, action="handle", request_id="w1-handle-1")
        assert r.status_code == 200 and r.json()["outcome"] == "duplicate", r.text
        assert len(events_of(engine, "INC-T1")) == n0 + 1
        assert tasks(phone1).json()["tasks"][0]["actions"] == ["resolve"]

        # the flow asks for a note and a photo to leave the handle stage
        assert set(FLOW["stages"]["handle"]["requires"]) == {"note", "photo"}
        length = rclient.xlen(f"{s.redis.prefix}:{loop['stream']}")
        clock.tick(30 * MIN)
        r = answer(phone1, action="resolve", request_id="w1-resolve-1", note="已调解")
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "missing_record"
        assert "photo" in r.json()["error"]["message"]
        assert rclient.xlen(f"{s.redis.prefix}:{loop['stream']}") == length
        assert len(events_of(engine, "INC-T1")) == n0 + 1

        r = answer(
            phone1,
            action="resolve",
            request_id="w1-resolve-2",
            note="已调解",
            photo_url="https://photos.example/inc-t1.jpg",
        )
        assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text

        # the on-site check: W1 handled it and is a roster worker of its grid
        resolved = wait_status(engine, "INC-T1", "resolved", clock)
        (task,) = tasks(phone1).json()["tasks"]
        assert task["task"] == "verify" and task["actions"] == ["verify_pass", "verify_fail"]
        assert task["due_ms"] == resolved["stage_ms"] + FLOW["stages"]["verify"]["hours"] * H
        assert tasks(phone2).json()["tasks"] == []
        assert tasks(phone5).json()["tasks"] == []  # W1 handled it: W1 checks
        clock.tick(20 * MIN)
        r = answer(phone1, action="verify_pass", request_id="w1-verify-1", note="现场已解决")
        assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text
        assert tasks(phone1).json()["tasks"] == []

    wait_status(engine, "INC-T1", "verified", clock)
    evs = events_of(engine, "INC-T1")
    by_step = {e["step"]: e for e in evs}
    assert [e["step"] for e in evs] == [
        "reported",
        "accepted",
        "dispatched",
        "handling",
        "resolved",
        "verified",
    ]
    assert by_step["dispatched"]["handler_id"] == "W1"
    assert {by_step[k]["actor_id"] for k in ("accepted", "dispatched")} == {"op-street"}
    assert {by_step[k]["actor_id"] for k in ("handling", "resolved", "verified")} == {"W1"}
    assert by_step["resolved"]["photo_url"] == "https://photos.example/inc-t1.jpg"
    assert by_step["verified"]["onsite_by"] == "W1"


def test_a_fleet_key_answers_for_its_area_and_names_the_worker(
    loop: dict[str, Any], engine: Any, city: City
) -> None:
    s, clock = loop["settings"], loop["clock"]
    gid, _, _ = grid(city, 0)
    district = city.ancestors(gid)[2]
    fleet = credential(engine, city, "fleet", area_id=district)
    hotline = credential(engine, city, "hotline")
    app = create_app(s, clock=clock, city=city, engine=engine)
    with TestClient(app, client=("10.1.2.3", 5000)) as c:
        auth = {"Authorization": f"Bearer {fleet}"}
        assert c.get("/tasks", headers=auth).status_code == 400  # which worker?
        r = c.get("/tasks?worker=W1", headers=auth)
        assert r.status_code == 200 and r.json()["worker_id"] == "W1"
        assert c.get("/tasks?worker=NOPE", headers=auth).status_code == 404
        r = c.get("/tasks", headers={"Authorization": f"Bearer {hotline}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert c.get("/tasks").status_code == 401
        spec = c.get("/openapi.json").json()
        assert {"/tasks", "/tasks/{incident_id}"} <= set(spec["paths"])
