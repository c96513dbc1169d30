"""The push server's HTTP side: ``GET /push/pan`` and ``/push/wall`` (event streams),
``/push/healthz`` and ``/push/readyz``; ``python -m dashboard.push`` serves it (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dashboard.push.hub import CLOSE, COOKIE, Hub, Refusal, Viewer
from pipelines.access import audit
from pipelines.city.geography import City
from pipelines.settings import Settings, load_settings
from pipelines.spine import store

HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}
RETRY_MS = 2000  # the browser reconnects after this long when a stream drops


def _cors(hub: Hub, request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "").rstrip("/")
    if origin and hub.origin_allowed(origin, request.headers.get("host")):
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
    return {}


async def _events(hub: Hub, viewer: Viewer) -> AsyncIterator[bytes]:
    heartbeat = max(1.0, hub.settings.push.heartbeat_s)
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        while True:
            try:
                item = await asyncio.wait_for(viewer.queue.get(), heartbeat)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:  # the session ended or lost the right: say so, then close
                yield CLOSE
                return
            yield item
    finally:
        hub.leave(viewer)


def create_app(
    settings: Settings,
    *,
    city: City | None = None,
    engine: Any = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The push app; its hub starts with the app (lifespan)."""
    if city is None:
        from pipelines.cli.runtime import load_city

        city = load_city(settings)
    if engine is None:  # keyed like the dashboard's: refusals go into the audit chain
        engine = audit.keyed(
            store.make_engine(settings.database_url, settings.database.schema or None),
            audit.key_for(settings),
        )
    hub = Hub(settings, city, engine, clock=clock)

    async def stream(request: Request) -> Response:
        page = request.path_params["page"]
        cors = _cors(hub, request)
        if not hub.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
            return PlainTextResponse("foreign origin", status_code=403)
        got = await hub.connect(
            page,
            dict(request.query_params),
            request.headers.get("cookie", ""),
            request.cookies.get(COOKIE),
            request.client.host if request.client else "",
        )
        if isinstance(got, Refusal):
            return PlainTextResponse(got.why, status_code=got.status, headers=cors)
        return StreamingResponse(
            _events(hub, got), media_type="text/event-stream", headers={**HEADERS, **cors}
        )

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse(f"ok {hub.viewers()} viewers")

    async def readyz(_request: Request) -> Response:
        try:
            await hub.r.ping()
        except (redis.RedisError, OSError):
            return PlainTextResponse("redis unreachable", status_code=503)
        return PlainTextResponse("ready")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            engine.dispose()

    app = Starlette(
        routes=[
            Route("/push/healthz", healthz),
            Route("/push/readyz", readyz),
            Route("/push/{page}", stream),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


def app_from_env() -> Starlette:
    """For uvicorn's worker processes (``--workers`` > 1): settings from the environment."""
    return create_app(load_settings())


def serve(settings: Settings, port: int | None = None) -> int:
    """Serve until SIGINT / SIGTERM (uvicorn's own handling)."""
    import uvicorn

    p = settings.push
    opts: dict[str, Any] = {
        "host": p.host,
        "port": p.port if port is None else port,
        "log_level": "warning",
        "access_log": False,
        "http": "httptools",
        "loop": "uvloop" if os.name == "posix" else "auto",
        "proxy_headers": True,
        "lifespan": "on",
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 3,  # open streams never end by themselves
    }
    if p.workers > 1:
        uvicorn.run("dashboard.push.server:app_from_env", factory=True, workers=p.workers, **opts)
    else:
        uvicorn.Server(uvicorn.Config(create_app(settings), **opts)).run()
    return 0
