"""The incident workbench's forms and words (dashboard/pages/incidents/components.py):
what each action's form asks, read from the shipped flow file and the README's matrix
table; who sees a worker's name; the queue's rows in both languages."""

from __future__ import annotations

import tomllib

import polars as pl
import pytest

from dashboard.pages.incidents import acting as A
from dashboard.pages.incidents import components as C
from pipelines.dispatch.flows import DEFAULT_FILE, load_flows

FLOWS = tomllib.loads(DEFAULT_FILE.read_text("utf-8"))["flow"]
FIELD = {"note": "note", "photo": "photo", "onsite_check": "onsite", "level": "level"}
# The README's matrix: what each action records besides the flow stage it ends, and which
# stage it ends (a stage's requirements apply to the action that ends it).
RECORDS = {
    "accept": set(),
    "dispatch": {"unit_or_handler"},
    "handle": set(),
    "return": {"reason"},
    "escalate": {"reason"},
    "resolve": set(),
    "verify_pass": set(),
    "verify_fail": {"reason"},
    "close": set(),
    "merge": {"dup"},
}
ENDS = {"accept": "accept", "dispatch": "dispatch", "resolve": "handle"}
ENDS |= {"verify_pass": "verify", "close": "close"}
STATUS = {"accept": "reported", "dispatch": "accepted", "handle": "dispatched"}
STATUS |= {"return": "accepted", "escalate": "reported", "resolve": "handling"}
STATUS |= {"verify_pass": "resolved", "verify_fail": "resolved", "close": "verified"}
STATUS |= {"merge": "reported"}


@pytest.mark.parametrize("flow", FLOWS, ids=[f["id"] for f in FLOWS])
@pytest.mark.parametrize("action", list(RECORDS))
def test_each_form_asks_what_the_flow_file_and_the_matrix_say(flow: dict, action: str) -> None:
    incident = {
        "category": flow["category"],
        "severity": flow.get("min_severity", 1),
        "status": STATUS[action],
    }
    want = set(RECORDS[action])
    if action in ENDS:
        want |= {FIELD[r] for r in flow["stages"][ENDS[action]].get("requires", [])}
    assert C.required_fields(action, incident, load_flows()) == want
    shown = C.shown_fields(action, incident, load_flows())
    assert want - {"unit_or_handler"} <= shown
    if action == "dispatch":
        assert {"unit", "handler", "due", "reason"} <= shown


def test_names_only_for_roles_that_see_them() -> None:
    roster = {"W1": "王五"}
    assert C.person("W1", roster, True, "zh-CN") == "王五（W1）"
    assert C.person("W1", roster, False, "zh-CN") == "一名网格员"
    assert C.person("W1", roster, False, "en") == "a grid worker"
    assert C.person("op1", roster, False, "zh-CN") == "op1"  # an account acts as itself
    assert C.person(None, roster, True, "zh-CN") == "—"


def test_a_queue_row_in_words() -> None:
    frame = pl.DataFrame(
        {
            "incident_id": ["I1"],
            "status": ["dispatched"],
            "category": ["fire"],
            "severity": [4],
            "source": ["hotline"],
            "grid_id": ["G1"],
            "reported_ms": [1_793_000_000_000],
            "unit_id": ["U1"],
            "level": ["street"],
            "n_events": [3],
            "left_ms": [-90 * 60_000],
        }
    )
    zh = C.row_data(frame, "zh-CN", "Asia/Shanghai", {"G1": "一网格"}, {"U1": "消防救援大队"})[0]
    assert zh["status"] == "派遣" and zh["category"] == "消防" and zh["severity"] == "特别严重"
    assert zh["clock"] == "超时 1 小时 30 分" and zh["overdue"] is True
    assert zh["area"] == "一网格" and zh["unit"] == "消防救援大队" and zh["level"] == "街道"
    en = C.row_data(frame, "en", "Asia/Shanghai", {}, {})[0]
    assert en["clock"] == "overdue by 1 h 30 min" and en["source"] == "Hotline"


def test_a_request_from_a_form() -> None:
    form = A.form_state("dispatch", "I1", 3)
    assert A.valid_form(form) and A.REQUEST_ID.match(form["request_id"])
    assert A.form_state("dispatch", "I1", 3)["request_id"] != form["request_id"]
    req = A.request_of(
        form, {"unit": " U1 ", "due": 2, "reason": "夜间施工", "level": "nowhere"}, 1000
    )
    assert req.unit_id == "U1" and req.due_ms == 1000 + 2 * 3_600_000 and req.level is None
    assert req.expected_events == 3 and req.request_id == form["request_id"]
    assert not A.valid_form({**form, "request_id": "x"})
