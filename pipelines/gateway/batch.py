"""Our own JSON batch API: many events of one feed in one call (a 12345 hotline's system,
an integration, the simulator).

``POST /batch/{feed}`` with ``Authorization: Bearer <key>`` (or ``X-Api-Key``) and a JSON
body ``{"events": [...]}`` (or the bare list) of events in the feed's own wire schema
(``pipelines.spine.events``: reports need ``event_id``, ``incident_id``, ``ts`` in epoch
ms, ``step``, ``category``, ``severity``, ``source``, ``lon``, ``lat``; …). The batch is
validated as a whole with the pipelines' own validation plus the sender's scope — a
hotline's reports must lie in its area, a fleet's positions be of its workers, a camera
system's alerts of its cameras — and is written entirely or not at all: any problem
refuses it (400 / 403, each problem with its index, reason and field) and writes
nothing. Events are identified by ``event_id`` (reports), worker + fix time (locations)
and alert id + revision (video): a retried batch is answered with its duplicates counted,
never written twice.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipelines.gateway import core, osmand
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.frigate import bearer, camera_allowed
from pipelines.gateway.frigate import render as render
from pipelines.gateway.publish import Fix, Once, Outgoing
from pipelines.gateway.registry import Protocol, client_address, read_body, register, route
from pipelines.spine.events import SCHEMAS as WIRE
from pipelines.spine.events import decode_batch

KIND_OF_FEED = {"reports": "hotline", "locations": "fleet", "video": "camera"}
DEDUPE_S = 86400  # an event id written is remembered this long


def events_of(body: bytes) -> list[Any]:
    try:
        root = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "malformed", "body: not JSON") from None
    events = root.get("events") if isinstance(root, dict) else root
    if not isinstance(events, list):
        raise GatewayError(400, "malformed", 'body: {"events": [...]} or a list expected')
    return events


def validate(feed: str, events: list[Any], gw: core.Gateway) -> list[bytes]:
    """The pipelines' own validation of every event (400 listing each problem)."""
    st = gw.settings.streams
    payloads = [orjson.dumps(e) for e in events]
    now = gw.now_ms()
    _good, dead = decode_batch(
        feed,
        [(str(i), p) for i, p in enumerate(payloads)],
        now_ms=now,
        future_skew_ms=st.future_skew_s * 1000,
        max_age_ms=st.max_age_days * 86_400_000,
        max_payload_bytes=st.max_payload_bytes,
    )
    if dead.height:
        items = [
            {"index": int(i), "reason": r, "field": d}
            for i, r, d in dead.select("entry_id", "reason", "detail").iter_rows()
        ]
        raise GatewayError(400, "invalid", f"{len(items)} invalid events", items=items[:200])
    return payloads


async def check_scope(feed: str, events: list[dict[str, Any]], gw: core.Gateway, cred: Any) -> None:
    problems: list[dict[str, object]] = []
    status = 400
    if feed in ("reports", "locations") or any("lon" in e for e in events):
        located = [(i, e) for i, e in enumerate(events) if e.get("lon") is not None]
        grids = gw.grids_of([e["lon"] for _, e in located], [e["lat"] for _, e in located])
        for (i, _), g in zip(located, grids, strict=True):
            if g is None:
                problems.append({"index": i, "reason": "outside_city", "field": "lon/lat"})
            elif feed == "reports" and not gw.in_area(g, cred.area_id):
                problems.append({"index": i, "reason": "forbidden", "field": "lon/lat"})
                status = 403
    if feed == "locations":
        for i, e in enumerate(events):
            home = await gw.worker_grid(str(e["worker_id"]))
            if home is None:
                problems.append({"index": i, "reason": "unknown_worker", "field": "worker_id"})
            elif not gw.in_area(home, cred.area_id):
                problems.append({"index": i, "reason": "forbidden", "field": "worker_id"})
                status = 403
    if feed == "video":
        for i, e in enumerate(events):
            if not await camera_allowed(gw, cred, str(e["camera_id"])):
                problems.append({"index": i, "reason": "forbidden", "field": "camera_id"})
                status = 403
    if problems:
        if any(p["reason"] != "forbidden" for p in problems):
            status = 400
        raise GatewayError(
            status, "refused", f"{len(problems)} events refused", items=problems[:200]
        )


