"""Liveness and readiness, the same on every HTTP process, and the pipelines' small server.

* ``/healthz`` — the process answers (200).
* ``/readyz`` — Redis answers, the database answers and the city is loaded: 200 with each
  check, else 503 with a JSON reason per failed check (never a traceback or a URL).
* ``/metrics`` — see :mod:`pipelines.ops.metrics` (restricted by ``[metrics]``).

The pipelines process serves the three on ``metrics.pipelines_port`` from a thread
(:class:`OpsServer`); the dashboard and the gateway serve them on their own port.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from pipelines.ops import metrics as M

log = logging.getLogger("wangge.ops")


def readiness(
    r: redis.Redis | None, engine: Engine | None, city: Any | None
) -> tuple[bool, dict[str, str]]:
    """(ready, check → "ok" or why not). Each check is independent: a down Redis does not
    hide a down database."""
    checks: dict[str, str] = {}
    if r is not None:
        try:
            r.ping()
            checks["redis"] = "ok"
        except (redis.RedisError, OSError) as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    if engine is not None:
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except (SQLAlchemyError, OSError) as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["city"] = city_check(city)
    return all(v == "ok" for v in checks.values()), checks


def city_check(city: Any | None) -> str:
    if city is None:
        return "not loaded"
    try:
        n = len(city.ids("grid"))
    except Exception:
        return "not loaded"
    return "ok" if n > 0 else "no grids"


def ready_body(ok: bool, checks: dict[str, str]) -> dict[str, Any]:
    return {"status": "ready" if ok else "not ready", "checks": checks}


# ------------------------------------------------------------------ the pipelines' server


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of the pipelines process, in a thread."""

    def __init__(
        self,
        settings: Any,
        r: redis.Redis,
        engine: Engine,
        city: Any,
        extra: Iterable[Any] | None = None,
        children_dir: str | None = None,
    ) -> None:
        self.settings = settings
        m = settings.metrics
        collectors = list(extra) if extra is not None else [M.StreamCollector(r, settings)]
        ready: Callable[[], tuple[bool, dict[str, str]]] = lambda: readiness(r, engine, city)  # noqa: E731
        handler = _handler(m.allow, m.token, ready, lambda: M.exposition(collectors, children_dir))
        self.httpd = ThreadingHTTPServer((m.pipelines_host, m.pipelines_port), handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OpsServer:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="ops-http", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(
    allow: str,
    token: str,
    ready: Callable[[], tuple[bool, dict[str, str]]],
    page: Callable[[], bytes],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "wangge-ops"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                ok, checks = ready()
                self._json(200 if ok else 503, ready_body(ok, checks))
            elif path == "/metrics":
                if not M.allowed(
                    self.client_address[0], self.headers.get("Authorization"), allow, token
                ):
                    self._json(403, {"error": "forbidden"})
                    return
                self._send(200, M.CONTENT_TYPE, page())
            else:
                self._json(404, {"error": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ops %s", format % args)

    return Handler
