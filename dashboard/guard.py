"""The request guard: loads the session, enforces every route's and callback's policy,
audits logins and denials, rate-limits, sets the security headers; plus the cookie session
interface, the secret key and the redaction of wall tokens from every log line.

The rules it enforces (who may see what) live in :mod:`dashboard.auth`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import redis
from flask import (
    Flask,
    Response,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from dashboard.auth import (
    FREE_TEXT_INPUTS,
    GUARD,
    ROUTE_POLICIES,
    ROUTER,
    Principal,
    _id_of,
    allowed,
    callback_policy,
    principal,
)
from dashboard.i18n import current_lang, t
from pipelines.access import accounts, audit, policy, text, wall_tokens
from pipelines.access import sessions as S
from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine.partitions import global_prefix


class SessionInterface(SecureCookieSessionInterface):
    """Cookie session whose Secure flag follows the request (set behind TLS), or is always
    on with ``auth.https``."""

    def get_cookie_secure(self, app: Flask) -> bool:
        settings = app.config.get("WANGGE_SETTINGS")
        if settings is not None and settings.auth.https:
            return True
        return bool(request.is_secure) if request else False


def account_grants(engine: Any, s: S.Session, now_ms: int) -> bool:
    """Does the account (a wall: the token) in SQL still grant this session? (The guard's
    periodic re-check, and the push server's for streams that make no request.)"""
    if s.wall:
        return wall_tokens.wall_token_active(engine, s.token_id, now_ms) is not None
    user = accounts.get_user(engine, s.username)
    return (
        user is not None
        and not user.disabled
        and (user.role, user.scope_area_id) == (s.role, s.scope)
        and user.stamp == s.stamp
    )


def push_sources(url: str, host: str) -> list[str]:
    """CSP ``connect-src`` entries for the push server (``push.url``): none for the page's
    own origin, the page's host on that port for ":PORT", else the URL's origin."""
    url = url.strip().rstrip("/")
    if not url:
        return []
    if url.startswith(":") and url[1:].isdigit():
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return [f"http://{name}{url}", f"https://{name}{url}"]
    parts = urlparse(url)
    return [f"{parts.scheme}://{parts.netloc}"] if parts.scheme and parts.netloc else []


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
        for target in targets:
            if not any(isinstance(f, RedactTokens) for f in target.filters):
                target.addFilter(RedactTokens())


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
            global_prefix(self.settings),
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
        return account_grants(self.engine, s, now_ms)

    def start_session(
        self,
        user: accounts.User,
        wall: wall_tokens.WallLogin | None = None,
        csrf: str | None = None,
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
        if p is not None and endpoint in PAGE_ENDPOINTS and kiosk_elsewhere(p, request.path):
            return redirect("/wall")  # a wall screen stays on wall pages
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
        """``/wall…?token=…`` signs a kiosk in once, then drops the token from the URL.

        A person already signed in in this browser keeps their session: the wall opens in
        it when their role may open the wall, else a page asks before switching
        (``&switch=1`` switches, as does signing out first)."""
        token = request.args.get("token")
        if not token or not request.path.startswith("/wall"):
            return None
        found = wall_tokens.check_wall_token(self.engine, token, self.now_ms())
        if found is None:
            self.audit("wall_token_rejected", target=request.path, actor="anonymous")
            return self.deny("invalid or expired wall token", status=401)
        args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("token", "switch")]
        query = urlencode(args)
        target = quote(request.path) + (f"?{query}" if query else "")
        person = self.safe_principal()
        if person is not None and not person.wall and request.args.get("switch") != "1":
            if policy.may_open(person.role, "wall"):
                return redirect(target)  # the wall, in the person's own session
            return self.confirm_switch(person)
        self.start_session(found.user, wall=found)
        self.audit("wall_login", target=request.path, detail={"token_id": found.token_id})
        return redirect(target)

    def confirm_switch(self, person: Principal) -> Response:
        """Ask before a wall token ends the signed-in person's session in this browser."""
        lang = current_lang(self.settings.dashboard.language)
        who = person.display_name or person.username
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "switch"]
        switch = html_escape(quote(request.path) + "?" + urlencode([*args, ("switch", "1")]))
        body = (
            f"<!doctype html><meta charset=utf-8><title>{t('wall.switch.title', lang)}</title>"
            "<body style='background:#06101f;color:#d8e9ff;font-family:sans-serif;"
            f"text-align:center;padding-top:15vh'><h2>{t('wall.switch.title', lang)}</h2>"
            f"<p>{html_escape(t('wall.switch.body', lang, user=who))}</p>"
            f"<p><a id='wall-switch' style='color:#41c7ff' href='{switch}'>"
            f"{t('wall.switch.yes', lang)}</a> · <a id='wall-stay' style='color:#41c7ff' "
            f"href='{html_escape(policy.home(person.role))}'>{t('wall.switch.no', lang)}</a>"
            "</p></body>"
        )
        resp = Response(body, 200, mimetype="text/html")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

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
        connect = " ".join(["'self'", *push_sources(self.settings.push.url, request.host)])
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:{tile_src}; connect-src {connect}; "
            "font-src 'self' data:; "
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


# The routes that render a page (a kiosk session asking for another page goes to /wall).
PAGE_ENDPOINTS = frozenset({"/", "/<path:path>", "admin_audit"})


def kiosk_elsewhere(p: Principal, path: str) -> bool:
    """A wall (kiosk) session asking for a page that is not a wall page."""
    if not (p.wall or p.role in policy.KIOSK_ROLES):
        return False
    page = policy.page_of(path)
    return page is None or not page.kiosk


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
