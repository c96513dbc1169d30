"""Actions through the real pipeline: every standard flow's scenarios, from the flow file.

For each flow of the shipped flow file (read here with ``tomllib``, not through
``pipelines/dispatch/flows.py``): the happy path, overdue and escalated, returned twice, a
merged duplicate and a failed verification. Each action is performed as a command centre
would (``actions.perform``) while a reports pipeline runs in the background on a real Redis
and a real database; what must be recorded, the levels an incident climbs and the step each
action writes come from the file and the README's table, and the outcome is read back from
SQL (the incident's events and row) and from the live state in Redis.
"""

from __future__ import annotations

import threading
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, insert, select

from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.dispatch import actions as A
from pipelines.dispatch.flows import DEFAULT_FILE
from pipelines.dispatch.units import demo_units, units
from pipelines.settings import Settings
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.store.schema import incident_events, workers
from pipelines.spine.streams import publish
from tests.conftest import open_engine, private_database, private_prefix, settings_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = 1_793_000_000_000  # 2026-10-26 (a fixed moment: the pipeline's clock is passed in)
NOW_S = (T0 + 12 * 24 * HOUR) / 1000  # the pipeline's "now": twelve days later
FLOWS = tomllib.loads(DEFAULT_FILE.read_text(encoding="utf-8"))["flow"]
FIELD_OF = {"note": "note", "photo": "photo_url", "onsite_check": "onsite_by", "level": "level"}
VALUE_OF = {
    "note": "清理完毕",
    "photo_url": "https://media.example.org/p/1.jpg",
    "onsite_by": "W-T1",
    "level": "grid",
}


class World:
    def __init__(self, s: Settings, city: City, engine: Engine, r: redis.Redis) -> None:
        self.s, self.city, self.engine, self.r = s, city, engine, r
        self.ctx = A.ActionContext.of(engine, r, s, city)
        g = city.grids.row(0, named=True)
        self.grid = g
        self.street = A.Actor("op1", "street_operator", g["street_id"])
        self.district = A.Actor("cmd1", "district_commander", g["district_id"])

    def report(self, flow: dict[str, Any], ts: int, severity: int | None = None) -> str:
        inc = f"I-{uuid.uuid4().hex[:12]}"
        event = {
            "event_id": f"{inc}-r",
            "incident_id": inc,
            "ts": ts,
            "step": "reported",
            "category": flow["category"],
            "severity": severity or flow.get("min_severity", 1),
            "source": "worker",
            "lon": self.grid["lon"],
            "lat": self.grid["lat"],
            "reporter_id": "W-T1",
        }
        publish(self.r, self.ctx.stream(event["incident_id"]), [encode(event)])
        self.wait(lambda: A.load_incident(self.engine, inc) is not None)
        return inc

    def wait(self, cond: Any, timeout_s: float = 20.0) -> None:
        import time

        end = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < end, "the pipeline did not apply the event"
            time.sleep(0.02)

    def act(self, actor: A.Actor, action: str, inc: str, now_ms: int, **fields: Any) -> A.Outcome:
        row = A.load_incident(self.engine, inc)
        assert row is not None
        req = A.Request(
            action,
            inc,
            uuid.uuid4().hex,
            expected_events=row["n_events"],
            **fields,
        )
        out = A.perform(self.ctx, req, actor, now_ms, wait_s=20.0)
        assert out.status == "applied", (action, out)
        return out

    def row(self, inc: str) -> dict[str, Any]:
        row = A.load_incident(self.engine, inc)
        assert row is not None
        return row

    def events(self, inc: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(incident_events)
                .where(incident_events.c.incident_id == inc)
                .order_by(incident_events.c.ts_ms)
            )
            return [dict(r._mapping) for r in rows]

    def unit_for(self, unit_type: str) -> str:
        chain = {"city", self.grid["district_id"], self.grid["street_id"]}
        with self.engine.connect() as conn:
            rows = conn.execute(select(units.c.unit_id, units.c.type, units.c.area_id)).all()
        fits = [u for u, t, a in rows if a in chain and t == unit_type]
        return (fits or [u for u, _t, a in rows if a in chain])[0]


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    city = demo_city(2026, n_grids=300)
    index = GridIndex(city)
    tmp = tmp_path_factory.mktemp("dispatch")
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        s = settings_for(redis_url, prefix, db, tmp, streams={"block_ms": 50})
        engine = open_engine(db)
        r = redis.Redis.from_url(redis_url)
        with engine.begin() as conn:
            conn.execute(insert(units), demo_units(city))
            g = city.grids.row(0, named=True)
            conn.execute(
                insert(workers),
                [
                    {
                        "worker_id": "W-T1",
                        "name": "测试网格员",
                        "type": "full",
                        "grid_id": g["grid_id"],
                    }
                ],
            )
        w = make_worker("reports", s, city, index, r, engine, "reports-t", clock=lambda: NOW_S)
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        try:
            yield World(s, city, engine, r)
        finally:
            stop.set()
            t.join(timeout=10)
            r.close()
            engine.dispose()


