"""The written policy (role × kind of data): one table in code, the same in the README."""

from __future__ import annotations

import re

import pytest

from pipelines.access import accounts, policy
from pipelines.settings import ROOT


def readme_table() -> dict[str, frozenset[str]]:
    """The README's policy table: role → kinds ticked."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Accounts, scope and audit") :]
    section = section[: section.index("\n## ", 5)]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    header = next(ln for ln in lines if ln.startswith("| kind of data |"))
    roles = [c.strip() for c in header.strip("|").split("|")][1:]
    out: dict[str, set[str]] = {r: set() for r in roles}
    for line in lines:
        m = re.match(r"\| `([a-z_]+)` — ", line)
        if not m:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == len(roles), line
        for role, cell in zip(roles, cells, strict=True):
            assert cell in ("✓", "–"), (line, cell)
            if cell == "✓":
                out[role].add(m.group(1))
    return {r: frozenset(k) for r, k in out.items()}


def test_the_readme_shows_the_table_in_code() -> None:
    assert readme_table() == policy.TABLE


def test_every_kind_is_in_the_readme() -> None:
    seen = set().union(*readme_table().values())
    assert seen == set(policy.KINDS)  # every kind is granted to someone


def test_the_command_centre_sense_of_the_table() -> None:
    """Derived from the brief's rules, not from the table itself."""
    individuals = {"positions", "names", "tracks"}
    for role in policy.ROLES:
        sees = {k for k in individuals if policy.may(role, k)}
        assert sees == (individuals if role in ("district_commander", "street_operator") else set())
    assert policy.TABLE["admin"] == {"audit", "users"}
    assert policy.TABLE["wall"] == {"aggregates"}
    assert policy.may("supervisor", "scorecards") and policy.may("supervisor", "exports")
    assert not policy.may("city_leader", "warning_actions")
    for role in policy.ROLES:  # acting on warnings is exactly what RoleSpec.can_act says
        assert accounts.ROLES[role].can_act == policy.may(role, "warning_actions")


def test_unknown_kinds_raise_and_unknown_roles_see_nothing() -> None:
    with pytest.raises(policy.UnknownKind):
        policy.may("city_leader", "positons")
    assert not policy.may("mayor", "aggregates") and not policy.may(None, "aggregates")
    assert policy.roles_for("tracks") == {"district_commander", "street_operator"}


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/", "panorama"),
        ("/area/320102", "panorama"),
        ("/work", "work"),
        ("/work/320102-001", "work"),
        ("/warnings", "warnings"),
        ("/incidents", "incidents"),
        ("/incidents/INC-1", "incidents"),
        ("/assessment", "assessment"),
        ("/wall", "wall"),
        ("/wall/320102", "wall"),
        ("/admin/audit", "audit"),
        ("/nope", None),
        ("/wallpaper", None),
        ("/areas", None),
    ],
)
def test_pages_of_paths(path: str, page: str | None) -> None:
    found = policy.page_of(path)
    assert (found.name if found else None) == page


def test_kiosks_open_kiosk_pages_only_and_homes() -> None:
    assert policy.may_open("wall", "wall") and not policy.may_open("wall", "panorama")
    assert policy.may_open("city_leader", "wall")  # people may look at the wall screen
    assert not policy.may_open("admin", "panorama") and policy.may_open("admin", "audit")
    homes = {r: policy.home(r) for r in policy.ROLES}
    assert homes["admin"] == "/admin/audit" and homes["wall"] == "/wall"
    assert homes["city_leader"] == homes["district_commander"] == "/"


def test_acting_on_incidents_is_the_dispatch_matrix() -> None:
    """The roles that may act on incidents on the dashboard are the command centres: those
    with any action in the dispatch matrix, less the grid worker (who acts from a phone,
    through the gateway, on its own tasks only)."""
    assert policy.roles_for("incident_actions") == {"district_commander", "street_operator"}
    assert policy.may_open("city_leader", "incidents") and policy.may_open(
        "supervisor", "incidents"
    )
    assert not policy.may_open("wall", "incidents") and not policy.may_open("admin", "incidents")
    matrix = pytest.importorskip("pipelines.dispatch.matrix")
    acting = {r for r, acts in matrix.ROLE_ACTIONS.items() if acts} - {"grid_worker"}
    assert acting == policy.roles_for("incident_actions")
