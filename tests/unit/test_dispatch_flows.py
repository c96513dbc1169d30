"""Standard processing flows: the shipped file and the checks on a city's own.

Expectations come from the flow file read here with ``tomllib`` and from the rules in
the file's own header (the flow with the highest min_severity not above the severity
applies; stage deadlines add up; severity-1 flows add up to the category's closure
deadline), not from the loader under test.
"""

from __future__ import annotations

import copy
import itertools
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipelines.dispatch import flows as F
from pipelines.dispatch.units import UNIT_TYPES
from pipelines.spine.events import CATEGORIES, LEVELS, SEVERITIES, STEPS

RAW = tomllib.loads(F.DEFAULT_FILE.read_text(encoding="utf-8"))
STAGE_ORDER = ["accept", "dispatch", "handle", "verify", "close"]


def _expected_flow(category: str, severity: int) -> dict[str, Any]:
    fits = [f for f in RAW["flow"] if f["category"] == category]
    fits = [f for f in fits if f.get("min_severity", 1) <= severity]
    return max(fits, key=lambda f: f.get("min_severity", 1))


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("category", CATEGORIES)
def test_every_incident_gets_the_flow_the_rule_names(category: str, severity: int) -> None:
    want = _expected_flow(category, severity)
    got = F.load_flows().select(category, severity)
    assert got.id == want["id"]
    assert got.total_hours == pytest.approx(sum(want["stages"][s]["hours"] for s in STAGE_ORDER))


# The shipped file's header: "The stage deadlines of the severity-1 flows add up to the
# category's closure deadline: fire 2 h, public order 12 h, safety hazards and sanitation
# 24 h, city management 48 h, disputes, livelihood and other 72 h; accept within 1 h and
# dispatch within 2 h of that."
CLOSURE_H = {"fire": 2, "public_order": 12, "safety_hazard": 24, "sanitation": 24}
CLOSURE_H |= {"city_management": 48, "dispute": 72, "livelihood": 72, "other": 72}


@pytest.mark.parametrize("category", CATEGORIES)
def test_shipped_flows_say_what_their_header_says(category: str) -> None:
    """The severity-1 flow adds up to the closure deadline the header names; every flow
    accepts within 1 h and dispatches within 2 h."""
    flow = F.load_flows().select(category, 1)
    assert flow.total_hours == pytest.approx(CLOSURE_H[category])
    for f in F.load_flows().flows:
        assert f.stage("accept").hours <= 1
        assert f.stage("dispatch").hours <= 2


def test_shipped_flows_name_known_units_requirements_and_levels() -> None:
    for f in RAW["flow"]:
        assert f["category"] in CATEGORIES
        assert set(f["escalation"]) <= set(LEVELS)
        for name, stage in f["stages"].items():
            assert name in STAGE_ORDER and stage["unit"] in UNIT_TYPES
            assert set(stage.get("requires", [])) <= set(F.REQUIREMENTS)


def test_hours_until_a_step_add_the_stages_up_to_it() -> None:
    flow = F.load_flows().select("fire", 4)
    raw = _expected_flow("fire", 4)["stages"]
    total = 0.0
    steps = ["accepted", "dispatched", "resolved", "verified", "closed"]
    for name, step in zip(STAGE_ORDER, steps, strict=True):
        total += raw[name]["hours"]
        assert step in STEPS
        assert flow.hours_until(step) == pytest.approx(total)


def test_escalation_moves_one_level_up_and_stops_at_the_top() -> None:
    for f in F.load_flows().flows:
        path = list(f.escalation)
        for lower, upper in itertools.pairwise(path):
            assert f.next_level(lower) == upper
        assert f.next_level(path[-1]) is None
        assert [LEVELS.index(x) for x in path] == sorted(LEVELS.index(x) for x in path)


# ------------------------------------------------------------------ a city's own file
# Each case breaks a copy of the shipped document in one way; the loader must refuse it
# and say where. Cases: (name, mutate(doc), a fragment the problem list must contain).


def _fire(doc: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in doc["flow"] if f["id"] == "fire")


