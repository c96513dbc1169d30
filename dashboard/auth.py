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
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import redis
from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from pipelines.access import accounts, audit, policy, text
from pipelines.access import sessions as S
from pipelines.city.geography import City
from pipelines.settings import Settings

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
    "set_lang": PUBLIC,
    "login": PUBLIC,
    "sso_login": PUBLIC,  # 404 unless auth.oidc_issuer is set (dashboard/sso.py)
    "sso_callback": PUBLIC,
    "logout": SIGNED_IN,
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
    "work-": Policy(page="work"),
    "wtrk-": Policy(page="work", kinds=("tracks",)),  # track replay
    "aud-": Policy(page="audit", scoped=False),  # the audit log (the administrator)
}
SHELL = ("url", "shell-", "_pages_")
ROUTER = Policy(scoped=False, by_path=True)  # the page router: by the path it renders
# Callback inputs that are free text typed by a person (neutralised by the page, not
# refused); every other input value is checked like an id.
FREE_TEXT_INPUTS = frozenset({"warn-note", "warn-assignee"})


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


class SessionInterface(SecureCookieSessionInterface):
    """Cookie session whose Secure flag follows the request (set behind TLS), or is always
    on with ``auth.https``."""

    def get_cookie_secure(self, app: Flask) -> bool:
        settings = app.config.get("WANGGE_SETTINGS")
        if settings is not None and settings.auth.https:
            return True
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


# ------------------------------------------------------------------ logs

_TOKEN = re.compile(r"(?i)(token(?:=|%3D))[^&\s\"'#]*")


def redact(line: str) -> str:
    """A log line with every ``token=…`` value replaced (wall tokens never reach a log)."""
    return _TOKEN.sub(r"\1[redacted]", line)


class RedactTokens(logging.Filter):
    """Rewrites a record whose message carries a token (access logs of werkzeug and
    gunicorn, the app's own logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error", "dashboard", "pipelines", "wangge")


def install_log_redaction(extra: Iterable[logging.Logger] = ()) -> None:
    """The token filter on the loggers that may see a URL, and on their handlers (so
    records propagated from child loggers are covered too). Idempotent."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in LOGGERS), *extra]
    for lg in loggers:
        targets: list[logging.Filterer] = [lg, *lg.handlers]
        for t in targets:
            if not any(isinstance(f, RedactTokens) for f in t.filters):
                t.addFilter(RedactTokens())


# ------------------------------------------------------------------ enforcement


