"""Which tasks a worker's phone sees, what they ask and when they are due; the shape of
an answer; a refusal's HTTP status; the simulator's hand-over of incidents to the command
centres. Expectations come from the shipped flow file read here and from the rule text
(pipelines/gateway/tasks.py, issue 14 section 3)."""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

import orjson
import pytest

from pipelines.city import geography as geo
from pipelines.city import simulator as simulate
from pipelines.dispatch.flows import DEFAULT_FILE, load_flows
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.tasks import action_error, parse_answer, tasks_of, verify_assignee
from pipelines.settings import SimulateSettings
from tests.clock import named

H = 3_600_000
T0 = named("thu-10:00").ms
FLOWS = load_flows()
RAW = {f["id"]: f for f in tomllib.loads(DEFAULT_FILE.read_text("utf-8"))["flow"]}
ROSTER = {"W1": "G1", "W2": "G1", "W0": "G1", "W9": "G9"}


def inc(incident_id: str, status: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "incident_id": incident_id,
        "status": status,
        "category": "dispute",
        "severity": 1,
        "grid_id": "G1",
        "lon": 114.05,
        "lat": 22.55,
        "description": "邻里噪音纠纷",
        "handler_id": "W1",
        "reported_ms": T0,
        "dispatched_ms": T0 + H,
        "stage_ms": T0 + H,
        "last_ms": T0 + H,
        "n_events": 3,
    }
    return {**row, **kw}


def test_handle_tasks_are_the_workers_dispatched_and_handling_incidents() -> None:
    handled = [
        inc("A", "dispatched"),
        inc("B", "handling", stage_ms=T0 + 2 * H, last_ms=T0 + 2 * H, n_events=4),
        inc("C", "accepted", dispatched_ms=None),  # not dispatched yet
        inc("D", "dispatched", handler_id="W2"),  # someone else's
    ]
    got = {t.incident_id: t for t in tasks_of("W1", handled, [], ROSTER, FLOWS)}
    assert set(got) == {"A", "B"}
    handle_h = RAW["dispute"]["stages"]["handle"]["hours"]
    # the handle stage runs from the dispatch, also while handling
    assert got["A"].due_ms == T0 + H + handle_h * H
    assert got["B"].due_ms == T0 + H + handle_h * H
    assert got["A"].actions == ("handle",) and got["A"].requires == ()
    assert got["B"].actions == ("resolve",)
    assert set(got["B"].requires) == set(RAW["dispute"]["stages"]["handle"]["requires"])
    j = got["B"].as_json()
    assert j["requires"] == ["note", "photo_url"] and j["n_events"] == 4
    assert j["place"] == {"lon": 114.05, "lat": 22.55, "grid_id": "G1"}
    assert j["task"] == "handle" and j["description"] == "邻里噪音纠纷"


def test_a_dispatch_deadline_override_sets_the_handle_due() -> None:
    (t,) = tasks_of("W1", [inc("A", "dispatched", due_ms=T0 + 5 * H)], [], ROSTER, FLOWS)
    assert t.due_ms == T0 + 5 * H


def test_verify_goes_to_the_handler_of_the_grid_else_the_grids_first_worker() -> None:
    resolved = [
        inc("R1", "resolved", handler_id="W2", stage_ms=T0 + 9 * H),
        inc("R2", "resolved", handler_id="H-street-1", stage_ms=T0 + 9 * H),
        inc("R3", "resolved", handler_id="W9"),  # W9's own grid is G9: not this grid's
        inc("R4", "verified", handler_id="W2"),
    ]
    for_w2 = {t.incident_id for t in tasks_of("W2", [], resolved, ROSTER, FLOWS)}
    for_w0 = {t.incident_id for t in tasks_of("W0", [], resolved, ROSTER, FLOWS)}
    for_w1 = {t.incident_id for t in tasks_of("W1", [], resolved, ROSTER, FLOWS)}
    assert for_w2 == {"R1"}
    assert for_w0 == {"R2", "R3"}  # W0 sorts first among G1's roster
    assert for_w1 == set()
    (t,) = [t for t in tasks_of("W2", [], resolved, ROSTER, FLOWS) if t.incident_id == "R1"]
    verify_h = RAW["dispute"]["stages"]["verify"]["hours"]
    assert t.due_ms == T0 + 9 * H + verify_h * H
    assert t.actions == ("verify_pass", "verify_fail") and t.task == "verify"
    assert verify_assignee({"grid_id": "G5", "handler_id": "X"}, ROSTER) is None


