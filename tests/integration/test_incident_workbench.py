"""The incident workbench's callbacks through Dash's own endpoint, on a real Redis and SQL
with a reports pipeline running: an incident reported in the stream is in the queue; a
street operator takes it through every step (accept → dispatch → handle → resolve →
verify → close) with exactly the records the shipped flow file asks; each outcome shows
at once in the queue and the detail (read-your-writes); a resubmitted form is one action;
a stale form is a conflict; a city leader reads but may not act."""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from dash import Dash
from sqlalchemy import insert

from dashboard.app import create_app
from pipelines.access import audit
from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.dispatch.flows import DEFAULT_FILE
from pipelines.dispatch.units import demo_units, units
from pipelines.spine.runner import make_worker
from pipelines.spine.store.schema import workers
from pipelines.spine.streams import publish
from tests.clock import Clock
from tests.conftest import (
    open_engine,
    private_database,
    private_prefix,
    settings_for,
    sign_in_client,
)

pytestmark = pytest.mark.integration

T0 = 1_793_000_000_000  # the app's clock (fixed); the pipeline's runs an hour later
DISPUTE = next(
    f for f in tomllib.loads(DEFAULT_FILE.read_text("utf-8"))["flow"] if f["id"] == "dispute"
)


@dataclass
class World:
    app: Dash
    city: City
    grid: dict[str, Any]
    r: redis.Redis
    stream: str
    engine: Any
    hold: threading.Lock  # held: the pipeline reads nothing (an action stays undecided)


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    city = demo_city(2026, n_grids=300)
    tmp = tmp_path_factory.mktemp("workbench")
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        s = settings_for(redis_url, prefix, db, tmp, streams={"block_ms": 50})
        engine = open_engine(db)
        r = redis.Redis.from_url(redis_url)
        g = city.grids.row(0, named=True)
        with engine.begin() as conn:
            conn.execute(insert(units), demo_units(city))
            conn.execute(
                insert(workers),
                [
                    {
                        "worker_id": "W-T1",
                        "name": "测试网格员",
                        "type": "full_time",
                        "grid_id": g["grid_id"],
                    }
                ],
            )
        w = make_worker(
            "reports",
            s,
            city,
            GridIndex(city),
            r,
            engine,
            "reports-wb",
            clock=lambda: T0 / 1000 + 3600,
        )
        stop, hold = threading.Event(), threading.Lock()

        def loop() -> None:
            while not stop.is_set():
                with hold:
                    w.step()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        app = create_app(s, city=city, r=r, clock=Clock(T0))
        try:
            yield World(app, city, g, r, f"{prefix}:{s.streams.reports}", engine, hold)
        finally:
            stop.set()
            thread.join(timeout=10)
            r.close()
            engine.dispose()


def report(w: World, inc: str, ago_min: int = 10) -> None:
    event = {
        "event_id": f"{inc}-r",
        "incident_id": inc,
        "ts": T0 - ago_min * 60_000,
        "step": "reported",
        "category": "dispute",
        "severity": 1,
        "source": "hotline",
        "lon": w.grid["lon"],
        "lat": w.grid["lat"],
        "reporter_id": "W-T1",
        "description": "楼道堆物纠纷",
    }
    publish(w.r, w.stream, [orjson.dumps(event)])
    from pipelines.dispatch.actions import load_incident

    end = time.monotonic() + 20
    while load_incident(w.engine, inc) is None:
        assert time.monotonic() < end, "the pipeline did not apply the report"
        time.sleep(0.02)


# ------------------------------------------------------------------ driving callbacks