def _bad_in(value: Any) -> bool:
    """Does a JSON value carry a string (or key) with a control or bidi character?"""
    if isinstance(value, str):
        return not text.is_clean_id(value)
    if isinstance(value, dict):
        return any(_bad_in(k) or _bad_in(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_in(v) for v in value)
    return False


def first_bad(value: Any) -> str | None:
    """The first string (or key) in a JSON value that carries a control or bidi character."""
    if isinstance(value, str):
        return None if text.is_clean_id(value) else value
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for k, v in items:
        found = first_bad(k) if isinstance(k, str) else None
        found = found or first_bad(v)
        if found:
            return found
    return None


def bad_callback_ids(body: dict[str, Any]) -> bool:
    """A callback body whose ids or values (other than free text) carry control or
    bidirectional characters."""
    for group in ("inputs", "state"):
        for item in body.get(group) or []:
            entries = item if isinstance(item, list) else [item]
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                if _id_of(entry.get("id")) in FREE_TEXT_INPUTS:
                    if _bad_in(entry.get("id")) or _bad_in(entry.get("property")):
                        return True
                    continue
                if _bad_in(entry):
                    return True
    rest = {k: v for k, v in body.items() if k not in ("inputs", "state")}
    return _bad_in(rest)


@dataclass
class Guard:
    """Installs the checks on a Flask server; state is explicit (no globals)."""

    settings: Settings
    city: City
    r: redis.Redis
    engine: Any
    csp_hashes: Callable[[], list[str]]
    clock: Callable[[], float] = time.time
    callbacks: Callable[[], dict[str, Any]] = dict  # Dash's callback_map

    def __post_init__(self) -> None:
        a = self.settings.auth
        self.sessions = S.Sessions(
            self.r,
            self.settings.redis.prefix,
            idle_ms=int(a.idle_minutes * 60_000),
            max_ms=int(a.session_max_hours * 3_600_000),
        )
        self.recent = S.Recent()  # this process's recent sessions (a Redis outage)

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
        server.extensions[GUARD] = self
        server.before_request(self.before)
        server.after_request(self.headers)
        install_log_redaction([server.logger])

    # ---------------------------------------------------------------- sessions

    def resolve(self) -> S.Session | None:
        """Load the cookie's session from Redis, end it if idle, over age or its account
        (token) changed, and note that it was used."""
        sid = str(session.get("sid") or "")
        if not sid:
            return None
        now = self.now_ms()
        try:
            s = self.sessions.load(sid, now)
        except redis.RedisError:
            return self.during_outage(sid, now)
        if s is not None and now - s.checked_ms >= S.RECHECK_MS:
            if self.still_valid(s, now):
                s = self.sessions.seen(s, now, checked=True)
            else:
                self.sessions.end_user(s.username)
                self.recent.drop_user(s.username)
                self.audit("session_revoked", target=s.username, actor=s.username)
                s = None
        elif s is not None:
            s = self.sessions.seen(s, now)
        if s is None:
            self.recent.drop(sid)
            session.clear()
        else:
            self.recent.put(s, now)
        return s

    def during_outage(self, sid: str, now: int) -> S.Session | None:
        """Redis unreachable: a session this process loaded within ``sessions.GRACE_MS``
        goes on (re-checked in SQL when due), any other request fails as a 503."""
        s = self.recent.get(sid, now)
        if s is None:
            raise redis.ConnectionError("session store unreachable")
        if self.sessions.expired(s, now) or (
            now - s.checked_ms >= S.RECHECK_MS and not self.still_valid(s, now)
        ):
            self.recent.drop(sid)
            session.clear()
            return None
        return s

    def still_valid(self, s: S.Session, now_ms: int) -> bool:
        """Does the account (a wall: the token) still grant this session?"""
        if s.wall:
            return accounts.wall_token_active(self.engine, s.token_id, now_ms) is not None
        user = accounts.get_user(self.engine, s.username)
        return (
            user is not None
            and not user.disabled
            and (user.role, user.scope_area_id) == (s.role, s.scope)
            and user.stamp == s.stamp
        )

    def start_session(
        self, user: accounts.User, wall: accounts.WallLogin | None = None, csrf: str | None = None
    ) -> S.Session:
        """A new session for the user (the old one of this browser is dropped first: no
        fixation); the cookie gets only its id."""
        session.clear()
        s = self.sessions.start(
            username=user.username,
            role=user.role,
            scope=user.scope_area_id,
            display_name=user.display_name,
            now_ms=self.now_ms(),
            stamp=user.stamp,
            wall=wall is not None,
            token_id=wall.token_id if wall else "",
            token_expires_ms=wall.expires_ms if wall else 0,
            csrf=csrf,
        )
        session["sid"] = s.sid
        if wall is not None:
            session.permanent = True  # a kiosk keeps its cookie across browser restarts
        if has_request_context():
            g.wg_session = s
        return s

    def end_sessions(self, username: str) -> None:
        """End every session of the user (this browser's too)."""
        self.recent.drop_user(username)
        self.sessions.end_user(username)
        session.clear()
        g.wg_session = None

    # ---------------------------------------------------------------- per request

    def before(self) -> BaseResponse | None:
        if not self.clean_url():
            return self.deny("control or bidi character in the URL", status=400)
        endpoint = request.endpoint or ""
        policy_ = ROUTE_POLICIES.get(endpoint)
        if request.method == "POST" and not self.same_origin():
            return self.deny("foreign origin", status=403)
        if policy_ is None:
            if request.url_rule is None:
                return None  # 404 from Flask itself
            return self.deny(f"no policy for {endpoint}", status=403)
        wall = self.wall_login()
        if wall is not None:
            return wall
        if policy_.public:
            return None
        p = principal()
        if p is None:
            if endpoint in ("/", "/<path:path>"):
                return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}")
            return self.deny("login required", status=401)
        if not policy_.admits(p.role, request.path):
            return self.deny(f"role {p.role} may not use {endpoint}")
        if endpoint == "/_dash-update-component":
            return self.check_callback(p)
        area = (request.view_args or {}).get("area_id")
        if policy_.scoped and area is not None and not allowed(self.city, str(area)):
            return self.deny("area outside scope")
        return None

    def clean_url(self) -> bool:
        """No control or bidirectional character in the path or the query (ids travel
        there; a CR LF would otherwise reach a redirect's Location header)."""
        if not text.is_clean_id(request.path):
            return False
        return all(
            text.is_clean_id(k) and text.is_clean_id(v) for k, v in request.args.items(multi=True)
        )

    def check_callback(self, p: Principal) -> Response | None:
        if not request.is_json:
            return self.deny("callback body must be JSON", status=403)
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            return self.deny("callback body must be a JSON object", status=400)
        output = str(body.get("output", ""))
        pol = callback_policy(output, self.callbacks().get(output))
        if pol is None:
            return self.deny(f"no policy for callback {text.visible(output[:80])}")
        path = ""
        if pol is ROUTER:  # the page router renders the page of the path it is given
            for item in body.get("inputs") or []:
                if (
                    isinstance(item, dict)
                    and (item.get("id"), item.get("property")) == ("_pages_location", "pathname")
                    and isinstance(item.get("value"), str)
                ):
                    path = item["value"]
        if not pol.admits(p.role, path):
            return self.deny(f"role {p.role} may not run {text.visible(output[:80])}")
        if bad_callback_ids(body):
            odd = first_bad({k: v for k, v in body.items() if k != "output"}) or ""
            why = "control or bidi character in a callback id"
            return self.deny(why, status=400, target=text.visible(odd[:160]))
        return None

    def same_origin(self) -> bool:
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if not origin:
            return True  # non-browser clients; browsers always send Origin on POST
        return urlparse(origin).netloc == request.host

    def wall_login(self) -> BaseResponse | None:
        """``/wall…?token=…`` signs a kiosk in once, then drops the token from the URL."""
        token = request.args.get("token")
        if not token or not request.path.startswith("/wall"):
            return None
        found = accounts.check_wall_token(self.engine, token, self.now_ms())
        if found is None:
            self.audit("wall_token_rejected", target=request.path, actor="anonymous")
            return self.deny("invalid or expired wall token", status=401)
        self.start_session(found.user, wall=found)
        self.audit("wall_login", target=request.path, detail={"token_id": found.token_id})
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        query = urlencode(args)
        return redirect(quote(request.path) + (f"?{query}" if query else ""))

    def safe_principal(self) -> Principal | None:
        """The principal, or None when the session store cannot be read (for records)."""
        try:
            return principal()
        except redis.RedisError:
            return None

    def deny(self, why: str, status: int = 403, target: str | None = None) -> Response:
        p = self.safe_principal()
        who = p.username if p else f"ip:{request.remote_addr}"
        if not self.rate_limited(f"denied:{who}", self.settings.auth.denied_audit_per_minute):
            self.audit(
                "denied",
                target=target or text.visible(request.path),
                detail={"why": why, "status": status, "path": text.visible(request.path)},
            )
        accept = request.accept_mimetypes  # a browser (text/html over */*): a page, not JSON
        if accept["text/html"] > accept["application/json"]:
            return Response(_denied_page(status), status=status, mimetype="text/html")
        error = {400: "bad request", 401: "unauthorized"}.get(status, "forbidden")
        resp = jsonify({"error": error, "why": why if p or status == 400 else "login required"})
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
        p = self.safe_principal()
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
        a = self.settings.auth
        tiles = urlparse(self.settings.dashboard.tile_url)
        tile_src = f" {tiles.scheme}://{tiles.netloc.split('{')[0]}*" if tiles.netloc else ""
        scripts = " ".join(["'self'", *self.csp_hashes()])
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:{tile_src}; connect-src 'self'; font-src 'self' data:; "
            f"object-src 'none'; base-uri 'self'; form-action 'self'; "
            f"frame-ancestors {a.frame_ancestors}"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        if a.frame_ancestors == "'self'":  # else CSP frame-ancestors governs
            resp.headers["X-Frame-Options"] = "SAMEORIGIN"
        if (a.https or request.is_secure) and a.hsts_max_age_s > 0:
            resp.headers["Strict-Transport-Security"] = (
                f"max-age={a.hsts_max_age_s}; includeSubDomains"
            )
        return resp


def _denied_page(status: int) -> bytes:
    titles = {
        400: "请求无效 · Bad request",
        401: "需要登录 · Sign-in required",
    }
    title = titles.get(status, "无权访问 · Access denied")
    hint = "<p>链接无效或已过期 · The link is invalid or expired.</p>" if status == 401 else ""
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
