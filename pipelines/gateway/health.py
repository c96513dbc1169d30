"""The gateway's own endpoints: liveness, readiness, the OpenAPI document and its docs.

* ``GET /healthz`` — the process answers (200).
* ``GET /readyz`` — Redis answers and a stream can be written (an XADD to the gateway's
  own capped probe stream), the database answers and the city is loaded; 503 with what
  failed otherwise.
* ``GET /metrics`` — Prometheus text (pipelines/ops/metrics.py), for ``metrics.allow``
  networks or the bearer ``metrics.token`` only.
* ``GET /openapi.json`` — every registered protocol's operations (OpenAPI 3.1).
* ``GET /docs`` — the same, as one self-contained HTML page (no CDN, works offline).
"""

from __future__ import annotations

import html
import json
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from pipelines.gateway import core
from pipelines.gateway.errors import json_error
from pipelines.gateway.registry import Protocol, register, route
from pipelines.ops import health as ops_health
from pipelines.ops import metrics as ops_metrics

render = json_error


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    checks = {"redis": "not checked", "stream": "not checked"}
    try:
        await gw.r.ping()
        checks["redis"] = "ok"
        await gw.r.xadd(gw.key("probe"), {b"data": b"{}"}, maxlen=10, approximate=False)
        checks["stream"] = "ok"
    except (redis.RedisError, OSError) as exc:
        checks["redis" if checks["redis"] != "ok" else "stream"] = f"failed: {type(exc).__name__}"
    _, more = await run_in_threadpool(ops_health.readiness, None, gw.engine, gw.city)
    checks |= more
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )


async def metrics_page(request: Request) -> Response:
    """Prometheus text (``[metrics]``: the allowed networks or the bearer token)."""
    m = request.app.state.gateway.settings.metrics
    if not m.enabled:
        return JSONResponse({"error": {"code": "not_found", "message": "no metrics"}}, 404)
    peer = request.client.host if request.client else None
    if not ops_metrics.allowed(peer, request.headers.get("authorization"), m.allow, m.token):
        return JSONResponse({"error": {"code": "forbidden", "message": "not allowed"}}, 403)
    body = await run_in_threadpool(ops_metrics.exposition)
    return Response(
        body, media_type=ops_metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(docs_page(request.app.state.openapi))


def docs_page(spec: dict[str, Any]) -> str:
    """A readable, self-contained page of the OpenAPI document (no scripts, no CDN)."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>{e(spec['info']['title'])}</title><style>",
        "body{font:15px/1.5 system-ui,'Noto Sans SC',sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#1d2733}h1{font-size:1.6em}h2{border-bottom:2px solid #2d6cdf;"
        "padding-bottom:.2em;margin-top:2em}.op{border:1px solid #d5dbe3;border-radius:6px;"
        "margin:1em 0;padding:.6em 1em}.m{display:inline-block;min-width:4.5em;font-weight:700;"
        "color:#fff;border-radius:4px;text-align:center;margin-right:.6em}.get{background:#2d8a4e}"
        ".post{background:#2d6cdf}code{background:#f0f3f7;padding:0 .25em;border-radius:3px}"
        "table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #e1e6ec;padding:"
        ".2em .5em;text-align:left;vertical-align:top}pre{white-space:pre-wrap;background:#f7f9fb;"
        "padding:.6em;border-radius:4px}",
        "</style></head><body>",
        f"<h1>{e(spec['info']['title'])} <small>{e(spec['info']['version'])}</small></h1>",
        f"<pre>{e(spec['info'].get('description', ''))}</pre>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    for tag, ops in by_tag.items():
        parts.append(f"<h2>{e(tag)}</h2>")
        for method, path, op in ops:
            parts.append(
                f"<div class='op'><span class='m {e(method)}'>{e(method.upper())}</span>"
                f"<code>{e(path)}</code> — {e(op.get('summary', ''))}"
            )
            if op.get("description"):
                parts.append(f"<pre>{e(op['description'])}</pre>")
            params = op.get("parameters") or []
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>about</th></tr>")
                for p in params:
                    req = " (required)" if p.get("required") else ""
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code>{req}</td><td>{e(p['in'])}</td>"
                        f"<td>{e(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            if op.get("requestBody"):
                kinds = ", ".join(op["requestBody"].get("content", {}))
                parts.append(f"<p>Body: <code>{e(kinds)}</code></p>")
            rows = "".join(
                f"<tr><td>{e(code)}</td><td>{e(r.get('description', ''))}</td></tr>"
                for code, r in op.get("responses", {}).items()
            )
            parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{rows}</table></div>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3>{e(name)}</h3><pre>{e(json.dumps(schema, indent=1))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


ROUTES = [
    route("/healthz", render, ("GET",))(healthz),
    route("/readyz", render, ("GET",))(readyz),
    route("/metrics", render, ("GET",))(metrics_page),
    route("/openapi.json", render, ("GET",))(openapi),
    route("/docs", render, ("GET",))(docs),
]


def _get(op_id: str, summary: str, ok: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "tags": ["Gateway"],
            "summary": summary,
            "responses": {"200": {"description": ok}, **(extra or {})},
        }
    }


register(
    Protocol(
        name="health",
        title="Gateway health and documentation",
        description="Liveness, readiness, the OpenAPI document and its HTML docs.",
        routes=ROUTES,
        error=render,
        paths={
            "/healthz": _get("healthz", "Liveness", "The process answers."),
            "/readyz": _get(
                "readyz",
                "Readiness: Redis, a stream writable, the database, the city",
                "Ready.",
                {"503": {"description": "Not ready (which check failed)."}},
            ),
            "/openapi.json": _get("openapi", "This OpenAPI document", "The document."),
            "/docs": _get("docs", "This document as HTML", "The page."),
        },
    )
)