def _spec(app: Dash, output: str, trigger: str | None = None) -> tuple[str, dict[str, Any]]:
    """The callback writing every one of ``output`` (names joined by "+"), and taking
    ``trigger`` as an input when given (several callbacks may write one output)."""
    app.server.test_client().get("/_dash-dependencies")
    found = []
    for key, spec in app.callback_map.items():
        names = [o.split("@")[0] for o in key.strip(".").split("...")]
        if all(x in names for x in output.split("+")):
            inputs = {f"{i['id']}.{i['property']}" for i in spec["inputs"]}
            found.append((trigger not in inputs, len(found), key, spec))
    if not found:
        raise AssertionError(output)
    _, _, key, spec = min(found)  # the one the trigger fires first, else the first
    return key, spec


DEFAULTS: dict[tuple[str, str], Any] = {
    ("shell-lang", "data"): "zh-CN",
    ("inc-tick", "n_intervals"): 1,
    ("inc-page", "data"): 0,
    ("inc-done", "data"): 0,
    ("inc-due", "value"): "all",
    ("inc-soon", "value"): 2,
    ("inc-sort", "value"): "due_ms",
    ("inc-size", "value"): 50,
}


def call(
    client: Any, app: Dash, output: str, trigger: str, values: dict[tuple[str, str], Any]
) -> tuple[int, dict[str, Any]]:
    """POST one callback as the browser would: every input and state from ``values`` (else
    a default, else None), ``trigger`` (``id.prop``) as the changed one."""
    key, spec = _spec(app, output, trigger)

    def entry(item: dict[str, Any]) -> Any:
        cid, prop = item["id"], item["property"]
        if cid.startswith("{"):
            pattern = json.loads(cid)
            got = values.get((pattern["type"], prop), [])
            return [{"id": {**pattern, **ids}, "property": prop, "value": v} for ids, v in got]
        value = values.get((cid, prop), DEFAULTS.get((cid, prop)))
        return {"id": cid, "property": prop, "value": value}

    outs = [
        {"id": o.split(".")[0], "property": o.split(".")[1].split("@")[0]}
        for o in key.strip(".").split("...")
    ]
    body = {
        "output": key,
        "outputs": outs if key.startswith("..") else outs[0],
        "inputs": [entry(i) for i in spec["inputs"]],
        "state": [entry(i) for i in spec.get("state", [])],
        "changedPropIds": [trigger],
    }
    resp = client.post(
        "/_dash-update-component",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Origin": "http://localhost"},
    )
    if resp.status_code != 200:
        return resp.status_code, {}
    return 200, json.loads(resp.get_data(as_text=True))["response"]


def queue(client: Any, app: Dash, **filters: Any) -> list[dict[str, Any]]:
    values = {(f"inc-{k}", "value"): v for k, v in filters.items()}
    code, out = call(client, app, "inc-grid.rowData", "inc-tick.n_intervals", values)
    assert code == 200
    return list(out["inc-grid"]["rowData"])


def detail(client: Any, app: Dash, inc: str) -> tuple[str, dict[str, Any]]:
    code, out = call(client, app, "inc-detail.children", "inc-sel.data", {("inc-sel", "data"): inc})
    assert code == 200
    shown = [out["inc-detail"]["children"], out["inc-more"]["children"]]
    return json.dumps(shown, ensure_ascii=False), out["inc-shown"]["data"]


def offered(client: Any, app: Dash, shown: dict[str, Any]) -> list[str]:
    code, out = call(
        client, app, "inca-btns.children", "inc-shown.data", {("inc-shown", "data"): shown}
    )
    assert code == 200
    kids = out["inca-btns"]["children"]
    kids = kids if isinstance(kids, list) else [kids]
    return [
        k["props"]["id"]["action"] for k in kids if isinstance(k.get("props", {}).get("id"), dict)
    ]


def open_form(client: Any, app: Dash, shown: dict[str, Any], action: str) -> dict[str, Any]:
    trig = json.dumps({"action": action, "type": "inca-btn"}, separators=(",", ":")) + ".n_clicks"
    values = {("inca-btn", "n_clicks"): [({"action": action}, 1)], ("inc-shown", "data"): shown}
    code, out = call(client, app, "inca-form.data+inca-unit.options", trig, values)
    assert code == 200
    return out


