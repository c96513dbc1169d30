"""Who may see and do what, enforced on the server.

* **Sessions** live in Redis (:mod:`pipelines.access.sessions`); the cookie (signed,
  HttpOnly, SameSite=Lax, Secure behind TLS or with ``auth.https``) carries only a random
  session id once someone signed in. Every request loads the session: logout, a password
  change, disabling and a role or scope change end every session of the user at once.
  A person's session ends after ``auth.idle_minutes`` unused and ``auth.session_max_hours``
  after sign-in; a wall screen signs in once with a kiosk token (``/wall?token=…``) and
  stays signed in until that token is revoked or expires. At least every
  ``sessions.RECHECK_MS`` the account (or the token) is re-read from SQL too, so a change
  made while Redis was unreachable still ends the session.
* **Policies**: what a role may see is one table, :mod:`pipelines.access.policy`. Every
  Flask route and every Dash callback has an explicit policy in the registries below,
  which name the page or the kind of data it serves (a test fails if one is missing);
  anything without a policy is denied. The area scope always comes from the session,
  never from a component value: ``allowed(area_id)`` is checked by every callback and
  route that takes an area.
* **Hardening**: ids in URLs and callback inputs never carry control or bidirectional
  characters (:mod:`pipelines.access.text`; 400); Dash's JSON endpoint and
  state-changing routes reject non-JSON bodies and foreign Origins; a
  Content-Security-Policy without ``unsafe-inline`` scripts (Dash's inline scripts are
  allowed by hash), ``object-src 'none'``, ``frame-ancestors`` from settings, nosniff, HSTS
  over TLS; wall tokens are redacted from every log line (:class:`RedactTokens`); logins
  are rate-limited in Redis (shared by every gunicorn worker); logins, failures and
  denials are audited.

This module holds the rules (policies, principals, callback access); the request guard
that enforces them on every request is :mod:`dashboard.guard`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import (
    current_app,
    g,
    has_request_context,
    request,
    session,
)

from pipelines.access import accounts, policy
from pipelines.access import sessions as S
from pipelines.city.geography import City

if TYPE_CHECKING:
    from dashboard.guard import Guard

ALL = frozenset(accounts.ROLES)
PEOPLE = ALL - policy.KIOSK_ROLES
# Roles that see individual grid workers (positions, names, tracks) in their scope; the
# others see counts and coverage only (grid work, README "Privacy"). From the policy table.
INDIVIDUALS = policy.roles_for("positions")
# Roles whose scope may be the whole city (the all-grids geometry is city-wide).
CITY_WIDE = frozenset(r for r, spec in accounts.ROLES.items() if "city" in spec.levels)
GUARD = "wangge.guard"  # the Flask extension key of the installed Guard


@dataclass(frozen=True)
class Policy:
    """Who may use a route or callback: a signed-in role that may open ``page`` and see
    every kind in ``kinds`` (:mod:`pipelines.access.policy`), within ``roles`` when given.
    ``public`` needs no session; ``scoped``: area checks apply; ``by_path``: Dash's page
    routes, decided by the page of the requested path."""

    kinds: tuple[str, ...] = ()
    page: str | None = None
    roles: frozenset[str] | None = None
    public: bool = False
    scoped: bool = True
    by_path: bool = False

    def admits(self, role: str, path: str = "") -> bool:
        if self.by_path:
            found = policy.page_of(path)
            if found is not None and not policy.may_open(role, found):
                return False
        if self.page is not None and not policy.may_open(role, self.page):
            return False
        if not all(policy.may(role, k) for k in self.kinds):
            return False
        return self.roles is None or role in self.roles


PUBLIC = Policy(public=True, scoped=False)
SIGNED_IN = Policy(scoped=False)  # any signed-in role

# Flask endpoints → policy. Dash's own endpoints are named by their rule.
ROUTE_POLICIES: dict[str, Policy] = {
    "static": PUBLIC,
    "_dash_assets.static": PUBLIC,
    "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>": PUBLIC,
    "/_favicon.ico": PUBLIC,
    "/_reload-hash": PUBLIC,
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "metrics_page": PUBLIC,  # network or bearer token checked by dashboard/ops.py
    "set_lang": PUBLIC,
    "no_push_here": PUBLIC,  # a plain 404: push streams are the push server's
    "login": PUBLIC,
    "sso_login": PUBLIC,  # 404 unless auth.oidc_issuer is set (dashboard/sso.py)
    "sso_callback": PUBLIC,
    "logout": SIGNED_IN,
    "server_clock": SIGNED_IN,  # the server's time, for the wall's clock
    "/_dash-layout": SIGNED_IN,
    "/_dash-dependencies": SIGNED_IN,
    "/_dash-update-component": SIGNED_IN,  # + the callback's own policy
    "/": Policy(scoped=False, by_path=True),
    "/<path:path>": Policy(scoped=False, by_path=True),
    "geo_area": Policy(kinds=("aggregates",)),
    "geo_grids": Policy(kinds=("aggregates",), roles=CITY_WIDE),
    "work_track_csv": Policy(kinds=("tracks",)),  # + the worker's grid must be in scope
    "work_grid_track_csv": Policy(kinds=("tracks",)),  # + the grid must be in scope
}

# Dash callbacks, by the id prefix of their components → policy. A callback's policy
# combines those of every component it names (outputs, inputs, state); the shell's
# components (``SHELL``) name no page. Data inside each page is the page's business
# (names only for INDIVIDUALS, dashboard/pages/work/queries.py; exports for the
# "exports" kind, dashboard/pages/assessment/queries.py; actions for "warning_actions").
CALLBACK_POLICIES: dict[str, Policy] = {
    "pan-": Policy(page="panorama"),
    "wall-": Policy(page="wall"),
    "warn-": Policy(page="warnings"),
    "asm-": Policy(page="assessment"),
    "inc-": Policy(page="incidents"),
    "inca-": Policy(page="incidents", kinds=("incident_actions",)),  # acting on incidents
    "work-": Policy(page="work"),
    "wtrk-": Policy(page="work", kinds=("tracks",)),  # track replay
    "aud-": Policy(page="audit", scoped=False),  # the audit log (the administrator)
}
SHELL = ("url", "shell-", "_pages_")
ROUTER = Policy(scoped=False, by_path=True)  # the page router: by the path it renders
# Callback inputs that are free text typed by a person (neutralised by the page, not
# refused); every other input value is checked like an id.
FREE_TEXT_INPUTS = frozenset(
    {"warn-note", "warn-assignee", "inca-reason", "inca-note", "inca-photo"}
)


def _component_ids(spec_key: str) -> list[str]:
    """Component ids of an output spec (``..a.b...c.d..``, ``a.b``, ``a.b@hash``)."""
    out = []
    for part in spec_key.strip(".").split("..."):
        part = part.split("@")[0]
        cid = part[: part.rindex("}") + 1] if part.startswith("{") else part.rsplit(".", 1)[0]
        out.append(_id_of(cid))
    return out


def _id_of(cid: Any) -> str:
    """A component id as a string; a pattern-matching id by its ``type``."""
    if isinstance(cid, dict):
        return str(cid.get("type", ""))
    cid = str(cid)
    if cid.startswith("{"):
        try:
            pattern = json.loads(cid)
        except ValueError:
            return cid
        return str(pattern.get("type", "")) if isinstance(pattern, dict) else cid
    return cid


def _prefix_policy(cid: str) -> Policy | None:
    for prefix, pol in CALLBACK_POLICIES.items():
        if cid.startswith(prefix):
            return pol
    return None


def callback_policy(output_spec: str, spec: dict[str, Any] | None = None) -> Policy | None:
    """The policy of a callback from its output spec (e.g. ``..pan-geo.hideout...``) and,
    when given, its registered inputs and state (Dash's ``callback_map`` entry): the
    components of one page, combined; None (denied) when they name no page, an unknown
    prefix, or several pages."""
    ids = _component_ids(output_spec)
    if spec:
        ids += [_id_of(i["id"]) for i in (*spec.get("inputs", []), *spec.get("state", []))]
    outputs = _component_ids(output_spec)
    if all(o.startswith("_pages_") for o in outputs):
        return ROUTER
    found: list[Policy] = []
    for cid in ids:
        if cid.startswith(SHELL):
            continue
        pol = _prefix_policy(cid)
        if pol is None:
            return None
        found.append(pol)
    if not found:
        return None
    pages = {p.page for p in found}
    if len(pages) != 1:
        return None
    kinds = tuple(sorted({k for p in found for k in p.kinds}))
    roles = [p.roles for p in found if p.roles is not None]
    both = frozenset.intersection(*roles) if roles else None
    return Policy(kinds=kinds, page=found[0].page, roles=both)


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    scope: str
    display_name: str = ""
    wall: bool = False

    @classmethod
    def of(cls, user: accounts.User, wall: bool = False) -> Principal:
        return cls(user.username, user.role, user.scope_area_id, user.display_name, wall)


def _guard() -> Guard | None:
    from dashboard.guard import Guard  # the guard module builds on this one

    found = current_app.extensions.get(GUARD) if has_request_context() else None
    return found if isinstance(found, Guard) else None


def current_session() -> S.Session | None:
    """The request's live session (loaded once per request), or None."""
    if not has_request_context():
        return None
    if "wg_session" not in g:
        guard = _guard()
        g.wg_session = guard.resolve() if guard is not None else None
    found: S.Session | None = g.wg_session
    return found


def principal() -> Principal | None:
    s = current_session()
    if s is None:
        return None
    return Principal(s.username, s.role, s.scope, s.display_name, s.wall)


def may(kind: str) -> bool:
    """May the session's principal see this kind of data (:mod:`pipelines.access.policy`)?"""
    p = principal()
    return p is not None and policy.may(p.role, kind)


def allowed(city: City, area_id: str | None) -> bool:
    """May the session's principal see this area? (scope from the session only)"""
    p = principal()
    if p is None or not isinstance(area_id, str) or city.area(area_id) is None:
        return False
    return accounts.scope_allows(p.scope, area_id, city)


def sees_people() -> bool:
    """May the session's principal see individual workers (positions, names, tracks)?"""
    return may("positions")


def home_area(city: City) -> str:
    p = principal()
    return p.scope if p else city.city_id


def home_href(city: City, base: str = "/area/") -> str | None:
    """The viewer's own area under ``base`` (where "back" goes after a refusal), or None
    when their scope is the whole city (or nobody is signed in)."""
    p = principal()
    if p is None or city.level_of(p.scope) == "city":
        return None
    return f"{base}{p.scope}"


def csrf_token() -> str:
    """The CSRF token for forms: the session's once signed in, else a pre-login one kept
    in the (signed) cookie."""
    s = current_session()
    if s is not None:
        return s.csrf
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


# ====================================================================== callback access
# What a callback may read, decided from the session before any shared or cached value is
# read, on every request. Kept apart from the sessions and login code above.
#
#   d = authorize(area_id, kind)          # the decision (a refusal is audited)
#   if not d.granted: return <refusal>    # never cached
#   b.cached(d, name, compute, *parts)    # data keyed by what it is (Backend.cached)
#
# Caches key data by area, the other inputs and ``Decision.data_class`` (which
# individual-level kinds the data carries), never by a viewer and never a refusal, so
# any number of viewers of one class share one computation per tick.

# Kinds of data: the access policy's table.
KINDS = tuple(policy.KINDS)
# The detailed kinds a shared panel may or may not carry; what a viewer may see of these
# is its data class (part of every cache key).
DETAIL_KINDS = ("positions", "names", "tracks", "incidents")
MAX_ID = 128  # longer ids are refused before any lookup


def may_see(kind: str, role: str | None = None) -> bool:
    """May ``role`` (default: the session's) see this kind of data at all, inside its
    scope? The one place the role × kind rule is read by callbacks."""
    if kind not in KINDS:
        raise KeyError(f"unknown kind of data {kind!r}")
    if role is None:
        from flask import has_request_context

        p = principal() if has_request_context() else None
        role = p.role if p else None
    if role is None or role not in ALL:
        return False
    return policy.may(role, kind)


def clean_id(value: object) -> str | None:
    """An id as a lookup may use it: a non-empty string of at most ``MAX_ID`` characters
    that encodes as UTF-8 (no lone surrogates); else None."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def safe_text(value: object, limit: int = 200) -> str:
    """Any value as text that can always be stored and logged (lone surrogates escaped)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Decision:
    """What one request may read of one area: granted or not, and which detailed kinds.

    ``area_id`` is the checked area (the id as text when refused); ``sees`` the detailed
    kinds (:data:`DETAIL_KINDS`) the viewer may see. Only :func:`authorize` makes one."""

    granted: bool
    area_id: str
    kind: str
    sees: frozenset[str] = frozenset()
    why: str = ""

    def may(self, kind: str) -> bool:
        """Granted, and the viewer may see this detailed kind in the area?"""
        return self.granted and kind in self.sees

    @property
    def data_class(self) -> str:
        """The class of data this viewer may be served (part of every cache key)."""
        return "+".join(sorted(self.sees)) or "aggregates"


def authorize(
    area_id: object,
    kind: str,
    *,
    city: City | None = None,
    target: object = None,
    audited: bool = True,
) -> Decision:
    """The session's decision for ``kind`` of data of ``area_id``, made before any shared or
    cached value is read. A refusal is audited (``denied``; rate-limited per user like the
    routes' denials) with ``target`` (default: the area id) as safe text — unless the
    caller audits it itself (``audited=False``, e.g. a route answering with
    ``Guard.deny``)."""
    p = principal()
    if city is None:
        from flask import current_app

        city = current_app.extensions["wangge"].city
    d = decision_for(p.role if p else None, p.scope if p else "", area_id, kind, city, target)
    if not d.granted and audited:
        audit_refusal(kind, d.area_id, d.why)
    return d


def decision_for(
    role: str | None, scope: str, area_id: object, kind: str, city: City, target: object = None
) -> Decision:
    """The decision for a principal's role and scope (None: nobody signed in), without a
    request: :func:`authorize` for a callback, the push server (``dashboard/push/``) for a
    stream on connect and before every tick it sends."""
    area = clean_id(area_id)
    why = ""
    if role is None:
        why = "login required"
    elif not may_see(kind, role):
        why = f"role {role} may not see {kind}"
    elif area is None or city.area(area) is None:
        why = "unknown area"
    elif not accounts.scope_allows(scope, area, city):
        why = "area outside scope"
    if why or role is None or area is None:
        return Decision(False, safe_text(area_id if target is None else target), kind, why=why)
    sees = frozenset(k for k in DETAIL_KINDS if may_see(k, role))
    return Decision(True, area, kind, sees)


def refused(kind: str, target: object, why: str) -> Decision:
    """A refusal decided without an area (e.g. an unknown warning, a foreign job): audited
    like any other."""
    shown = safe_text(target)
    audit_refusal(kind, shown, why)
    return Decision(False, shown, kind, why=why)


def audit_refusal(kind: str, target: str, why: str) -> None:
    """``denied`` in the audit log, at most ``auth.denied_audit_per_minute`` per user."""
    from flask import current_app, has_request_context

    if not has_request_context():
        return
    guard: Guard | None = current_app.extensions.get("wangge.guard")
    if guard is None:
        return
    p = principal()
    who = p.username if p else f"ip:{request.remote_addr}"
    if guard.rate_limited(f"denied:{who}", guard.settings.auth.denied_audit_per_minute):
        return
    body = request.get_json(silent=True) if request.is_json else None
    callback = safe_text(body.get("output", ""), 120) if isinstance(body, dict) else ""
    detail = {"why": safe_text(why), "kind": kind, "callback": callback}
    guard.audit("denied", target=safe_text(target), detail=detail)
