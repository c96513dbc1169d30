"""Who may see and do what, enforced on the server.

* **Sessions**: a signed, HttpOnly, SameSite=Lax cookie (Secure when the request came
  over TLS) holding the principal; idle timeout; wall screens log in once with a
  revocable kiosk token (``/wall?token=…``) and never time out.
* **Policies**: every Flask route and every Dash callback has an explicit policy in the
  registries below (a test fails if one is missing). Anything without a policy is
  denied. The area scope always comes from the session, never from a component value:
  ``allowed(area_id)`` is checked by every callback and route that takes an area.
* **Hardening**: Dash's JSON endpoint and state-changing routes reject non-JSON bodies
  and foreign Origins; a Content-Security-Policy without ``unsafe-inline`` scripts
  (Dash's inline scripts are allowed by hash), ``object-src 'none'``,
  ``frame-ancestors`` from settings, nosniff, HSTS over TLS; logins are rate-limited in
  Redis (shared by every gunicorn worker); logins, failures and denials are audited.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from flask import Flask, Response, jsonify, redirect, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from pipelines.access import accounts, audit
from pipelines.city.geography import City
from pipelines.settings import Settings

ALL = frozenset(accounts.ROLES)
PEOPLE = ALL - {"wall"}
# Roles that see individual grid workers (names, positions, tracks) in their scope; the
# others see counts and coverage only (grid work, README "Privacy").
INDIVIDUALS = frozenset({"district_commander", "street_operator"})


@dataclass(frozen=True)
class Policy:
    """Roles allowed; ``public`` needs no session; ``scoped``: area checks apply."""

    roles: frozenset[str] = ALL
    public: bool = False
    scoped: bool = True


PUBLIC = Policy(public=True, scoped=False)

# Flask endpoints → policy. Dash's own endpoints are named by their rule.
ROUTE_POLICIES: dict[str, Policy] = {
    "static": PUBLIC,
    "_dash_assets.static": PUBLIC,
    "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>": PUBLIC,
    "/_favicon.ico": PUBLIC,
    "/_reload-hash": PUBLIC,
    "healthz": PUBLIC,
    "set_lang": PUBLIC,
    "login": PUBLIC,
    "sso_login": PUBLIC,  # 404 unless auth.oidc_issuer is set (dashboard/sso.py)
    "sso_callback": PUBLIC,
    "logout": Policy(scoped=False),
    "/_dash-layout": Policy(scoped=False),
    "/_dash-dependencies": Policy(scoped=False),
    "/_dash-update-component": Policy(scoped=False),  # + the callback's own policy
    "/": Policy(scoped=False),
    "/<path:path>": Policy(scoped=False),
    "geo_area": Policy(),
    "geo_grids": Policy(roles=frozenset({"city_leader", "admin", "supervisor", "wall"})),
    "admin_audit": Policy(roles=frozenset({"admin"}), scoped=False),
    "work_track_csv": Policy(roles=INDIVIDUALS),  # + the worker's grid must be in scope
    "work_grid_track_csv": Policy(roles=INDIVIDUALS),  # + the grid must be in scope
}

# Dash callbacks, by the id prefix of their outputs → policy.
CALLBACK_POLICIES: dict[str, Policy] = {
    "_pages_": Policy(scoped=False),  # the page router: layouts check scope themselves
    "pan-": Policy(roles=PEOPLE),
    "url.": Policy(roles=PEOPLE),  # drill-down navigation from the panorama map
    "wall-": Policy(),
    # early warning: reading for people; actions also check can_act and the warning's area
    "warn-": Policy(roles=PEOPLE),
    # supervision and assessment: reading for people (rows clamped to the session's scope);
    # exports also check the assessment page's EXPORT_ROLES and the rate limit, and are audited
    "asm-": Policy(roles=PEOPLE),
    "work-": Policy(
        roles=PEOPLE
    ),  # grid work: names only for INDIVIDUALS (dashboard/pages/work/queries.py)
    "wtrk-": Policy(roles=INDIVIDUALS),  # track replay
}


def callback_policy(output_spec: str) -> Policy | None:
    """The policy of a callback from its output spec (e.g. ``..pan-geo.hideout...``); a
    pattern-matching id (``{"i":["ALL"],"type":"wtrk-dots"}.center``) by its ``type``."""
    first = output_spec.lstrip(".").split("...")[0]
    if first.startswith("{"):
        try:
            pattern = json.loads(first[: first.rindex("}") + 1])
        except ValueError:
            return None
        first = str(pattern.get("type", "")) if isinstance(pattern, dict) else ""
    for prefix, policy in CALLBACK_POLICIES.items():
        if first.startswith(prefix):
            return policy
    return None


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


def principal() -> Principal | None:
    data = session.get("p")
    if not data:
        return None
    return Principal(**data)


def allowed(city: City, area_id: str | None) -> bool:
    """May the session's principal see this area? (scope from the session only)"""
    p = principal()
    if p is None or not isinstance(area_id, str) or city.area(area_id) is None:
        return False
    return accounts.scope_allows(p.scope, area_id, city)


