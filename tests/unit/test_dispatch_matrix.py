"""The role × scope × stage matrix: the README's table is the code's, cell by cell, and
every (role, action, status, level, place) combination is decided as the table says.

The expected answers are read from the README (the written policy) and the lifecycle rules
(``events.TRANSITIONS``), never from ``pipelines/dispatch/matrix.py`` itself."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from pipelines.access import policy
from pipelines.city.geography import City, demo_city
from pipelines.dispatch import actions as A
from pipelines.dispatch import matrix as M
from pipelines.dispatch.flows import load_flows
from pipelines.spine.events import LEVELS, STEPS, TRANSITIONS, reachable_pairs

README = Path(__file__).resolve().parents[2] / "README.md"


def _table(header: str) -> list[list[str]]:
    """The rows of the README table whose header row starts with ``| header |``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header} |"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip()[1:-1].split("|")])
    return rows


def _words(cell: str) -> list[str]:
    return [w for w in re.split(r"[,\s]+", cell) if w]


ACTION_ROWS = {r[0].split()[0]: r for r in _table("action | writes step")}
ROLE_ROWS = _table("role | actions | at levels")


def readme_roles() -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
    """role → (actions, levels) as the README says."""
    out: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}
    for role_cell, acts, levels, _where in ROLE_ROWS:
        names = [w for w in _words(role_cell.split("(")[0]) if w]
        if acts == "none":
            allowed: frozenset[str] = frozenset()
        elif acts == "all":
            allowed = frozenset(ACTION_ROWS)
        else:
            allowed = frozenset(_words(acts))
        lv = tuple(LEVELS) if levels in ("any", "") else tuple(_words(levels))
        for n in names:
            out[n] = (allowed, lv)
    return out


def test_the_readme_table_is_the_code() -> None:
    assert list(ACTION_ROWS) == list(M.ACTIONS)
    for action, (_, step, froms, _records) in ACTION_ROWS.items():
        assert M.STEP_OF[action] == step, action
        assert M.FROM[action] == frozenset(_words(froms)), action
    roles = readme_roles()
    assert set(roles) >= set(policy.ROLES) | {M.GRID_WORKER}
    for role, (allowed, _) in roles.items():
        assert M.ROLE_ACTIONS.get(role, frozenset()) == allowed, role


def test_every_action_follows_the_lifecycle() -> None:
    """An action's step is a lifecycle transition from each status it is offered in (a
    merge closes from anywhere: "closed" is reachable from every open status)."""
    reach = reachable_pairs()
    for action in M.ACTIONS:
        for status in M.FROM[action]:
            assert status in STEPS and status != "closed"
            step = M.STEP_OF[action]
            if action == "merge":
                assert (status, step) in reach
            else:
                assert step in TRANSITIONS[status], (action, status)


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def test_every_role_action_status_level_and_place(city: City) -> None:
    """Exhaustive: every role (accounts and the phone) × action × status × level × inside
    or outside its scope × own task or not, decided as the README's tables say."""
    flows = load_flows()
    roles = readme_roles()
    g = city.grids.row(0, named=True)
    other = city.grids.filter(city.grids["district_id"] != g["district_id"]).row(0, named=True)
    scopes = {
        "street_operator": g["street_id"],
        "district_commander": g["district_id"],
        M.GRID_WORKER: g["grid_id"],
        "city_leader": "city",
        "supervisor": "city",
        "admin": "city",
        "wall": "city",
    }
    statuses = [s for s in STEPS]
    n = 0
    for role, action, status, level, inside, own in itertools.product(
        scopes, M.ACTIONS, statuses, LEVELS, (True, False), (True, False)
    ):
        place = g if inside else other
        inc = {
            "incident_id": "I1",
            "status": status,
            "level": level,
            "category": "sanitation",
            "severity": 2,
            "grid_id": place["grid_id"],
            "street_id": place["street_id"],
            "district_id": place["district_id"],
            "handler_id": "W1" if own else "W2",
            "n_events": 3,
        }
        actor = A.Actor("W1" if role == M.GRID_WORKER else "u1", role, scopes[role])
        allowed, levels = roles[role]
        expect = (
            action in allowed
            and status in _words(ACTION_ROWS[action][2])
            and level in levels
            # a grid worker: its own task anywhere, or an on-site check in its own grid
            and (
                inside if role != M.GRID_WORKER else own or (inside and action.startswith("verify"))
            )
            # escalation needs a level above (the shipped flows go up to district)
            and not (action == "escalate" and level == "district")
        )
        got = action in A.offered(inc, actor, flows, city)
        assert got == expect, (role, action, status, level, inside, own)
        n += 1
    assert n == len(scopes) * len(M.ACTIONS) * len(STEPS) * len(LEVELS) * 4


def test_policy_and_matrix_name_the_same_acting_roles() -> None:
    acting = M.acting_roles()
    assert acting == {"street_operator", "district_commander"}
    for role in acting:
        assert policy.may(role, "incidents")
