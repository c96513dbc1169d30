"""The dashboard's operational endpoints and metrics (see :mod:`pipelines.ops`).

* ``/healthz`` — alive (200; ``redis`` says whether Redis answered, as a hint).
* ``/readyz`` — Redis, the database and the city: 200, else 503 with the reasons.
* ``/metrics`` — Prometheus text, only for ``metrics.allow`` networks or the bearer
  ``metrics.token`` (403 otherwise; 404 when ``metrics.enabled`` is off).
* Every ``/_dash-update-component`` is timed by page (the policy's page of the callback:
  a bounded label) and notes its session as a viewer (hashed, in Redis: "viewers
  connected" is the number of distinct sessions seen in the last ``viewer_window_s``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from flask import Flask, Response, g, make_response, request

from dashboard.auth import ROUTER, callback_policy, current_session
from pipelines.ops import health as H
from pipelines.ops import metrics as M

CALLBACK = "/_dash-update-component"


def callback_page(body: object, callbacks: dict[str, Any]) -> str:
    """The page a callback request serves, for the latency label (pure): the policy's
    page, ``router`` for the page router, ``other`` for anything unknown."""
    if not isinstance(body, dict):
        return "other"
    output = str(body.get("output", ""))
    pol = callback_policy(output, callbacks.get(output))
    if pol is None:
        return "other"
    if pol is ROUTER:
        return "router"
    return str(pol.page or "other")


def install(server: Flask, backend: Any, callbacks: Any) -> None:
    settings = backend.settings
    m = settings.metrics
    seen = M.ViewerSeen(backend.r, settings.redis.prefix)
    extra = [
        M.StreamCollector(backend.r, settings),
        M.ViewersCollector(backend.r, settings.redis.prefix, m.viewer_window_s, backend.clock),
    ]

    @server.route("/healthz")
    def healthz() -> Response:
        try:
            backend.r.ping()
            ok = True
        except (redis.RedisError, OSError):
            ok = False
        return make_response({"redis": ok}, 200)

    @server.route("/readyz")
    def readyz() -> Response:
        ok, checks = H.readiness(backend.r, backend.engine, backend.city)
        resp = make_response(H.ready_body(ok, checks), 200 if ok else 503)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @server.route("/metrics")
    def metrics_page() -> Response:
        if not m.enabled:
            return make_response({"error": "not found"}, 404)
        auth = request.headers.get("Authorization")
        if not M.allowed(request.remote_addr, auth, m.allow, m.token):
            return make_response({"error": "forbidden"}, 403)
        resp = make_response(M.exposition(extra))
        resp.headers["Content-Type"] = M.CONTENT_TYPE
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @server.before_request
    def _start() -> None:
        if request.path == CALLBACK:
            g.wg_t0 = time.perf_counter()

    @server.after_request
    def _observe(resp: Response) -> Response:
        t0 = g.pop("wg_t0", None)
        if t0 is None or not m.enabled:
            return resp
        page = callback_page(request.get_json(silent=True), callbacks())
        M.observe_callback(page, time.perf_counter() - t0)
        s = current_session() if resp.status_code < 400 else None
        if s is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                seen(str(s.sid), int(backend.clock() * 1000))
        return resp