def submit_out(client: Any, app: Dash, form: dict[str, Any], **fields: Any) -> dict[str, Any]:
    values = {("inca-form", "data"): form, ("inca-submit", "n_clicks"): 1}
    values |= {(f"inca-{k}", "value"): v for k, v in fields.items()}
    output = "inca-msg.children+inc-done.data+inca-form.data"
    code, out = call(client, app, output, "inca-submit.n_clicks", values)
    assert code == 200
    return out


def submit(client: Any, app: Dash, form: dict[str, Any], **fields: Any) -> str:
    return str(submit_out(client, app, form, **fields)["inca-msg"]["children"])


def settle(client: Any, app: Dash, pending: Any, done: int = 0) -> tuple[int, dict[str, Any]]:
    """The page's tick asking how an undecided action ended."""
    values = {("inca-pending", "data"): pending, ("inc-done", "data"): done}
    return call(client, app, "inca-msg.children+inca-pending.data", "inc-tick.n_intervals", values)


# ------------------------------------------------------------------ the tests


def shown_fields(out: dict[str, Any]) -> set[str]:
    """The form fields the opened form shows (its boxes not hidden)."""
    return {
        cid[len("inca-f-") :]
        for cid, props in out.items()
        if cid.startswith("inca-f-") and props["style"].get("display") != "none"
    }


def required_shown(out: dict[str, Any]) -> set[str]:
    return {
        cid[len("inca-f-") :]
        for cid, props in out.items()
        if cid.startswith("inca-f-") and "borderLeft" in props["style"]
    }


def test_a_full_loop_as_a_street_operator(world: World) -> None:
    w, app = world, world.app
    op = sign_in_client(app.server.test_client(), "street_operator", w.grid["street_id"], "op1")
    inc = "I-WB-LOOP-1"
    report(w, inc)
    rows = queue(op, app)
    assert [r["id"] for r in rows] == [inc]
    accept_h = DISPUTE["stages"]["accept"]["hours"]
    # the accept stage entered 10 minutes ago: due in accept_h hours less 10 minutes
    left = accept_h * 60 - 10
    assert rows[0]["clock"] == (
        f"剩余 {left // 60} 小时 {left % 60} 分" if left >= 60 else f"剩余 {left} 分钟"
    )
    text, shown = detail(op, app, inc)
    assert "楼道堆物纠纷" in text and "测试网格员" in text  # a command centre sees names
    assert shown == {"id": inc, "n_events": 1}
    unit = f"{w.grid['street_id']}-community"
    requires = {s: set(DISPUTE["stages"][s].get("requires", [])) for s in DISPUTE["stages"]}
    field = {"note": "note", "photo": "photo", "onsite_check": "onsite", "level": "level"}
    steps = [
        ("accept", {}, "accepted", "accept"),
        ("dispatch", {"unit": unit}, "dispatched", "dispatch"),
        ("handle", {}, "handling", None),
        (
            "resolve",
            {"note": "已协调清理", "photo": "https://media.example.org/p/wb1.jpg"},
            "resolved",
            "handle",
        ),
        ("verify_pass", {"onsite": "W-T1"}, "verified", "verify"),
        ("close", {"level": "grid"}, "closed", "close"),
    ]
    for action, fields, status, stage in steps:
        _text, shown = detail(op, app, inc)
        assert action in offered(op, app, shown), (action, shown)
        out = open_form(op, app, shown, action)
        form = out["inca-form"]["data"]
        assert form["action"] == action and form["expected_events"] == shown["n_events"]
        # the form asks exactly what the flow file requires of the stage it ends
        want = {field[x] for x in requires[stage]} if stage else set()
        if action == "dispatch":
            want |= {"unit", "handler"}
        assert required_shown(out) == want, action
        assert want <= shown_fields(out)
        msg = submit(op, app, form, **fields)
        assert msg == "已生效", (action, msg)
        _text, after = detail(op, app, inc)  # read-your-writes: the detail at once
        assert after["n_events"] == shown["n_events"] + 1
        ids_now = [r["id"] for r in queue(op, app)]
        assert (inc in ids_now) == (status != "closed")
        if status != "closed":
            assert queue(op, app, status=[status])[0]["id"] == inc
    text, _ = detail(op, app, inc)
    for word in ("上报", "受理", "派遣", "处置", "办结", "核查", "结案", "已协调清理", "wb1.jpg"):
        assert word in text, word
    acts = audit.query(w.engine, actor="op1")
    assert {f"incident.{a}" for a, *_ in steps} <= set(acts["action"].to_list())


