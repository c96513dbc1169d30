"""The push server's HTTP side: ``GET /push/<page>`` for each page of ``spec.PAGES`` (event
streams), ``/push/healthz``, ``/push/readyz`` and ``/metrics`` (also ``/push/metrics``, for
a proxy that routes ``/push`` only); ``python -m dashboard.push`` serves it (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from dashboard.push.hub import CLOSE, COOKIE, Hub, Refusal, Viewer
from pipelines.access import audit
from pipelines.city.geography import City
from pipelines.ops import metrics as M
from pipelines.settings import Settings, load_settings
from pipelines.spine import store

log = logging.getLogger("wangge.push")
HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}
RAW_SEND = "wangge.push.send"
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


class EventStream(Response):
    """A viewer's event stream (plain ASGI): the frames the hub queues are written as they
    come, all those waiting in one write; the stream ends when the hub closes it (the
    session ended or lost the right: ``event: close`` first) or the client goes."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, viewer: Viewer, headers: dict[str, str]) -> None:
        self.hub = hub
        self.viewer = viewer
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        viewer = self.viewer
        gone = asyncio.ensure_future(self._disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            retry = b"retry: %d\n\n" % RETRY_MS
            await send({"type": "http.response.body", "body": retry, "more_body": True})
            viewer.direct = _transport(scope)
            while True:
                frames = await viewer.take()
                if None in frames:  # closed by the hub (or the client went): the last write
                    last = [f for f in frames[: frames.index(None)] if f is not None]
                    await send({"type": "http.response.body", "body": b"".join(last) + CLOSE})
                    return
                ready = [f for f in frames if f is not None]
                body = ready[0] if len(ready) == 1 else b"".join(ready)
                viewer.busy = True  # until written: a frame meanwhile queues behind these
                try:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                finally:
                    viewer.busy = False
        except OSError:  # the connection broke
            pass
        finally:
            viewer.direct = None
            gone.cancel()
            self.hub.leave(viewer)

    async def _disconnected(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.viewer.gone()


def _transport(scope: Scope) -> asyncio.WriteTransport | None:
    """The connection a stream may write its chunks to directly: uvicorn's httptools
    protocol (a chunked response, nothing but our bytes on it until the stream ends; its
    own writes and flow control use the same transport). Any other server: None (every
    frame through ASGI ``send``)."""
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    if type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    transport = getattr(cycle, "transport", None)
    if getattr(cycle, "chunked_encoding", None) is not True or transport is None:
        return None
    return transport


class PushApp(Starlette):
    """The push app; it keeps the server's own ``send`` in the scope (``RAW_SEND``: the
    middlewares wrap the one the routes get) for :func:`_transport`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


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
            if got.status >= 500:  # not the viewer's doing
                log.warning("push: a stream refused: %s", got.why)
            return PlainTextResponse(got.why, status_code=got.status, headers=cors)
        return EventStream(hub, got, {**HEADERS, **cors})

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse(f"ok {hub.viewers()} viewers")

    async def readyz(_request: Request) -> Response:
        try:
            await hub.r.ping()
        except (redis.RedisError, OSError):
            return PlainTextResponse("redis unreachable", status_code=503)
        return PlainTextResponse("ready")

    async def metrics(request: Request) -> Response:
        """Prometheus text (``[metrics]``: the allowed networks or the bearer token), as the
        web server and the gateway serve it; several workers' files are summed."""
        m = settings.metrics
        if not m.enabled:
            return PlainTextResponse("not found", status_code=404)
        peer = request.client.host if request.client else None
        if not M.allowed(peer, request.headers.get("authorization"), m.allow, m.token):
            return PlainTextResponse("forbidden", status_code=403)
        body = await run_in_threadpool(M.exposition)
        return Response(body, media_type=M.CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            engine.dispose()

    app = PushApp(
        routes=[
            Route("/push/healthz", healthz),
            Route("/push/readyz", readyz),
            Route("/push/metrics", metrics),
            Route("/metrics", metrics),
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
    from pipelines.ops.asgi import serve_asgi

    p = settings.push
    serve_asgi(
        settings,
        "push",
        host=p.host,
        port=p.port if port is None else port,
        workers=p.workers,
        factory="dashboard.push.server:app_from_env",
        make_app=lambda: create_app(settings),
        timeout_graceful_shutdown=3,  # open streams never end by themselves
    )
    return 0
