"""Every role × every route, page and callback answers as the policy table says.

Generated: the routes come from the app's URL map and the callbacks from its callback
registry, the expectation from :mod:`pipelines.access.policy` (the table the README
shows) and from what each route serves, stated here. A new route or callback the test
does not know how to drive fails it (it must be added to ``ROUTES`` or ``PREFIXES``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine

from dashboard.app import create_app
from pipelines.access import accounts, policy
from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine import store
from tests.conftest import sign_in_client
from tests.integration.test_access import _body

pytestmark = pytest.mark.integration

MINE = "320102"
WORKER = "WPOLICY1"


def scopes(city: City) -> dict[str, str]:
    """Each role's account scope: inside the district ``MINE`` where the role allows."""
    street = city.children(MINE)[0]
    return {
        "city_leader": city.city_id,
        "district_commander": MINE,
        "street_operator": street,
        "supervisor": MINE,
        "admin": city.city_id,
        "wall": MINE,
    }


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    now = int(time.time() * 1000)
    for role, scope in scopes(city).items():
        pw = None if role == "wall" else "pass-word-123"
        accounts.create_user(engine, city, role.replace("_", "-"), role, scope, pw, now_ms=now)
    grid = city.children(scopes(city)["street_operator"])[0]  # inside every role's scope
    with engine.begin() as conn:
        conn.execute(
            store.workers.insert(),
            [{"worker_id": WORKER, "name": "策略", "type": "full_time", "grid_id": grid}],
        )
    return create_app(live_settings, city=city, r=rclient)


@dataclass(frozen=True)
class Served:
    """What a route serves, and a URL for a role (its own scope)."""

    url: Callable[[str, City], str]
    kind: str | None = None  # a kind of data (policy.may)
    page: str | None = None  # a page (policy.may_open)
    city_wide: bool = False  # data of the whole city: only roles whose scope may be the city
    public: bool = False


def _grid(scope: str, city: City) -> str:
    return city.children(city.children(MINE)[0])[0]


# What each Flask endpoint serves — the test's own statement, from the README.
ROUTES: dict[str, Served] = {
    "static": Served(lambda s, c: "/static/none.css", public=True),
    "_dash_assets.static": Served(lambda s, c: "/assets/theme.css", public=True),
    "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>": Served(
        lambda s, c: "/_dash-component-suites/dash/deps/polyfill@7.12.1.min.js", public=True
    ),
    "/_favicon.ico": Served(lambda s, c: "/_favicon.ico", public=True),
    "/_reload-hash": Served(lambda s, c: "/_reload-hash", public=True),
    "healthz": Served(lambda s, c: "/healthz", public=True),
    "readyz": Served(lambda s, c: "/readyz", public=True),
    "metrics_page": Served(lambda s, c: "/metrics", public=True),
    "set_lang": Served(lambda s, c: "/lang/en", public=True),
    "no_push_here": Served(lambda s, c: "/push/wall?area=320100", public=True),  # a plain 404
    "server_clock": Served(lambda s, c: "/clock.json"),  # any signed-in user (the wall's clock)
    "login": Served(lambda s, c: "/login", public=True),
    "sso_login": Served(lambda s, c: "/sso/login", public=True),
    "sso_callback": Served(lambda s, c: "/sso/callback", public=True),
    "logout": Served(lambda s, c: "/logout"),  # POST; any signed-in user
    "/_dash-layout": Served(lambda s, c: "/_dash-layout"),
    "/_dash-dependencies": Served(lambda s, c: "/_dash-dependencies"),
    "/_dash-update-component": Served(lambda s, c: ""),  # by callback, below
    "/": Served(lambda s, c: "/", page="panorama"),
    "/<path:path>": Served(lambda s, c: ""),  # by page, below
    "geo_area": Served(lambda s, c: f"/geo/area/{s}.json", kind="aggregates"),
    "geo_grids": Served(lambda s, c: "/geo/grids.json", kind="aggregates", city_wide=True),
    "work_track_csv": Served(lambda s, c: f"/export/track/{WORKER}.csv", kind="tracks"),
    "work_grid_track_csv": Served(
        lambda s, c: f"/export/track/grid/{_grid(s, c)}.csv", kind="tracks"
    ),
}