def test_a_resubmitted_form_is_one_action_and_a_stale_form_a_conflict(world: World) -> None:
    w, app = world, world.app
    op = sign_in_client(app.server.test_client(), "street_operator", w.grid["street_id"], "op2")
    inc = "I-WB-TWICE-1"
    report(w, inc)
    _t, shown = detail(op, app, inc)
    form = open_form(op, app, shown, "accept")["inca-form"]["data"]
    stale = open_form(op, app, shown, "return")["inca-form"]["data"]
    assert submit(op, app, form) == "已生效"
    assert submit(op, app, form) == "已提交过，未重复执行"  # a double click
    assert "已被他人处理" in submit(op, app, stale, reason="不属于本街道")
    _t, after = detail(op, app, inc)
    assert after["n_events"] == 2


def test_an_action_decided_late_shows_its_verdict_on_a_later_tick(world: World) -> None:
    """The pipeline is behind: the submit answers "being applied"; the page's next ticks
    ask again and show the verdict once there (it must not say "being applied" forever)."""
    w, app = world, world.app
    op = sign_in_client(app.server.test_client(), "street_operator", w.grid["street_id"], "op5")
    inc, other = "I-WB-LATE-1", "I-WB-LATE-2"
    report(w, inc)
    report(w, other)
    _t, shown = detail(op, app, inc)
    form = open_form(op, app, shown, "accept")["inca-form"]["data"]
    with w.hold:  # the pipeline reads nothing until the block ends
        out = submit_out(op, app, form)
        assert out["inca-msg"]["children"] == "已提交，正在处理"
        pending = out["inca-pending"]["data"]
        assert pending == {"incident_id": inc, "request_id": form["request_id"]}
        assert settle(op, app, pending) == (200, {})  # still undecided: nothing changes
    end = time.monotonic() + 20
    while (got := settle(op, app, pending, done=3)) == (200, {}):
        assert time.monotonic() < end, "the verdict never reached the page"
        time.sleep(0.05)
    code, after = got
    assert after["inca-msg"]["children"] == "已生效"
    assert after["inca-pending"]["data"] is None  # asked no more
    assert after["inc-done"]["data"] == 4  # the queue and the detail refresh
    # the same request named on another incident (one the viewer may act on) tells nothing
    assert settle(op, app, {"incident_id": other, "request_id": form["request_id"]}) == (200, {})
    # a viewer whose area does not hold the incident learns nothing of its actions
    far = next(
        g["street_id"]
        for g in w.city.grids.iter_rows(named=True)
        if g["street_id"] != w.grid["street_id"]
    )
    outsider = sign_in_client(app.server.test_client(), "street_operator", far, "op6")
    code, denied = settle(outsider, app, pending)
    assert code == 200 and denied["inca-msg"]["children"] == "无权执行此操作"
    assert denied["inca-pending"]["data"] is None
    # a forged pending value is dropped, not looked up
    code, forged = settle(op, app, {"incident_id": inc, "request_id": "x' OR 1=1 --"})
    assert code == 200 and forged["inca-pending"]["data"] is None