def _set(path: list[Any], value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = _fire(doc)
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


_DELETE = object()
BROKEN: list[tuple[str, Any, str]] = [
    ("stage missing", _set(["stages", "verify"], _DELETE), "flow 'fire': stage 'verify': missing"),
    ("unknown stage", _set(["stages", "triage"], {"hours": 1, "unit": "street"}), "unknown stages"),
    ("stage typo key", _set(["stages", "handle", "hour"], 2), "unknown keys ['hour']"),
    ("zero hours", _set(["stages", "handle", "hours"], 0), "stage 'handle': hours must be more"),
    ("negative hours", _set(["stages", "accept", "hours"], -1), "stage 'accept': hours must be"),
    ("nan hours", _set(["stages", "accept", "hours"], math.nan), "stage 'accept': hours must be"),
    ("text hours", _set(["stages", "close", "hours"], "2"), "hours must be a number"),
    ("bool hours", _set(["stages", "close", "hours"], True), "hours must be a number"),
    ("absurd hours", _set(["stages", "close", "hours"], 1e6), "at most 2160"),
    ("unknown unit", _set(["stages", "handle", "unit"], "army"), "unit 'army' is not a unit type"),
    ("unknown record", _set(["stages", "handle", "requires"], ["selfie"]), "requires must list"),
    ("unknown category", _set(["category"], "aliens"), "category 'aliens' is not one of"),
    ("no names", _set(["name_zh"], ""), "name_zh and name_en are required"),
    ("severity 5", _set(["min_severity"], 5), "min_severity must be one of"),
    ("severity bool", _set(["min_severity"], True), "min_severity must be one of"),
    ("levels reversed", _set(["escalation"], ["district", "street"]), "escalation must list"),
    ("unknown level", _set(["escalation"], ["grid", "city"]), "escalation must list"),
    ("flow typo key", _set(["escalate_after"], 1), "unknown keys ['escalate_after']"),
    ("no escalate time", _set(["escalate_after_hours"], _DELETE), "escalate_after_hours must"),
]


CASES = {name: (mutate, fragment) for name, mutate, fragment in BROKEN}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_flow_is_refused_saying_where(case: str) -> None:
    mutate, fragment = CASES[case]
    doc = copy.deepcopy(RAW)
    mutate(doc)
    with pytest.raises(F.FlowError) as err:
        F.parse_flows(doc, "city.toml")
    assert any(fragment in p for p in err.value.problems), err.value.problems
    assert str(err.value).startswith("city.toml: ")


def test_every_problem_is_listed_at_once() -> None:
    doc = copy.deepcopy(RAW)
    _fire(doc)["stages"]["handle"]["unit"] = "army"
    doc["flow"][0]["stages"]["close"]["hours"] = 0
    with pytest.raises(F.FlowError) as err:
        F.parse_flows(doc)
    assert len(err.value.problems) == 2


def test_a_category_left_without_a_flow_is_refused() -> None:
    doc = copy.deepcopy(RAW)
    doc["flow"] = [f for f in doc["flow"] if f["category"] != "sanitation"]
    with pytest.raises(F.FlowError, match="category 'sanitation' has no flow from severity 1"):
        F.parse_flows(doc)
    only_serious = copy.deepcopy(RAW)
    only_serious["flow"] = [f for f in only_serious["flow"] if f["id"] != "fire"]
    with pytest.raises(F.FlowError, match="'fire' has no flow from severity 1"):
        F.parse_flows(only_serious)


def test_two_flows_for_one_case_or_one_id_are_refused() -> None:
    doc = copy.deepcopy(RAW)
    twin = copy.deepcopy(_fire(doc))
    doc["flow"].append(twin)
    with pytest.raises(F.FlowError) as err:
        F.parse_flows(doc)
    assert any("id used twice" in p for p in err.value.problems)
    assert any("a second flow for fire from severity 1" in p for p in err.value.problems)


def test_files_that_are_not_flows(tmp_path: Path) -> None:
    with pytest.raises(F.FlowError, match="file not found"):
        F.load_flows(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[flow]\nid = 1", encoding="utf-8")
    with pytest.raises(F.FlowError, match="not valid TOML"):
        F.load_flows(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("title = 'x'\n", encoding="utf-8")
    with pytest.raises(F.FlowError, match="no \\[\\[flow\\]\\] tables"):
        F.load_flows(empty)


def test_a_city_file_round_trips(tmp_path: Path) -> None:
    """A copy of the shipped file with one deadline changed is read with that deadline."""
    text = F.DEFAULT_FILE.read_text(encoding="utf-8")
    own = tmp_path / "flows.toml"
    own.write_text(text.replace("hours = 57", "hours = 50", 1), encoding="utf-8")
    flows = F.load_flows(own)
    assert flows.select("dispute", 1).stage("handle").hours == 50
    assert flows.source == str(own)