def test_tasks_most_urgent_first() -> None:
    late = inc("late", "dispatched", dispatched_ms=T0 + 10 * H, stage_ms=T0 + 10 * H)
    handled = [late, inc("soon", "dispatched")]
    assert [t.incident_id for t in tasks_of("W1", handled, [], ROSTER, FLOWS)] == [
        "soon",
        "late",
    ]


def body(**kw: Any) -> bytes:
    return orjson.dumps({"action": "handle", "request_id": "req-0001", **kw})


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"not json", "JSON"),
        (b"[]", "object"),
        (body(action="close"), "action"),
        (body(action="dispatch"), "action"),
        (body(request_id="short"), "request_id"),
        (body(request_id="has space in it"), "request_id"),
        (body(note=5), "note"),
        (body(note="x" * 2001), "note"),
        (body(ts=T0 + H), "ts"),  # in the future
        (body(ts=T0 - 40 * 24 * H), "ts"),  # older than 30 days
        (body(expected_events="3"), "expected_events"),
    ],
)
def test_a_malformed_answer_is_refused_400_naming_what(raw: bytes, field: str) -> None:
    with pytest.raises(GatewayError) as err:
        parse_answer(raw, T0, 30 * 24 * H, 60_000)
    assert err.value.status == 400 and field in err.value.description


def test_an_answer_keeps_its_records() -> None:
    a = parse_answer(
        body(action="resolve", note=" 已处置 ", photo_url="https://p.example/1.jpg", ts=T0 - H),
        T0,
        30 * 24 * H,
        60_000,
    )
    assert (a.action, a.note, a.photo_url, a.ts_ms) == (
        "resolve",
        "已处置",
        "https://p.example/1.jpg",
        T0 - H,
    )


@dataclasses.dataclass
class Refusal(Exception):
    code: str
    detail: str


@pytest.mark.parametrize(
    "code, status",
    [
        ("not_found", 404),
        ("not_assigned", 403),
        ("not_allowed", 403),
        ("out_of_scope", 403),
        ("wrong_stage", 409),
        ("conflict", 409),
        ("missing_record", 422),
        ("bad_value", 400),
    ],
)
def test_refusals_map_to_http_statuses(code: str, status: int) -> None:
    err = action_error(Refusal(code, "photo_url is required"))
    assert (err.status, err.code, err.description) == (status, code, "photo_url is required")


# ------------------------------------------------------------------ the simulator's hand-over


def small(**kw: Any) -> SimulateSettings:
    base = dataclasses.replace(
        SimulateSettings(), seed=5, workers=300, cameras=60, incidents_per_day=6000
    )
    return dataclasses.replace(base, malformed_share=0.0, anomalies=False, **kw)


def test_handed_over_incidents_are_only_reported_and_the_rest_is_unchanged() -> None:
    city = geo.demo_city(2026, n_grids=300)
    end = T0 + 3 * H
    plain = simulate.Simulator(city, small(command_share=1.0), FLOWS, T0)
    cmd = simulate.Simulator(city, small(command_share=1.0), FLOWS, T0, command=True)
    a, b = plain.advance(end), cmd.advance(end)
    assert not plain.commanded  # without a command centre nothing is handed over
    handed = {inc.incident_id for _, inc in cmd.commanded}
    assert handed
    steps: dict[str, set[str]] = {}
    for feed, p in b:
        if feed == "reports":
            ev = orjson.loads(p)
            steps.setdefault(ev["incident_id"], set()).add(ev["step"])
    assert all(steps.get(i, set()) <= {"reported"} for i in handed)
    # every handed-over incident's grid has a roster worker, its handler
    roster = dict(zip(cmd.roster["worker_id"], cmd.roster["grid_id"], strict=True))
    for _, inc in cmd.commanded:
        assert roster[inc.handler_id] == cmd.grid_ids[inc.grid]
    # the other feeds are byte for byte the same
    assert [x for x in a if x[0] != "reports"] == [x for x in b if x[0] != "reports"]
