"""AI cameras: Frigate's events and review items → video alerts.

Frigate publishes (https://docs.frigate.video/integrations/mqtt/) on
``<topic_prefix>/events`` one message per change of a tracked object — ``type`` new /
update / end, with ``before`` and ``after`` states (``id``, ``camera``, ``label``,
``sub_label``, ``top_score``, ``current_zones``, ``start_time``, ``end_time``,
``frame_time``, ``false_positive``) — and on ``<topic_prefix>/reviews`` one per change
of a review item (``severity`` detection / alert, which can escalate within one item;
``data.objects``, ``data.detections``, ``data.zones``).

One tracked object, or one review item, is ONE video alert, updated in place as it
changes: its alert id is the Frigate id (``fe-<id>`` for objects, ``fr-<id>`` for review
items), its ``ts`` the object's / item's start, and every message becomes a stream entry
carrying a ``revision`` derived from Frigate's own progress (objects: the frame time, then
new < update < end; review items: detections, objects, zones, severity, then new < update
< end). The video pipeline creates the alert from the first entry and updates its label,
score, sub-label, zones, severity and end from newer revisions (an older or replayed one
is a no-op), so the alert is counted once. A message retried with the same Frigate id and
the same revision is a duplicate here, never written twice.

Mapping: Frigate labels and camera names map to our labels and camera ids through
``gateway.frigate_labels`` / ``gateway.frigate_cameras`` (a label that is already one
of ours, or a camera named like a registered camera id, maps to itself). What is not
configured is ignored, as are false positives and review items below
``gateway.frigate_review_min_severity``; what is malformed is dead-lettered (MQTT) or
refused with 400 (HTTP). The score of a review item, which has none, is 1.0 for an
alert and 0.6 for a detection.

The same payloads are accepted over HTTP (``POST /frigate/events``, ``/frigate/reviews``;
one message or a list) from systems that push instead of publishing, with a camera
credential allowed for the cameras.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipelines.gateway import core
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError, json_error
from pipelines.gateway.publish import Once, Outgoing
from pipelines.gateway.registry import Protocol, client_address, read_body, register, route
from pipelines.settings import GatewaySettings
from pipelines.spine.events import VIDEO_LABELS

TYPES = {"new": 0, "update": 1, "end": 2}
SEVERITIES = {"detection": 0, "alert": 1}
REVIEW_SCORE = {"detection": 0.6, "alert": 1.0}
DEDUPE_S = 7 * 86400  # a revision seen is remembered this long


def pairs(text: str) -> dict[str, str]:
    """``"a:b,c:d"`` → {a: b, c: d}."""
    out = {}
    for part in text.split(","):
        if ":" in part:
            k, v = part.split(":", 1)
            if k.strip() and v.strip():
                out[k.strip()] = v.strip()
    return out


@dataclass(frozen=True)
class FrigateMap:
    labels: dict[str, str]
    cameras: dict[str, str]
    feeds: frozenset[str]
    review_min: int

    @classmethod
    def of(cls, gs: GatewaySettings) -> FrigateMap:
        return cls(
            labels=pairs(gs.frigate_labels),
            cameras=pairs(gs.frigate_cameras),
            feeds=frozenset(x.strip() for x in gs.frigate_feeds.split(",") if x.strip()),
            review_min=SEVERITIES.get(gs.frigate_review_min_severity.strip(), 1),
        )

    def label(self, frigate_label: str) -> str | None:
        if frigate_label in self.labels:
            ours = self.labels[frigate_label]
            return ours if ours in VIDEO_LABELS else None
        return frigate_label if frigate_label in VIDEO_LABELS else None

    def camera(self, name: str, registered: Callable[[str], bool]) -> str | None:
        if name in self.cameras:
            return self.cameras[name]
        return name if registered(name) else None


class Malformed(ValueError):
    """Not a Frigate message we can read (the detail says why)."""


@dataclass(frozen=True)
class Alert:
    alert_id: str
    revision: int
    camera_id: str
    event: dict[str, Any]  # the video feed's wire event


@dataclass(frozen=True)
class Ignored:
    reason: str  # false_positive, feed, type, camera, label, severity


def _num(obj: dict[str, Any], name: str, required: bool = True) -> float | None:
    v = obj.get(name)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise Malformed(f"{name}: a number expected")
    return float(v)


def _str(obj: dict[str, Any], name: str) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not v.strip():
        raise Malformed(f"{name}: a string expected")
    return v


def _alert_id(tag: str, frigate_id: str) -> str:
    aid = f"{tag}-{frigate_id}"
    if len(aid) > 64:  # ids are short (~24 chars); keep any longer one within the feed's limit
        aid = f"{tag}-" + hashlib.sha256(frigate_id.encode()).hexdigest()[:40]
    return aid


def translate(
    topic: str, msg: Any, fmap: FrigateMap, registered: Callable[[str], bool]
) -> Alert | Ignored:
    """One Frigate message → the video alert's current state, or why it is ignored.
    ``topic`` is "events" or "reviews". Raises :class:`Malformed`."""
    if not isinstance(msg, dict):
        raise Malformed("a JSON object expected")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise Malformed("type: a string expected")
    after = msg.get("after")
    if not isinstance(after, dict):
        raise Malformed("after: an object expected")
    if topic not in fmap.feeds:
        return Ignored("feed")
    if kind not in TYPES:
        return Ignored("type")
    fid = _str(after, "id")
    camera_name = _str(after, "camera")
    start = _num(after, "start_time")
    end = _num(after, "end_time", required=False)
    assert start is not None
    if topic == "events":
        frigate_label = _str(after, "label")
        score = _num(after, "top_score", required=False)
        if score is None:
            score = _num(after, "score")
        assert score is not None
        if not 0.0 <= score <= 1.0:
            raise Malformed("top_score: outside 0-1")
        frame = _num(after, "frame_time", required=False) or start
        if after.get("false_positive") is True:
            return Ignored("false_positive")
        label = fmap.label(frigate_label)
        revision = int(frame * 1000) * 4 + TYPES[kind]
        tag = "fe"
        extra: dict[str, Any] = {"label": frigate_label}
        if isinstance(after.get("sub_label"), str):
            extra["sub_label"] = after["sub_label"][:128]
        elif isinstance(after.get("sub_label"), list) and after["sub_label"]:
            extra["sub_label"] = str(after["sub_label"][0])[:128]
        zones = after.get("current_zones")
    else:
        severity = after.get("severity")
        if severity not in SEVERITIES:
            raise Malformed("severity: alert or detection expected")
        data = after.get("data") or {}
        if not isinstance(data, dict):
            raise Malformed("data: an object expected")
        objects = data.get("objects") or []
        detections = data.get("detections") or []
        if not isinstance(objects, list) or not isinstance(detections, list):
            raise Malformed("data.objects / data.detections: lists expected")
        if SEVERITIES[severity] < fmap.review_min:
            return Ignored("severity")
        mapped = [(o, fmap.label(str(o))) for o in objects]
        first = next(((o, ours) for o, ours in mapped if ours is not None), None)
        label = first[1] if first else None
        frigate_label = str(first[0]) if first else ""
        score = REVIEW_SCORE[severity]
        zones_n = len(data.get("zones") or []) if isinstance(data.get("zones"), list) else 0
        rank = (len(detections) * 64 + min(len(objects), 63)) * 64 + min(zones_n, 63)
        rank = rank * 2 + SEVERITIES[severity]
        revision = rank * 4 + TYPES[kind]
        tag = "fr"
        extra = {"severity": severity, "label": frigate_label}
        zones = data.get("zones")
    camera = fmap.camera(camera_name, registered)
    if camera is None:
        return Ignored("camera")
    if label is None:
        return Ignored("label")
    if isinstance(zones, list) and zones:
        extra["zones"] = ",".join(str(z) for z in zones)[:256]
    aid = _alert_id(tag, fid)
    event: dict[str, Any] = {
        "alert_id": aid,
        "camera_id": camera,
        "label": label,
        "score": float(score),
        "ts": int(start * 1000),
        "revision": int(revision),
    }
    if end is not None:
        event["end_ts"] = int(end * 1000)
    if extra.get("sub_label"):
        event["sub_label"] = extra["sub_label"]
    if isinstance(zones, list) and zones:
        event["zones"] = extra["zones"]
    if topic == "reviews":
        event["severity"] = extra["severity"]
    event["source"] = "frigate"
    extra["label"] = str(extra.get("label", ""))[:64]
    event["frigate"] = {"type": kind, "id": fid[:128], "camera": camera_name[:128], **extra}
    return Alert(aid, revision, camera, event)


def identity(gw_key: Callable[..., str], alert: Alert) -> Once:
    """A message is written once: the same Frigate object or review item at the same
    revision (a retried publish, a re-sent HTTP push) is a duplicate; every newer revision
    is a new stream entry, which the video pipeline applies to the one alert in place."""
    return Once(gw_key("fv", alert.alert_id, str(alert.revision)), DEDUPE_S)


# ------------------------------------------------------------------ HTTP push


render = json_error


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.query_params.get("key")


async def camera_allowed(gw: core.Gateway, cred: Credential, camera_id: str) -> bool:
    if cred.kind != "camera":
        return False
    if cred.cameras:
        return camera_id in cred.cameras
    return gw.in_area(await gw.camera_grid(camera_id), cred.area_id)


async def receive(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    topic = request.path_params["topic"]
    if topic not in ("events", "reviews"):
        raise GatewayError(404, "not_found", "POST /frigate/events or /frigate/reviews")
    body = await read_body(request, gw.settings.gateway.max_body_bytes)
    secret = bearer(request)
    cred = await gw.authenticate(secret, client_address(request))
    assert secret is not None
    if cred.kind != "camera":
        raise GatewayError(403, "forbidden", f"a {cred.kind} key cannot send camera events")
    try:
        root = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "malformed", "body: not JSON") from None
    msgs = root if isinstance(root, list) else [root]
    if len(msgs) > gw.settings.gateway.max_batch:
        raise GatewayError(413, "too_large", f"more than {gw.settings.gateway.max_batch} messages")
    fmap = FrigateMap.of(gw.settings.gateway)
    reg = await gw.registry_fresh()
    outcomes: list[Alert | Ignored] = []
    problems = []
    for i, m in enumerate(msgs):
        try:
            outcomes.append(translate(topic, m, fmap, reg.cameras.__contains__))
        except Malformed as exc:
            problems.append({"index": i, "reason": "malformed", "detail": str(exc)})
    if problems:
        raise GatewayError(400, "malformed", "not Frigate messages", items=problems)
    for i, o in enumerate(outcomes):
        if isinstance(o, Alert) and not await camera_allowed(gw, cred, o.camera_id):
            raise GatewayError(
                403, "forbidden", f"camera {o.camera_id} (message {i}) is not this key's"
            )
    alerts = [o for o in outcomes if isinstance(o, Alert)]
    await gw.admit(cred, secret, max(1, len(alerts)))
    done = await gw.publish("video", [Outgoing.of(a.event, identity(gw.key, a)) for a in alerts])
    ignored: dict[str, int] = {}
    for o in outcomes:
        if isinstance(o, Ignored):
            ignored[o.reason] = ignored.get(o.reason, 0) + 1
    return JSONResponse(
        {"accepted": done.written, "duplicates": done.duplicates, "ignored": ignored}
    )


ROUTES = [route("/frigate/{topic}", render, ("POST",))(receive)]

_ERR = {
    "description": "Refused (nothing written).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
PATHS: dict[str, Any] = {
    "/frigate/{topic}": {
        "post": {
            "operationId": "frigate_push",
            "tags": ["Frigate (AI cameras)"],
            "summary": "Push Frigate events or review items (the MQTT payloads) over HTTP",
            "parameters": [
                {
                    "name": "topic",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": ["events", "reviews"]},
                },
                {"name": "Authorization", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/FrigateMessage"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/FrigateMessage"},
                                },
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Accepted: alerts written, duplicates, ignored by reason.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/FrigateResult"}
                        }
                    },
                },
                **{str(c): _ERR for c in (400, 401, 403, 404, 405, 413, 429, 503)},
            },
        }
    }
}
SCHEMAS: dict[str, Any] = {
    "FrigateMessage": {
        "type": "object",
        "required": ["type", "after"],
        "properties": {
            "type": {"type": "string", "enum": list(TYPES)},
            "before": {"type": ["object", "null"]},
            "after": {
                "type": "object",
                "required": ["id", "camera", "start_time"],
                "properties": {
                    "id": {"type": "string"},
                    "camera": {"type": "string"},
                    "label": {"type": "string"},
                    "sub_label": {},
                    "top_score": {"type": "number"},
                    "current_zones": {"type": "array", "items": {"type": "string"}},
                    "start_time": {"type": "number"},
                    "end_time": {"type": ["number", "null"]},
                    "severity": {"type": "string", "enum": list(SEVERITIES)},
                    "data": {"type": "object"},
                },
            },
        },
    },
    "FrigateResult": {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "ignored": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
}

register(
    Protocol(
        name="frigate",
        title="Frigate (AI cameras; MQTT, and HTTP for push systems)",
        description=(__doc__ or "").split("\n\n")[0],
        routes=ROUTES,
        error=render,
        paths=PATHS,
        schemas=SCHEMAS,
        prefixes=("/frigate",),
    )
)