# A page's URL for a role (its own scope where the page takes an area).
PAGE_URLS: dict[str, Callable[[str], str]] = {
    "panorama": lambda s: f"/area/{s}",
    "work": lambda s: f"/work/{s}",
    "warnings": lambda s: "/warnings",
    "incidents": lambda s: "/incidents",
    "assessment": lambda s: "/assessment",
    "wall": lambda s: f"/wall/{s}",
    "audit": lambda s: "/admin/audit",
}

# Callbacks by the id prefix of their components: the page (and kind) they serve.
PREFIXES: dict[str, tuple[str, str | None]] = {
    "pan-": ("panorama", None),
    "wall-": ("wall", None),
    "warn-": ("warnings", None),
    "asm-": ("assessment", None),
    "work-": ("work", None),
    "wtrk-": ("work", "tracks"),
    "aud-": ("audit", None),
    "inc-": ("incidents", None),
    "inca-": ("incidents", "incident_actions"),  # acting on incidents
}
SHELL = ("url", "shell-", "_pages_")


def expected(role: str, served: Served) -> bool:
    if served.public:
        return True
    ok = True
    if served.kind is not None:
        ok = ok and policy.may(role, served.kind)
    if served.page is not None:
        ok = ok and policy.may_open(role, served.page)
    if served.city_wide:
        ok = ok and "city" in accounts.ROLES[role].levels
    return ok


def client(app: Dash, city: City, role: str) -> Any:
    return sign_in_client(
        app.server.test_client(), role, scopes(city)[role], role.replace("_", "-")
    )


def test_the_table_covers_every_role_and_only_known_kinds() -> None:
    assert set(policy.TABLE) == set(accounts.ROLES) == set(policy.ROLES)
    assert all(kinds <= set(policy.KINDS) for kinds in policy.TABLE.values())
    assert {p.name for p in policy.PAGES} == set(PAGE_URLS)


def _refused(resp: Any, role: str) -> bool:
    """A refusal: 401/403, or — for a wall kiosk, which is kept on wall pages — a redirect
    to the wall."""
    if resp.status_code in (401, 403):
        return True
    location = resp.headers.get("Location", "")
    return role == "wall" and resp.status_code == 302 and location.split("?")[0].endswith("/wall")


@pytest.mark.parametrize("role", policy.ROLES)
def test_every_route_and_page_answers_as_the_table_says(app: Dash, city: City, role: str) -> None:
    c = client(app, city, role)
    scope = scopes(city)[role]
    unknown = [r.endpoint for r in app.server.url_map.iter_rules() if r.endpoint not in ROUTES]
    assert unknown == [], f"routes the test does not know how to drive: {unknown}"
    got: dict[str, tuple[int, bool]] = {}
    for endpoint, served in ROUTES.items():
        url = served.url(scope, city)
        if not url:
            continue
        resp = c.post(url, data={"csrf": "x"}) if endpoint == "logout" else c.get(url)
        got[endpoint] = (_refused(resp, role), resp.status_code, expected(role, served))
    for page in policy.PAGES:
        resp = c.get(PAGE_URLS[page.name](scope), headers={"Accept": "text/html"})
        got[f"page {page.name}"] = (
            _refused(resp, role),
            resp.status_code,
            policy.may_open(role, page),
        )
    wrong = {
        k: status
        for k, (refused, status, allowed) in got.items()
        if refused == allowed or status >= 500
    }
    assert wrong == {}, f"{role}: answers against the table (status): {wrong}"
    # and what was allowed answered with content, not a login page
    for page in policy.PAGES:
        if policy.may_open(role, page):
            assert c.get(PAGE_URLS[page.name](scope)).status_code == 200, page.name