def test_a_city_leader_reads_the_queue_but_may_not_act(world: World) -> None:
    w, app = world, world.app
    leader = sign_in_client(app.server.test_client(), "city_leader", w.city.city_id, "boss")
    inc = "I-WB-LEADER-1"
    report(w, inc)
    assert inc in [r["id"] for r in queue(leader, app)]
    text, shown = detail(leader, app, inc)
    assert "测试网格员" not in text and "一名网格员" in text  # no names for a leader
    code, _ = call(
        leader, app, "inca-btns.children", "inc-shown.data", {("inc-shown", "data"): shown}
    )
    assert code == 403
    other = sign_in_client(app.server.test_client(), "street_operator", "320104-001", "op3")
    assert queue(other, app) == [] or inc not in [r["id"] for r in queue(other, app)]
    _t, nothing = detail(other, app, inc)
    assert nothing is None  # outside its street: refused (and audited)
    assert "denied" in set(audit.query(w.engine, actor="op3")["action"].to_list())


def test_bulk_dispatch_of_the_picked_rows(world: World) -> None:
    """Rows picked in the queue are dispatched to one unit together; picking makes one
    request id per incident, so pressing the button twice dispatches each once."""
    w, app = world, world.app
    op = sign_in_client(app.server.test_client(), "street_operator", w.grid["street_id"], "op4")
    incs = ["I-WB-BULK-1", "I-WB-BULK-2"]
    for inc in incs:
        report(w, inc)
        _t, shown = detail(op, app, inc)
        form = open_form(op, app, shown, "accept")["inca-form"]["data"]
        assert submit(op, app, form) == "已生效"
    picked = [{"id": inc, "n_events": 2} for inc in incs]
    code, out = call(
        op,
        app,
        "inca-bulk-form.data",
        "inc-grid.selectedRows",
        {("inc-grid", "selectedRows"): picked},
    )
    assert code == 200
    plan = out["inca-bulk-form"]["data"]
    assert sorted(plan) == incs and "2" in out["inca-bulk-msg"]["children"]
    unit = f"{w.grid['street_id']}-enforcement"
    values = {
        ("inca-bulk-form", "data"): plan,
        ("inca-bulk-unit", "value"): unit,
        ("inca-bulk-go", "n_clicks"): 1,
    }
    for _ in range(2):  # a double click
        code, out = call(
            op, app, "inca-bulk-msg.children+inc-done.data", "inca-bulk-go.n_clicks", values
        )
        assert code == 200
        assert out["inca-bulk-msg"]["children"] == "2 件成功，0 件未成功"
    for inc in incs:
        _t, after = detail(op, app, inc)
        assert after["n_events"] == 3  # accepted, then dispatched once
    rows = {r["id"]: r for r in queue(op, app, status=["dispatched"])}
    assert set(incs) <= set(rows) and all(rows[i]["unit"].endswith("综合执法队") for i in incs)


def test_an_incident_id_behind_a_number_opens_it_in_the_workbench(world: World) -> None:
    w, app = world, world.app
    inc = "I-WB-BEHIND-1"
    report(w, inc)
    cell = {"colId": "incident_id", "rowId": inc, "value": inc, "rowIndex": 0}
    values = {("asm-behind-table", "cellClicked"): cell}
    trig = "asm-behind-table.cellClicked"
    sup = sign_in_client(app.server.test_client(), "supervisor", w.grid["district_id"], "sup1")
    code, out = call(sup, app, "url.href", trig, values)
    assert code == 200 and out["url"]["href"] == f"/incidents/{inc}"
    other = next(d for d in w.city.ids("district") if d != w.grid["district_id"])
    far = sign_in_client(app.server.test_client(), "supervisor", other, "sup2")
    code, out = call(far, app, "url.href", trig, values)
    assert code in (200, 204) and inc not in str(out)  # outside its scope: no link

    assert "denied" in set(audit.query(w.engine, actor="sup2")["action"].to_list())
