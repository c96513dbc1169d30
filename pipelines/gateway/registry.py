"""The protocol registry: each protocol is a module with one :class:`Protocol` row.

The app mounts every registered protocol's routes, merges their OpenAPI fragments into
``/openapi.json`` and renders each protocol's errors in its own format. Built-ins go
through the same registry (``builtins()``), datasette-style: adding a protocol is a
module that calls :func:`register`, plus its line in ``BUILTINS``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.gateway.errors import GatewayError

log = logging.getLogger("wangge.gateway")

ErrorRenderer = Callable[[Request, GatewayError], Response]
Handler = Callable[[Request], Awaitable[Response]]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    description: str
    routes: list[Route]
    error: ErrorRenderer
    paths: dict[str, Any] = field(default_factory=dict)  # OpenAPI paths
    schemas: dict[str, Any] = field(default_factory=dict)  # OpenAPI components.schemas
    prefixes: tuple[str, ...] = ()  # unknown paths under these get this protocol's 404


REGISTRY: dict[str, Protocol] = {}
BUILTINS = (
    "pipelines.gateway.health",
    "pipelines.gateway.osmand",
    "pipelines.gateway.open311",
    "pipelines.gateway.frigate",
    "pipelines.gateway.batch",
    "pipelines.gateway.tasks",
)


def register(protocol: Protocol) -> Protocol:
    REGISTRY[protocol.name] = protocol
    return protocol


def builtins() -> dict[str, Protocol]:
    for module in BUILTINS:
        importlib.import_module(module)
    return REGISTRY


def endpoint(render: ErrorRenderer, methods: tuple[str, ...]) -> Callable[[Handler], Handler]:
    """Wrap a handler: other methods get 405, refusals and failures the protocol's own
    error format (an unexpected failure is logged and answered 500, never a traceback)."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                if request.method not in methods and not (
                    request.method == "HEAD" and "GET" in methods
                ):
                    raise GatewayError(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here",
                        headers={"Allow": ", ".join(methods)},
                    )
                return await fn(request)
            except GatewayError as err:
                resp = render(request, err)
            except Exception:  # the last resort: logged, answered in the protocol's format
                log.exception("%s %s", request.method, request.url.path)
                resp = render(request, GatewayError(500, "internal", "internal error"))
            return resp

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def route(path: str, render: ErrorRenderer, methods: tuple[str, ...]) -> Callable[[Handler], Route]:
    """A route taking every method (so a wrong one is answered in the protocol's format)."""

    def make(fn: Handler) -> Route:
        return Route(path, endpoint(render, methods)(fn), methods=METHODS)

    return make


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 before any parsing when over ``limit`` bytes
    (by its declared length, or while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise GatewayError(400, "bad_request", "bad Content-Length") from None
        if size > limit:
            raise GatewayError(413, "too_large", f"body over {limit} bytes")
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise GatewayError(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