def outgoing(
    feed: str, events: list[dict[str, Any]], payloads: list[bytes], gw: core.Gateway
) -> list[Outgoing]:
    gs = gw.settings.gateway
    out = []
    for e, p in zip(events, payloads, strict=True):
        if feed == "reports":
            out.append(Outgoing(p, Once(gw.key("ev", str(e["event_id"])), DEDUPE_S)))
        elif feed == "locations":
            worker, ts = str(e["worker_id"]), int(e["ts"])
            if "event_id" not in e:
                p = orjson.dumps({"event_id": osmand.event_id(worker, ts), **e})
            ident = Fix(
                gw.key("fx", worker), ts, gs.osmand_dedupe_fixes, gs.osmand_dedupe_hours * 3600
            )
            out.append(Outgoing(p, ident))
        else:
            rev = e.get("revision")
            out.append(
                Outgoing(
                    p,
                    Once(
                        gw.key("fv", str(e["alert_id"]), str(rev if rev is not None else "")),
                        DEDUPE_S,
                    ),
                )
            )
    return out


async def receive(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    feed = request.path_params["feed"]
    if feed not in KIND_OF_FEED:
        raise GatewayError(
            404, "not_found", "POST /batch/reports, /batch/locations or /batch/video"
        )
    body = await read_body(request, gw.settings.gateway.max_body_bytes)
    secret = bearer(request)
    cred = await gw.authenticate(secret, client_address(request))
    assert secret is not None
    if cred.kind != KIND_OF_FEED[feed]:
        raise GatewayError(403, "forbidden", f"a {cred.kind} key cannot send {feed}")
    events = events_of(body)
    if not events:
        return JSONResponse({"accepted": 0, "duplicates": 0})
    if len(events) > gw.settings.gateway.max_batch:
        raise GatewayError(413, "too_large", f"more than {gw.settings.gateway.max_batch} events")
    payloads = validate(feed, events, gw)
    await check_scope(feed, events, gw, cred)
    await gw.admit(cred, secret, len(events))
    done = await gw.publish(feed, outgoing(feed, events, payloads, gw))
    return JSONResponse({"accepted": done.written, "duplicates": done.duplicates})


ROUTES = [route("/batch/{feed}", render, ("POST",))(receive)]


def _event_schema(feed: str) -> dict[str, Any]:
    types = {"String": "string", "Int64": "integer", "Float64": "number", "Boolean": "boolean"}
    props = {f.name: {"type": types.get(str(f.dtype), "string")} for f in WIRE[feed]}
    return {
        "type": "object",
        "required": [f.name for f in WIRE[feed] if f.required],
        "properties": props,
    }


PATHS: dict[str, Any] = {
    "/batch/{feed}": {
        "post": {
            "operationId": "batch_events",
            "tags": ["Batch API (hotline systems, integrations)"],
            "summary": "Many events of one feed, all or nothing",
            "description": (__doc__ or "").split("\n\n", 1)[1],
            "parameters": [
                {
                    "name": "feed",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(KIND_OF_FEED)},
                },
                {"name": "Authorization", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": {
                                        "oneOf": [
                                            {"$ref": f"#/components/schemas/{f.title()}Event"}
                                            for f in KIND_OF_FEED
                                        ]
                                    },
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Written (duplicates counted, not written again).",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "duplicates": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                **{
                    str(c): {
                        "description": "Refused (nothing written).",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for c in (400, 401, 403, 404, 405, 413, 429, 503)
                },
            },
        }
    }
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "items": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    },
    **{f"{f.title()}Event": _event_schema(f) for f in KIND_OF_FEED},
}

register(
    Protocol(
        name="batch",
        title="Batch API (our own JSON)",
        description=(__doc__ or "").split("\n\n")[0],
        routes=ROUTES,
        error=render,
        paths=PATHS,
        schemas=SCHEMAS,
        prefixes=("/batch",),
    )
)
