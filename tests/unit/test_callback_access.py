"""The callback-side access helpers: the decision comes first, caches hold data keyed by what
it is (area, inputs, data class), and nothing reads the shared cache without a granted
decision."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask, g

from dashboard import auth
from dashboard.backend import Backend
from pipelines.access import accounts
from pipelines.city.geography import City, demo_city
from pipelines.settings import load_settings

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
# README "Accounts, scope and audit" and "Privacy": only the command centres see individual
# workers (positions, names, tracks); every role but admin reads the aggregates of its
# scope.
COMMAND_CENTRES = {"district_commander", "street_operator"}


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


@pytest.fixture
def as_user(city: City) -> Iterator[Any]:
    app = Flask(__name__)
    app.secret_key = "unit"

    def sign(role: str, scope: str, username: str = "u") -> Any:
        ctx = app.test_request_context("/")
        ctx.push()
        # the request's loaded session, as the guard resolves it from the cookie's id
        g.wg_session = SimpleNamespace(
            username=username, role=role, scope=scope, display_name=username, wall=False
        )
        pushed.append(ctx)
        return ctx

    pushed: list[Any] = []
    yield sign
    for ctx in reversed(pushed):
        ctx.pop()


@pytest.mark.parametrize("role", sorted(accounts.ROLES))
def test_may_see_follows_the_written_rule(role: str) -> None:
    for kind in ("positions", "names", "tracks"):
        assert auth.may_see(kind, role) == (role in COMMAND_CENTRES), (role, kind)
    # every role reads the aggregates of its scope, except the administrator, who manages
    # accounts and reads the audit log only (README "Accounts, scope and audit")
    assert auth.may_see("aggregates", role) == (role != "admin")
    assert not auth.may_see("positions", "nobody") and not auth.may_see("aggregates", "")
    with pytest.raises(KeyError):
        auth.may_see("position", role)  # a typo must not silently deny (or allow)


def test_ids_with_lone_surrogates_are_refused_and_still_printable() -> None:
    assert auth.clean_id("320104-001") == "320104-001"
    for bad in ("320104\ud800", "", None, 320104, ["320104"], {"a": 1}, "x" * 129):
        assert auth.clean_id(bad) is None, bad
    text = auth.safe_text("320104\ud800")
    assert text == "320104\\ud800" and text.encode("utf-8")
    assert auth.safe_text({"area": "a\udfff"}).encode("utf-8")


def test_authorize_decides_from_the_session(city: City, as_user: Any) -> None:
    street = city.children("320104")[0]
    as_user("district_commander", "320104")
    got = auth.authorize(street, "aggregates", city=city)
    assert got.granted and got.area_id == street and got.may("positions")
    assert got.data_class == "incidents+names+positions+tracks"
    for area, why in (
        ("320102", "area outside scope"),
        ("320104\ud800", "unknown area"),
        ("nope", "unknown area"),
        (None, "unknown area"),
    ):
        d = auth.authorize(area, "aggregates", city=city)
        assert not d.granted and d.why == why and not d.may("incidents")
        assert d.area_id.encode("utf-8")  # always storable (the audit row's target)
    as_user("city_leader", city.city_id)
    leader = auth.authorize(street, "aggregates", city=city)
    assert leader.granted and not leader.may("positions") and leader.may("incidents")
    assert leader.data_class == "incidents" != got.data_class
    assert auth.authorize(street, "tracks", city=city).why == "role city_leader may not see tracks"


def _backend(city: City) -> Backend:
    base = load_settings(environ={})
    s = dataclasses.replace(base, dashboard=dataclasses.replace(base.dashboard, refresh_s=5.0))
    return Backend(s, city, redis.Redis(port=1), engine=None, clock=lambda: 1_000.0)  # type: ignore[arg-type]


def test_cached_needs_a_granted_decision_and_keys_by_data_class(city: City, as_user: Any) -> None:
    b = _backend(city)
    street = city.children("320104")[0]
    calls: list[str] = []

    def compute(tag: str) -> Any:
        calls.append(tag)
        return tag

    as_user("district_commander", "320102")
    refused = auth.authorize(street, "aggregates", city=city)
    with pytest.raises(PermissionError):
        b.cached(refused, "pan", lambda: compute("refused"))
    assert calls == []  # no lookup, no computation for a refusal
    as_user("district_commander", "320104")
    cmd = auth.authorize(street, "aggregates", city=city)
    as_user("city_leader", city.city_id)
    leader = auth.authorize(street, "aggregates", city=city)
    assert b.cached(cmd, "pan", lambda: compute("people"), "open") == "people"
    assert b.cached(leader, "pan", lambda: compute("counts"), "open") == "counts"
    assert b.cached(cmd, "pan", lambda: compute("again"), "open") == "people"  # shared
    assert b.cached(cmd, "pan", lambda: compute("other metric"), "overdue") == "other metric"
    assert calls == ["people", "counts", "other metric"]


def node_is_cache(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "cache"


def _cache_users(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        value = node.value if isinstance(node, ast.Attribute) else None
        if node_is_cache(node) and not (isinstance(value, ast.Name) and value.id == "functools"):
            yield f"{path.relative_to(DASHBOARD.parent)}:{node.lineno}"
        if isinstance(node, ast.Name) and node.id == "SharedCache":
            yield f"{path.relative_to(DASHBOARD.parent)}:{node.lineno}"


def test_only_the_backend_touches_the_shared_cache() -> None:
    """Pages reach shared values only through ``Backend.cached`` (a granted decision first):
    a new callback cannot read the cache without deciding the viewer's permission."""
    found = [
        hit
        for path in sorted(DASHBOARD.rglob("*.py"))
        if path.name != "backend.py"
        for hit in _cache_users(path)
    ]
    assert found == [], found