def stage(flow: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(flow["stages"][name])


def records(flow: dict[str, Any], name: str) -> dict[str, Any]:
    """What the flow file says leaving this stage must record, with values."""
    return {FIELD_OF[r]: VALUE_OF[FIELD_OF[r]] for r in stage(flow, name).get("requires", [])}


def half(flow: dict[str, Any], name: str) -> int:
    return int(stage(flow, name)["hours"] * HOUR / 2)


def _missing_each(world: World, actor: A.Actor, action: str, inc: str, t: int, full: dict) -> None:
    """Leaving out any one record the flow requires is refused and writes nothing."""
    before = world.r.xlen(world.ctx.stream(inc))
    for name in full:
        partial = {k: v for k, v in full.items() if k != name}
        req = A.Request(action, inc, uuid.uuid4().hex, **partial)
        with pytest.raises(A.ActionError) as err:
            A.perform(world.ctx, req, actor, t, wait_s=0)
        assert (err.value.code, err.value.detail) == ("missing_record", name)
    assert world.r.xlen(world.ctx.stream(inc)) == before


IDS = [f["id"] for f in FLOWS]


@pytest.mark.parametrize("flow", FLOWS, ids=IDS)
def test_happy_path(world: World, flow: dict[str, Any]) -> None:
    op = world.street
    t = T0
    inc = world.report(flow, t)
    assert world.row(inc)["stage_due_ms"] == t + int(stage(flow, "accept")["hours"] * HOUR)
    t += half(flow, "accept")
    world.act(op, "accept", inc, t)
    # the pipeline keeps the current stage's deadline: now the dispatch stage's
    assert world.row(inc)["stage_due_ms"] == t + int(stage(flow, "dispatch")["hours"] * HOUR)
    t += half(flow, "dispatch")
    unit = world.unit_for(stage(flow, "handle")["unit"])
    world.act(op, "dispatch", inc, t, unit_id=unit)
    assert world.row(inc)["stage_due_ms"] == t + int(stage(flow, "handle")["hours"] * HOUR)
    world.act(op, "handle", inc, t + 60_000)
    t += half(flow, "handle")
    _missing_each(world, op, "resolve", inc, t, records(flow, "handle"))
    world.act(op, "resolve", inc, t, **records(flow, "handle"))
    t += half(flow, "verify")
    _missing_each(world, op, "verify_pass", inc, t, records(flow, "verify"))
    world.act(op, "verify_pass", inc, t, **records(flow, "verify"))
    t += half(flow, "close")
    world.act(op, "close", inc, t, **records(flow, "close"))
    row = world.row(inc)
    assert row["status"] == "closed" and row["stage_due_ms"] is None
    assert row["unit_id"] == unit
    evs = world.events(inc)
    assert [e["step"] for e in evs] == [
        "reported",
        "accepted",
        "dispatched",
        "handling",
        "resolved",
        "verified",
        "closed",
    ]
    assert {e["actor_id"] for e in evs[1:]} == {"op1"}
    closing = records(flow, "close")
    if "level" in closing:
        assert row["resolution_level"] == closing["level"]
    # every stage was left within its deadline of the file: closed before the total
    total = sum(stage(flow, n)["hours"] for n in flow["stages"]) * HOUR
    assert row["closed_ms"] - row["reported_ms"] <= total
    # nothing more can be done to a closed incident
    assert A.offered(row, op, world.ctx.flows, world.city) == ()


@pytest.mark.parametrize("flow", FLOWS, ids=IDS)
def test_overdue_and_escalated(world: World, flow: dict[str, Any]) -> None:
    inc = world.report(flow, T0)
    # past the accept deadline of the file, the incident is overdue in its stage
    late = T0 + int(stage(flow, "accept")["hours"] * HOUR * 1.5)
    row = world.row(inc)
    f = world.ctx.flows.by_id(flow["id"])
    assert f.stage_due_ms(row["status"], row["stage_ms"], row["due_ms"]) == T0 + int(
        stage(flow, "accept")["hours"] * HOUR
    )
    assert f.stage_due_ms(row["status"], row["stage_ms"], row["due_ms"]) < late
    path = flow.get("escalation", ["grid", "community", "street", "district"])
    level = "grid"
    t = late
    street_levels = ("grid", "community", "street")
    while level != path[-1]:
        actor = world.street if level in street_levels else world.district
        if world.row(inc)["status"] == "escalated":  # each level accepts before it hands up
            world.act(actor, "accept", inc, t)
        world.act(actor, "escalate", inc, t + 1, reason="超时未受理")
        level = path[path.index(level) + 1] if level in path else path[0]
        assert world.row(inc)["level"] == level
        t += 60_000
    row = world.row(inc)
    assert row["status"] == "escalated"
    if level == "district":  # the street may no longer act; the district accepts
        assert "accept" not in A.offered(row, world.street, world.ctx.flows, world.city)
    assert "escalate" not in A.offered(row, world.district, world.ctx.flows, world.city)
    world.act(world.district, "accept", inc, t)
    assert world.row(inc)["status"] == "accepted"


@pytest.mark.parametrize("flow", FLOWS, ids=IDS)
def test_returned_twice(world: World, flow: dict[str, Any]) -> None:
    op = world.street
    inc = world.report(flow, T0)
    t = T0 + 60_000
    world.act(op, "accept", inc, t)
    unit = world.unit_for(stage(flow, "handle")["unit"])
    for i in range(2):
        world.act(op, "dispatch", inc, t + 1, unit_id=unit)
        world.act(op, "handle", inc, t + 2)
        world.act(op, "return", inc, t + 3, reason=f"退回 {i + 1}")
        t += 10 * 60_000
    row = world.row(inc)
    assert (row["status"], row["n_returned"]) == ("returned", 2)
    # a dispatch may set its own deadline, with a reason: the handle stage is due then
    due = t + 5 * HOUR
    world.act(op, "dispatch", inc, t, unit_id=unit, due_ms=due, reason="需协调多部门")
    assert world.row(inc)["stage_due_ms"] == due
    t += 60_000
    assert [e["reason"] for e in world.events(inc) if e["step"] == "returned"] == [
        "退回 1",
        "退回 2",
    ]
    # a return needs its reason
    with pytest.raises(A.ActionError) as err:
        A.perform(world.ctx, A.Request("return", inc, uuid.uuid4().hex), op, t, wait_s=0)
    assert (err.value.code, err.value.detail) == ("missing_record", "reason")


@pytest.mark.parametrize("flow", FLOWS, ids=IDS)
def test_merged_duplicate(world: World, flow: dict[str, Any]) -> None:
    op = world.street
    first = world.report(flow, T0)
    second = world.report(flow, T0 + 5 * 60_000)
    t = T0 + 10 * 60_000
    world.act(op, "merge", second, t, duplicate_of=first, reason="同一事件")
    dup, kept = world.row(second), world.row(first)
    assert (dup["status"], dup["duplicate_of"], dup["resolution_level"]) == (
        "closed",
        first,
        None,
    )
    assert kept["status"] == "reported"
    # a merge into a merged duplicate, or into itself, is refused
    third = world.report(flow, T0 + 6 * 60_000)
    for target in (second, third):
        req = A.Request("merge", third, uuid.uuid4().hex, duplicate_of=target)
        with pytest.raises(A.ActionError) as err:
            A.perform(world.ctx, req, op, t, wait_s=0)
        assert err.value.code == "bad_value"
    # the live state counts the duplicate as closed at no level
    day_keys = world.r.keys(f"{world.s.redis.prefix}:d:*:closed_level")
    levels: dict[str, int] = {}
    for k in day_keys:
        for field, n in world.r.hgetall(k).items():
            area, _, lv = field.decode().rpartition("|")
            if area == world.grid["grid_id"]:
                levels[lv] = levels.get(lv, 0) + int(n)
    assert levels.get("duplicate", 0) >= 1


@pytest.mark.parametrize("flow", FLOWS, ids=IDS)
def test_verification_failed(world: World, flow: dict[str, Any]) -> None:
    op = world.street
    inc = world.report(flow, T0)
    t = T0 + 60_000
    unit = world.unit_for(stage(flow, "handle")["unit"])
    world.act(op, "accept", inc, t)
    world.act(op, "dispatch", inc, t + 1, unit_id=unit)
    world.act(op, "handle", inc, t + 2)
    world.act(op, "resolve", inc, t + 3, **records(flow, "handle"))
    world.act(op, "verify_fail", inc, t + 4, reason="现场仍有垃圾")
    assert world.row(inc)["status"] == "returned"
    world.act(op, "dispatch", inc, t + 5, unit_id=unit)
    world.act(op, "handle", inc, t + 6)
    world.act(op, "resolve", inc, t + 7, **records(flow, "handle"))
    world.act(op, "verify_pass", inc, t + 8, **records(flow, "verify"))
    world.act(op, "close", inc, t + 9, **records(flow, "close"))
    row = world.row(inc)
    assert (row["status"], row["n_returned"], row["n_verified"]) == ("closed", 1, 1)


def test_two_operators_at_once_one_wins_and_a_resubmission_writes_nothing(world: World) -> None:
    flow = FLOWS[0]
    inc = world.report(flow, T0)
    n = world.row(inc)["n_events"]
    a = A.Request("accept", inc, uuid.uuid4().hex, expected_events=n)
    b = A.Request("return", inc, uuid.uuid4().hex, expected_events=n, reason="不属实")
    first = A.perform(world.ctx, a, world.street, T0 + 1000, wait_s=20)
    assert first.status == "applied"
    again = A.perform(world.ctx, a, world.street, T0 + 2000, wait_s=20)
    assert again.status == "duplicate" and again.event_ids == first.event_ids
    with pytest.raises(A.ActionError) as err:
        A.perform(world.ctx, b, world.district, T0 + 1500, wait_s=0)
    assert err.value.code == "conflict"
    steps = [e["step"] for e in world.events(inc)]
    assert steps == ["reported", "accepted"]


def test_outside_scope_or_role_is_refused_and_audited(world: World) -> None:
    from pipelines.access import audit

    inc = world.report(FLOWS[0], T0)
    other = world.city.grids.filter(world.city.grids["street_id"] != world.grid["street_id"]).row(
        0, named=True
    )
    outsider = A.Actor("op9", "street_operator", other["street_id"])
    leader = A.Actor("boss", "city_leader", "city")
    for actor, code in ((outsider, "out_of_scope"), (leader, "not_allowed")):
        req = A.Request("accept", inc, uuid.uuid4().hex)
        with pytest.raises(A.ActionError) as err:
            A.perform(world.ctx, req, actor, T0 + 1000, wait_s=0)
        assert err.value.code == code
    rows = audit.query(world.engine, action="incident.refused", target=inc)
    assert set(rows["actor"]) == {"op9", "boss"}
