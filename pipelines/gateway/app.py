"""The gateway's ASGI app (Starlette under uvicorn).

Every route comes from the protocol registry; ``/openapi.json`` is the merge of the
protocols' fragments; an unknown path under a protocol's prefix is answered in that
protocol's error format. The :class:`~pipelines.gateway.core.Gateway` (Redis, SQL, the
city, caches) is built in the lifespan, once per worker process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from pipelines.access import audit
from pipelines.city.geography import City, GridIndex, load_city
from pipelines.gateway import credentials as cr
from pipelines.gateway.core import Gateway
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.registry import METHODS, builtins
from pipelines.ops import metrics
from pipelines.redis_client import connect_async
from pipelines.settings import Settings, load_settings
from pipelines.spine import store
from pipelines.spine.partitions import global_prefix

log = logging.getLogger("wangge.gateway")
VERSION = "1"

DESCRIPTION = """\
Wangge's ingest gateway: phones, hotlines and cameras send in their own protocols; every
accepted event is in its feed's Redis stream before the answer (XADD, then reply), a
refused request writes nothing, and a retried one is a duplicate, never a second event.

Protocols: OsmAnd (Traccar Client, OsmAnd) · Open311 GeoReport v2 · Frigate (MQTT, and
HTTP for push systems) · our own JSON batch API. Who may send: a credential (`wangge
gateway credentials add`) bound to what it may send; per-credential rate limits; bodies
over gateway.max_body_bytes are refused before parsing (413)."""


def openapi_document() -> dict[str, Any]:
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Wangge 网格 — ingest gateway",
            "version": VERSION,
            "description": DESCRIPTION,
        },
        "paths": {},
        "components": {"schemas": {}},
    }
    for proto in builtins().values():
        spec["paths"].update(proto.paths)
        spec["components"]["schemas"].update(proto.schemas)
    return spec


def _not_found(request: Request) -> Response:
    path = request.url.path
    for proto in builtins().values():
        if any(
            path == p or path.startswith(p + "/") or path.startswith(p + ".")
            for p in proto.prefixes
        ):
            return proto.error(
                request, GatewayError(404, "not_found", f"no such resource: {path[:80]}")
            )
    body = {"error": {"code": "not_found", "message": f"no such resource: {path[:80]}"}}
    return JSONResponse(body, status_code=404)


async def _fallback(request: Request) -> Response:
    return _not_found(request)


def protocol_of(scope: Any) -> str:
    """The protocol whose route serves this request (a bounded metrics label)."""
    for proto in builtins().values():
        for r in proto.routes:
            if r.matches(scope)[0] != Match.NONE:
                return proto.name
    return "other"


class RequestMetrics:
    """ASGI middleware: every HTTP request counted by protocol and status, and timed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.observe_request(protocol_of(scope), status, time.perf_counter() - t0)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    city: City | None = None,
    engine: Engine | None = None,
) -> Starlette:
    """The app; Redis, SQL and the city are opened in its lifespan (per worker process)."""
    s = settings or load_settings()
    routes = [r for proto in builtins().values() for r in proto.routes]
    routes.append(Route("/{path:path}", _fallback, methods=METHODS))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_engine = engine is None
        # own engine: it carries the audit key (workers' task answers are audited)
        eng = engine or audit.keyed(
            store.make_engine(s.database_url, s.database.schema or None),
            lambda: audit.key_for(s),
        )
        store.create_schema(eng)
        c = city or load_city(s.geo)
        r = connect_async(s.redis.url, health_check_interval=30)
        gw = Gateway(s, r, eng, c, GridIndex(c), clock=clock)
        # the revocation counter before the snapshot, so a later revocation is noticed (with
        # Redis down, requests get 503 until it is back, and the counter is read then)
        with contextlib.suppress(redis.RedisError, OSError):
            gw.creds.generation = int(await r.get(cr.generation_key(global_prefix(s))) or 0)
        gw.creds.replace_snapshot(cr.load_active(eng), gw.creds.clock())
        app.state.gateway = gw
        gc.freeze()  # the city and caches built so far: never traversed by the collector again
        try:
            yield
        finally:
            await r.aclose()
            if gw.actions is not None:  # the dispatch core's blocking client (tasks.py)
                gw.actions.redis.close()
            if own_engine:
                eng.dispose()

    middleware = [Middleware(RequestMetrics)] if s.metrics.enabled else []
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.openapi = openapi_document()
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: settings from the environment."""
    return create_app(load_settings())
