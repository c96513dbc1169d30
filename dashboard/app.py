"""The Dash app: ``create_app(settings)``; ``server`` for gunicorn (``dashboard.app:server``).

Everything is served locally (Dash, dash-leaflet, Plotly's basic bundle, CSS, JS; no CDN),
scripts and CSS compressed once (``dashboard/static.py``). Geometry is a cacheable,
pre-gzipped response per area; refreshes carry values only, and a shared panel's answer is
serialised once per tick (``dashboard/responses.py``). In front of
Flask: request size limits and trusted proxies (``dashboard/wsgi.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from html import escape as html_escape
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import dash
import redis
from dash import Dash, dcc, html
from flask import Response, make_response, redirect, request
from flask_compress import Compress
from sqlalchemy.exc import SQLAlchemyError

from dashboard import ids, login, ops, responses, static, wsgi
from dashboard.auth import csrf_token, principal
from dashboard.backend import EXTENSION, Backend, Clock, current
from dashboard.components import localise
from dashboard.geometry import Blob, GeometryCache
from dashboard.guard import Guard
from dashboard.i18n import COOKIE, current_lang, normalize, other, recognised, t
from dashboard.pages.work import export as work_export
from pipelines.access import accounts, audit, policy
from pipelines.city import binding
from pipelines.city.geography import City, load_city
from pipelines.redis_client import connect
from pipelines.settings import ROOT, Settings, load_settings
from pipelines.spine import store

NAV = (
    ("nav.panorama", "/"),
    ("nav.work", "/work"),
    ("nav.warnings", "/warnings"),
    ("nav.incidents", "/incidents"),
    ("nav.assessment", "/assessment"),
    ("nav.wall", "/wall"),
    ("nav.audit", "/admin/audit"),
)


def _aria(**attrs: str) -> Any:
    """``aria-*`` attributes for a component (Dash takes them as keyword arguments)."""
    return {f"aria-{k}": v for k, v in attrs.items()}


def _shell(settings: Settings) -> Any:
    def layout() -> Any:
        lang = current_lang(settings.dashboard.language)
        path = request.path if request else "/"
        wall = path.startswith("/wall")
        p = principal()
        role = p.role if p else None
        nav = [(key, href) for key, href in NAV if _opens(role, href)]
        header = html.Div(
            [
                html.Div(t("app.title", lang), className="wg-brand"),
                html.Button(  # small screens: opens the menu (assets/wangge_menu.js)
                    "☰",
                    id="shell-menu-toggle",
                    className="wg-menu-toggle",
                    title=t("nav.menu", lang),
                    **_aria(label=t("nav.menu", lang), expanded="false"),
                ),
                html.Nav(
                    [dcc.Link(t(key, lang), href=href) for key, href in nav], className="wg-nav"
                ),
                html.Span(id=ids.FRESH, className="wg-fresh"),
                _user_box(lang),
                html.A(
                    t("lang.switch", lang),
                    href=f"/lang/{other(lang)}",
                    className="wg-lang",
                    id="shell-lang-link",
                ),
            ],
            className="wg-header",
            style={"display": "none"} if wall else {},
        )
        return html.Div(
            [
                dcc.Location(id=ids.URL, refresh="callback-nav"),
                dcc.Store(id=ids.LANG, data=lang),
                dcc.Store(id=ids.PUSH, data=push_config(settings, lang)),
                header,
                html.Div(dash.page_container, className="" if wall else "wg-main"),
            ],
            id="wg-shell",
            lang=lang,  # the page's language: CJK fonts, screen readers, date pickers' words
        )

    return layout


def push_config(settings: Settings, lang: str) -> dict[str, Any] | None:
    """What ``assets/wangge_push.js`` needs: the push server's base URL ("" the page's
    origin, ":PORT" the page's host on that port), the tick and the stale mark's words;
    None when push is off (the pages poll)."""
    p = settings.push
    if not p.enabled:
        return None
    return {
        "url": p.url.rstrip("/"),
        "refresh_ms": int(settings.dashboard.refresh_s * 1000),
        "stale": t("fresh.stale", lang, t="%T%"),
        "tz": settings.live.timezone,
    }


def _opens(role: str | None, href: str) -> bool:
    page = policy.page_of(href)
    return page is None or policy.may_open(role, page)


def _user_box(lang: str) -> Any:
    p = principal()
    if p is None:
        return html.Span()
    return html.Form(
        [
            html.Span(
                user_label(p.display_name, p.username, p.role, lang),
                className="wg-user",
                id="shell-user",
            ),
            dcc.Input(type="hidden", name="csrf", value=csrf_token()),
            html.Button(
                t("auth.logout", lang), type="submit", className="wg-logout", id="shell-logout"
            ),
        ],
        action="/logout",
        method="post",
        className="wg-userbox",
    )


def user_label(display_name: str, username: str, role: str, lang: str) -> str:
    """The header's "name · role" (pure). A display name that only restates a role (an
    account named "市领导 (demo)") shows the username instead, so the role reads once."""
    name = (display_name or "").strip() or username
    bare = re.sub(r"\s*(\(demo\)|（演示）)$", "", name).strip()
    roles = {t(f"role.{r}", lg) for r in accounts.ROLES for lg in ("zh-CN", "en")}
    if bare in roles:
        name = username
    return f"{name} · {t(f'role.{role}', lang)}"


def _backend_down(_exc: Exception) -> Response:
    """Redis or the database unreachable during a request: a clear 503, never a traceback."""
    if request.accept_mimetypes.best == "text/html":
        body = (
            "<!doctype html><meta charset=utf-8><title>服务暂不可用 · Unavailable</title>"
            "<body style='background:#06101f;color:#d8e9ff;font-family:sans-serif;"
            "text-align:center;padding-top:15vh'><h2>服务暂不可用 · Service unavailable</h2>"
            "<p>数据服务暂时无法访问，请稍后刷新。· The data service is unreachable; "
            "please retry shortly.</p></body>"
        )
        resp = make_response(body, 503)
    else:
        resp = make_response({"error": "backend unavailable"}, 503)
    resp.headers["Retry-After"] = "5"
    return resp


def _navigation() -> bool:
    """Whether this request is the browser opening a page (its address bar, a link, a
    frame), not a request a page makes (fetch, EventSource, image). Fetch metadata says so
    in current browsers; an older one that sends none is taken at its word unless it
    asks for an event stream."""
    dest = request.headers.get("Sec-Fetch-Dest")
    if dest is not None:
        return dest in ("document", "iframe")
    return "text/event-stream" not in request.headers.get("Accept", "")


def _send(blob: Blob) -> Response:
    if request.headers.get("If-None-Match") == blob.etag:
        resp = make_response("", 304)
    elif "gzip" in request.headers.get("Accept-Encoding", ""):
        resp = make_response(blob.gz)
        resp.headers["Content-Encoding"] = "gzip"
    else:
        resp = make_response(blob.raw)
    resp.headers["Content-Type"] = "application/geo+json"
    resp.headers["ETag"] = blob.etag
    resp.headers["Cache-Control"] = "public, max-age=3600"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


def _routes(app: Dash, settings: Settings, geometry: GeometryCache) -> None:
    server = app.server

    @server.route("/geo/area/<area_id>.json")
    def geo_area(area_id: str) -> Response:
        blob = geometry.area(area_id)
        if blob is None:
            return make_response({"error": "unknown area", "area_id": area_id}, 404)
        return _send(blob)

    @server.route("/geo/grids.json")
    def geo_grids() -> Response:
        return _send(geometry.grids())

    @server.route("/clock.json")
    def server_clock() -> Response:
        """The server's time: the clock the data's "today" is read by. A wall screen's
        clock keeps to it (assets/wangge_wall.js): a wall PC on a closed network often
        has no time server, and its own clock drifts."""
        resp = make_response({"ms": current().now_ms()})
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @server.route("/push/<path:_rest>")
    def no_push_here(_rest: str) -> Response:
        """Push streams are the push server's (a proxy routes ``/push`` to it); reaching
        the web server means none is routed here: a plain 404 ends the browser's
        EventSource attempt at once (the page polls), instead of a page."""
        resp = make_response("no push server at this address; the page polls\n", 404)
        resp.mimetype = "text/plain"
        return resp

    @server.route("/lang/<code>")
    def set_lang(code: str) -> Response:
        target = request.args.get("next") or request.referrer or "/"
        parsed = urlparse(target)
        # Only same-site paths: never an open redirect.
        same_site = not parsed.netloc or parsed.netloc == request.host
        local = same_site and parsed.path.startswith("/")
        safe = parsed.path if local and not parsed.path.startswith("//") else "/"
        resp = make_response(redirect(safe))
        _remember_lang(resp, code)
        return resp

    @server.after_request
    def lang_of_the_url(resp: Response) -> Response:
        """A page opened with ``?lang=en`` (a wall screen's configured URL, a link) keeps
        that language: the page's layout and callbacks are later requests without the
        query, which read the cookie."""
        code = request.args.get("lang") if request.method == "GET" else None
        # a page the browser navigates to (not a push stream, a fetch or a file that names
        # its language), in a language we speak
        page = resp.status_code == 200 and resp.mimetype == "text/html" and _navigation()
        if page and recognised(code):
            _remember_lang(resp, str(code))
        return resp

    def _remember_lang(resp: Response, code: str) -> None:
        secure = settings.auth.https or request.is_secure
        resp.set_cookie(
            COOKIE,
            normalize(code),
            max_age=365 * 86400,
            httponly=True,
            samesite="Lax",
            secure=secure,
        )


class LocalDash(Dash):
    """Dash whose page, until its layout is drawn, speaks the viewer's language: Dash's
    boot screen and its renderer say "Loading..." in English, and its ``<html>`` has no
    ``lang``."""

    default_lang = "zh-CN"

    def interpolate_index(
        self,
        metas: Any = "",
        title: Any = "",
        css: Any = "",
        config: Any = "",
        scripts: Any = "",
        app_entry: Any = "",
        favicon: Any = "",
        renderer: Any = "",
    ) -> Any:
        lang = current_lang(self.default_lang)
        words = t("app.loading", lang)
        entry = str(app_entry).replace("Loading...", html_escape(words))
        # the renderer writes its own "Loading..." while the layout loads: shown in words
        hush = (
            "<style>._dash-loading{font-size:0}._dash-loading::after"
            f"{{content:{json.dumps(words, ensure_ascii=False)};font-size:1rem}}</style>"
        )
        page = super().interpolate_index(
            metas, title, f"{css}\n{hush}", config, scripts, entry, favicon, renderer
        )
        return str(page).replace("<html>", f'<html lang="{lang}">', 1)


def create_app(
    settings: Settings,
    *,
    city: City | None = None,
    r: redis.Redis | None = None,
    clock: Clock = time.time,
) -> Dash:
    """Build the app; the backend connects lazily, so a down Redis never stops it."""
    city = city or load_city(settings.geo)
    r = r or connect(
        settings.redis.url or "redis://127.0.0.1:6379/0",
        socket_timeout=3,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
    # The audit key is checked now: a server database without one is a startup error.
    engine = audit.keyed(
        store.make_engine(settings.database_url, settings.database.schema or None),
        audit.key_for(settings),
    )
    with contextlib.suppress(SQLAlchemyError):  # idempotent; a down database is handled per request
        store.create_schema(engine)
        audit.seal(engine, int(clock() * 1000))  # a chain from before the key: sealed
    # A database or Redis prefix of another city refuses to serve (binding.CityMismatch);
    # one that is down is checked by the pipelines when it is back.
    with contextlib.suppress(SQLAlchemyError):
        binding.check_database(engine, city, int(clock() * 1000))
    with contextlib.suppress(redis.RedisError):
        binding.check_redis(r, settings.redis.prefix, city)
    app = LocalDash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        assets_folder=str(ROOT / "assets"),
        serve_locally=True,
        title="网格 · Wangge",
        update_title="",
        suppress_callback_exceptions=True,
        compress=False,
    )
    app.default_lang = settings.dashboard.language
    # Dash's own words in its dropdowns and date pickers: the catalog's, in the page's language
    localise.wrap_pages(dash.page_registry, lambda: current_lang(settings.dashboard.language))
    app.server.extensions[EXTENSION] = Backend(settings, city, r, engine, clock=clock)
    app.server.config["WANGGE_SETTINGS"] = settings
    Compress(app.server)
    # shared panels' responses serialised once per tick (dashboard/responses.py)
    responses.install(app.server, settings.dashboard.refresh_s, r, settings.redis.prefix)
    # the basic Plotly bundle; scripts and CSS compressed once, before Flask-Compress sees them
    static.use_basic_plotly(ROOT / "assets")
    static.defer_ag_grid()
    static.ship_geojson_layer()
    cache_dir = settings.path(settings.run.var_dir) / "cache" / "static"
    static.StaticCompressor(cache_dir).install(app.server)
    geometry = GeometryCache(city, settings.geo.simplify_m)
    _routes(app, settings, geometry)
    # the city's every grid (12,545 shapes, ~1 s to build and compress) is built before the
    # first "show all grids" asks for it (a request before it is done builds its own copy)
    threading.Thread(target=geometry.grids, name="geo-warm", daemon=True).start()
    guard = Guard(
        settings,
        city,
        r,
        engine,
        csp_hashes=lambda: list(app.csp_hashes()),
        clock=clock,
        callbacks=lambda: dict(app.callback_map),
    )
    guard.install(app.server)
    ops.install(app.server, app.server.extensions[EXTENSION], lambda: dict(app.callback_map))
    app.server.register_error_handler(SQLAlchemyError, _backend_down)
    app.server.register_error_handler(redis.RedisError, _backend_down)
    login.install(app.server, guard)
    work_export.install(app.server, guard)  # grid work: audited, rate-limited track CSV
    app.layout = _shell(settings)
    _middleware(app.server, settings)
    _set_up_now(app)
    return app


def _set_up_now(app: Dash) -> None:
    """Dash finishes its setup on the first request (the pages' callbacks moved into
    ``callback_map``, the pages' router added), marking it done before doing it: the
    other requests arriving at once on a fresh worker's threads found callbacks missing
    (500 "Callback function not found", seen when a killed worker's replacement took
    over its viewers). Run once here, before the worker takes a connection."""
    with app.server.test_request_context("/"):
        for hook in list(app.server.before_request_funcs.get(None, [])):
            if getattr(hook, "__module__", "").startswith("dash."):
                hook()


def body_limit(settings: Settings) -> Callable[[str], int]:
    """Bytes a request body to ``path`` may have: callbacks have their own, larger limit."""
    a = settings.auth
    callback, other = a.max_callback_kb * 1024, a.max_body_kb * 1024
    return lambda path: callback if path == "/_dash-update-component" else other


def _middleware(server: Any, settings: Settings) -> None:
    """Size limits first (nothing reads an oversized body), then trusted proxies."""
    app = server.wsgi_app
    if settings.auth.proxy_count > 0:
        app = wsgi.TrustedProxies(app, settings.auth.proxy_count, settings.auth.trusted_proxies)
    server.wsgi_app = wsgi.BodyLimit(app, body_limit(settings))


def page_module(name: str, part: str = "callbacks") -> ModuleType:
    """A page's module as the latest app loaded it (Dash executes pages once per app)."""
    return sys.modules[f"pages.{name}.{part}"]


@functools.cache
def _server() -> Any:
    return create_app(load_settings()).server


def __getattr__(name: str) -> Any:
    """``server`` for gunicorn, built on first access (importing this module is cheap)."""
    if name == "server":
        return _server()
    raise AttributeError(name)