def _cid(spec: Any) -> str:
    """A component id from an output spec part (``id.prop``, ``{json}.prop``) or an input's
    id (a string or a pattern dict): a pattern-matching id by its ``type``."""
    if isinstance(spec, dict):
        return str(spec.get("type", ""))
    if spec.startswith("{"):
        return str(orjson.loads(spec[: spec.rindex("}") + 1]).get("type", ""))
    return spec.rsplit(".", 1)[0] if "." in spec else spec


def _callback_page(key: str, spec: dict[str, Any]) -> tuple[str, set[str]] | None:
    """The page and kinds a callback serves, from the prefixes of its components."""
    ids = [_cid(part.split("@")[0]) for part in key.strip(".").split("...")]
    ids += [_cid(i["id"]) for i in (*spec["inputs"], *spec["state"])]
    pages, kinds = set(), set()
    for cid in ids:
        if cid.startswith(SHELL):
            continue
        hit = next((v for p, v in PREFIXES.items() if cid.startswith(p)), None)
        if hit is None:
            return None
        pages.add(hit[0])
        if hit[1]:
            kinds.add(hit[1])
    return (pages.pop(), kinds) if len(pages) == 1 else None


@pytest.mark.parametrize("role", policy.ROLES)
def test_every_callback_answers_as_the_table_says(app: Dash, city: City, role: str) -> None:
    c = client(app, city, role)
    scope = scopes(city)[role]
    app.server.test_client().get("/_dash-dependencies")
    server_side = {k: v for k, v in app.callback_map.items() if v.get("callback") is not None}
    wrong: dict[str, int] = {}
    for key, spec in server_side.items():
        spec = {"inputs": spec["inputs"], "state": spec.get("state", [])}
        outputs = key.strip(".").split("...")
        if all(o.startswith("_pages_") for o in outputs):  # the router: by the page it renders
            cases = [(PAGE_URLS[p.name](scope), policy.may_open(role, p)) for p in policy.PAGES]
        else:
            served = _callback_page(key, spec)
            assert served is not None, f"a callback the test does not know how to drive: {key}"
            page, kinds = served
            allowed = policy.may_open(role, page) and all(policy.may(role, k) for k in kinds)
            cases = [(None, allowed)]
        for path, allowed in cases:
            body = _body(spec, scope, key)
            if path is not None:
                for item in body["inputs"]:
                    if item["id"] == "_pages_location":
                        item["value"] = path if item["property"] == "pathname" else ""
            resp = c.post(
                "/_dash-update-component",
                data=orjson.dumps(body),
                content_type="application/json",
            )
            denied = resp.status_code in (401, 403)
            if denied == allowed or resp.status_code >= 500:
                wrong[f"{key[:60]} {path or ''}"] = resp.status_code
    assert wrong == {}, f"{role}: callbacks answering against the table: {wrong}"


def test_admins_land_on_the_audit_log_and_see_no_city_data(app: Dash, city: City) -> None:
    """The README's "admin: users and the audit log only", end to end."""
    import re

    c = app.server.test_client()
    page = c.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    resp = c.post(
        "/login",
        data={"username": "admin", "password": "pass-word-123", "csrf": csrf.group(1), "next": "/"},
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/audit"
    assert c.get("/admin/audit").status_code == 200
    for path in ("/", f"/area/{MINE}", "/work", "/warnings", "/assessment", "/wall"):
        assert c.get(path).status_code == 403, path
    assert c.get(f"/geo/area/{MINE}.json").status_code == 403
    assert c.get("/geo/grids.json").status_code == 403


def test_roles_and_pages_pairs_are_all_exercised() -> None:
    """Each role is allowed at least one page, and each page is denied to someone."""
    for role in policy.ROLES:
        assert any(policy.may_open(role, p) for p in policy.PAGES), role
    for page, role in itertools.product(policy.PAGES, ["admin"]):
        assert policy.may_open(role, page) == (page.name == "audit")