def sees_people() -> bool:
    """May the session's principal see individual workers (names, tracks)?"""
    p = principal()
    return p is not None and p.role in INDIVIDUALS


def home_area(city: City) -> str:
    p = principal()
    return p.scope if p else city.city_id


class SessionInterface(SecureCookieSessionInterface):
    """Cookie session whose Secure flag follows the request (set behind TLS)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) if request else False


def secret_key(settings: Settings) -> str:
    if settings.auth.secret_key:
        return settings.auth.secret_key
    path = Path(settings.path(settings.run.var_dir)) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text().strip()


# ------------------------------------------------------------------ enforcement


@dataclass
class Guard:
    """Installs the checks on a Flask server; state is explicit (no globals)."""

    settings: Settings
    city: City
    r: redis.Redis
    engine: Any
    csp_hashes: Callable[[], list[str]]
    clock: Callable[[], float] = time.time

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def install(self, server: Flask) -> None:
        server.secret_key = secret_key(self.settings)
        server.session_interface = SessionInterface()
        server.config.update(
            SESSION_COOKIE_NAME="wg_session",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
        )
        server.before_request(self.before)
        server.after_request(self.headers)

    # ---------------------------------------------------------------- per request

    def before(self) -> BaseResponse | None:
        endpoint = request.endpoint or ""
        policy = ROUTE_POLICIES.get(endpoint)
        if request.method == "POST" and not self.same_origin():
            return self.deny("foreign origin", status=403)
        if policy is None:
            if request.url_rule is None:
                return None  # 404 from Flask itself
            return self.deny(f"no policy for {endpoint}", status=403)
        wall = self.wall_login()
        if wall is not None:
            return wall
        self.expire_idle()
        if policy.public:
            return None
        p = self.recheck(principal())
        if p is None:
            if endpoint in ("/", "/<path:path>"):
                return redirect(f"/login?next={request.full_path.rstrip('?')}")
            return self.deny("login required", status=401)
        if p.role not in policy.roles:
            return self.deny(f"role {p.role} may not use {endpoint}")
        if endpoint == "/_dash-update-component":
            return self.check_callback(p)
        area = (request.view_args or {}).get("area_id")
        if policy.scoped and area is not None and not allowed(self.city, str(area)):
            return self.deny("area outside scope")
        return None

    def recheck(self, p: Principal | None) -> Principal | None:
        """Every 30 s, reload the user: disabling or a role change takes effect at once."""
        if p is None:
            return None
        now = self.now_ms()
        if now - int(session.get("checked", 0)) < 30_000:
            return p
        user = accounts.get_user(self.engine, p.username)
        if user is None or user.disabled or (user.role, user.scope_area_id) != (p.role, p.scope):
            self.audit("session_revoked", target=p.username)
            session.clear()
            return None
        session["checked"] = now
        return p

    def check_callback(self, p: Principal) -> Response | None:
        if not request.is_json:
            return self.deny("callback body must be JSON", status=403)
        body = request.get_json(silent=True) or {}
        output = str(body.get("output", ""))
        policy = callback_policy(output)
        if policy is None:
            return self.deny(f"no policy for callback {output[:80]}")
        if p.role not in policy.roles:
            return self.deny(f"role {p.role} may not run {output[:80]}")
        return None

    def same_origin(self) -> bool:
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if not origin:
            return True  # non-browser clients; browsers always send Origin on POST
        return urlparse(origin).netloc == request.host

    def expire_idle(self) -> None:
        data = session.get("p")
        if not data or data.get("wall"):
            return
        now = self.now_ms()
        last = int(session.get("seen", now))
        if now - last > self.settings.auth.idle_minutes * 60_000:
            session.clear()
            return
        if now - last > 30_000:  # refresh the cookie at most twice a minute
            session["seen"] = now

    def wall_login(self) -> BaseResponse | None:
        """``/wall…?token=…`` signs a kiosk in once, then drops the token from the URL."""
        token = request.args.get("token")
        if not token or not request.path.startswith("/wall"):
            return None
        user = accounts.verify_wall_token(self.engine, token, self.now_ms())
        if user is None:
            self.audit("wall_token_rejected", target=request.path, actor="anonymous")
            return self.deny("invalid or expired wall token", status=401)
        self.start_session(user, wall=True)
        self.audit("wall_login", target=request.path)
        args = {k: v for k, v in request.args.items() if k != "token"}
        query = "&".join(f"{k}={v}" for k, v in args.items())
        return redirect(request.path + (f"?{query}" if query else ""))

    def start_session(self, user: accounts.User, wall: bool = False) -> None:
        session.clear()
        session["p"] = Principal.of(user, wall).__dict__
        session["seen"] = self.now_ms()
        session["csrf"] = secrets.token_urlsafe(24)
        session.permanent = wall

    def deny(self, why: str, status: int = 403) -> Response:
        p = principal()
        who = p.username if p else f"ip:{request.remote_addr}"
        if not self.rate_limited(f"denied:{who}", self.settings.auth.denied_audit_per_minute):
            self.audit("denied", target=request.path, detail={"why": why, "status": status})
        if request.accept_mimetypes.best == "text/html":  # a person: a page, not JSON
            return Response(_denied_page(status), status=status, mimetype="text/html")
        resp = jsonify(
            {
                "error": "forbidden" if status == 403 else "unauthorized",
                "why": why if p else "login required",
            }
        )
        resp.status_code = status
        return resp

    def audit(
        self,
        action: str,
        *,
        target: str = "",
        detail: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        p = principal()
        with contextlib.suppress(Exception):  # a down audit store must not stop the app
            audit.record(
                self.engine,
                actor=actor or (p.username if p else "anonymous"),
                role=p.role if p else "",
                scope=p.scope if p else "",
                action=action,
                target=target,
                detail={"ip": request.remote_addr, **(detail or {})},
                now_ms=self.now_ms(),
            )

    def rate_limited(self, bucket: str, per_minute: int) -> bool:
        """A sliding one-minute window in Redis (a sorted set of attempt times), shared by
        every gunicorn worker: attempts straddling a minute boundary count together."""
        key = f"{self.settings.redis.prefix}:rl:{bucket}"
        now_ms = int(self.clock() * 1000)
        try:
            pipe = self.r.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now_ms - 60_000)
            pipe.zadd(key, {f"{now_ms}:{secrets.token_hex(4)}": now_ms})
            pipe.zcard(key)
            pipe.pexpire(key, 60_000)
            count = int(pipe.execute()[2])
        except redis.RedisError:
            return False
        return count > per_minute

    def headers(self, resp: Response) -> Response:
        tiles = urlparse(self.settings.dashboard.tile_url)
        tile_src = f" {tiles.scheme}://{tiles.netloc.split('{')[0]}*" if tiles.netloc else ""
        scripts = " ".join(["'self'", *self.csp_hashes()])
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:{tile_src}; connect-src 'self'; font-src 'self' data:; "
            f"object-src 'none'; base-uri 'self'; form-action 'self'; "
            f"frame-ancestors {self.settings.auth.frame_ancestors}"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        if self.settings.auth.frame_ancestors == "'self'":  # else CSP frame-ancestors governs
            resp.headers["X-Frame-Options"] = "SAMEORIGIN"
        if request.is_secure:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        return resp


def _denied_page(status: int) -> bytes:
    title = "无权访问 · Access denied" if status == 403 else "需要登录 · Sign-in required"
    hint = "" if status == 403 else "<p>链接无效或已过期 · The link is invalid or expired.</p>"
    return (
        f"<!doctype html><meta charset=utf-8><title>{title}</title>"
        "<body style='background:#06101f;color:#d8e9ff;font-family:sans-serif;"
        f"text-align:center;padding-top:15vh'><h2>{title}</h2>{hint}"
        "<p><a style='color:#41c7ff' href='/login'>登录 · Sign in</a></p></body>"
    ).encode()


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

# Kinds of data (the same names as the access policy's table).
KINDS = (
    "aggregates",
    "positions",
    "names",
    "tracks",
    "incidents",
    "warnings",
    "warning_actions",
    "scorecards",
    "exports",
    "audit",
    "users",
)
# The detailed kinds a shared panel may or may not carry; what a viewer may see of these
# is its data class (part of every cache key).
DETAIL_KINDS = ("positions", "names", "tracks", "incidents")
_INDIVIDUAL = frozenset({"positions", "names", "tracks"})
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
    return role in INDIVIDUALS if kind in _INDIVIDUAL else True


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
    area = clean_id(area_id)
    why = ""
    if p is None:
        why = "login required"
    elif not may_see(kind, p.role):
        why = f"role {p.role} may not see {kind}"
    elif area is None or city.area(area) is None:
        why = "unknown area"
    elif not accounts.scope_allows(p.scope, area, city):
        why = "area outside scope"
    if why:
        shown = safe_text(area_id if target is None else target)
        if audited:
            audit_refusal(kind, shown, why)
        return Decision(False, shown, kind, why=why)
    assert p is not None and area is not None
    sees = frozenset(k for k in DETAIL_KINDS if may_see(k, p.role))
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
