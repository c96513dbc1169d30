"""Worker phones: the OsmAnd protocol, as Traccar's server accepts it.

Senders: Traccar Client (Android/iOS; versions up to 9 send the JSON of the
``flutter_background_geolocation`` plugin, later ones form posts or a JSON array), the
OsmAnd app's online tracking, and any tracker speaking the same HTTP. What is accepted
follows Traccar's ``OsmAndProtocolDecoder`` (decodeQuery / decodeJson):

* GET or POST with query parameters — or, when the URL has none, the same parameters
  form-encoded in the body: ``id`` / ``deviceid``, ``lat`` + ``lon`` or
  ``location=lat,lon``, ``timestamp`` (Unix seconds when below 2^31-1, else Unix ms;
  ISO-8601 when it contains a "T"; else ``yyyy-MM-dd HH:mm:ss`` in ``live.timezone``,
  the server's zone as in Traccar), ``speed`` in KNOTS, ``bearing`` / ``heading``,
  ``altitude``, ``accuracy``, ``hdop``, ``batt`` (percent), ``valid``, ``mock``; every
  other parameter is kept as an attribute (number, true/false, or text).
* A JSON body (``Content-Type: application/json``): ``{"device_id", "location": {...}}``
  with ``location.coords`` (latitude, longitude, accuracy, speed in m/s, heading,
  altitude; -1 = unknown), ``timestamp`` (ISO-8601), ``battery.level`` (0-1, -1
  unknown), ``is_moving``, ``mock``, ``event``, ``activity``, ``odometer``, ``extras``;
  ``location`` may be a list (the plugin's batch sync). Also a flat object or a JSON
  array of flat objects with the query parameters' names and units (Traccar Client's
  JSON upload: ``id``, ``lat``, ``lon``, ``timestamp`` in s, ``speed`` in knots).

Answers, as Traccar's: 200 with an empty body when accepted; 400 without a device id
or with a value that is not a number where one is needed; an unknown device 400 (query)
or 404 (JSON). Wangge adds who may send: the credential's key in the URL (``?key=`` or
``/osmand/<key>``) — 401 without a valid one, 403 for a device it may not send for,
429 over its rate, 413 for a body over ``gateway.max_body_bytes``.

A fix without coordinates (cell towers or Wi-Fi only, ``valid=false``, or 0,0) is
acknowledged and kept out of positions. Each fix becomes one location event with a
deterministic ``event_id`` (device id + fix time): a phone re-sending a buffered fix is
a duplicate, never a second event. ``mock: true`` (simulated GPS) travels with it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pipelines.gateway import core
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.publish import Fix as FixIdentity
from pipelines.gateway.publish import Outgoing
from pipelines.gateway.registry import Protocol, client_address, read_body, register, route

KNOT_MS = 1852.0 / 3600.0  # one knot in m/s
INT_MAX = 2**31 - 1  # Traccar: a numeric timestamp below this is seconds, else ms
MAX_DEVICE_ID = 128


class OsmAndError(GatewayError):
    pass


def bad(description: str, status: int = 400) -> OsmAndError:
    return OsmAndError(status, "bad_request", description)


@dataclass(frozen=True)
class Fix:
    device_id: str
    ts_ms: int
    lat: float | None = None
    lon: float | None = None
    speed_ms: float | None = None  # m/s
    accuracy: float | None = None  # m
    battery: float | None = None  # percent
    mock: bool | None = None
    valid: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def located(self) -> bool:
        """A position to keep: coordinates present, valid, and not the 0,0 "no fix"."""
        if self.lat is None or self.lon is None or not self.valid:
            return False
        return not (self.lat == 0.0 and self.lon == 0.0)


@dataclass(frozen=True)
class Parsed:
    fixes: list[Fix]
    json: bool  # the body was JSON (Traccar answers an unknown device 404, else 400)


# ------------------------------------------------------------------ values


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise bad(f"{name}: not a number")
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            raise bad(f"{name}: not a number: {value[:32]!r}") from None
    else:
        raise bad(f"{name}: not a number")
    if not math.isfinite(f):
        raise bad(f"{name}: not a finite number")
    return f


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


def parse_timestamp(value: Any, tz: str) -> int:
    """Epoch ms of an OsmAnd timestamp (Traccar's rules; see the module docstring)."""
    if isinstance(value, bool):
        raise bad("timestamp: not a time")
    if isinstance(value, int | float) and math.isfinite(value):
        n = float(value)
        return int(n * 1000) if n < INT_MAX else int(n)
    text = str(value).strip()
    try:
        n = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(n):
            raise bad("timestamp: not a time")
        return round(n * 1000) if n < INT_MAX else int(n)
    try:
        if "T" in text:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=ZoneInfo("UTC"))
        else:
            dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo(tz))
    except ValueError:
        raise bad(f"timestamp: not a time: {text[:40]!r}") from None
    return int(dt.timestamp() * 1000)


def _device(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise bad("device id: not a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text or len(text) > MAX_DEVICE_ID:
        raise bad(f"device id: 1-{MAX_DEVICE_ID} characters")
    return text


# ------------------------------------------------------------------ query / form / flat JSON

_SKIP = {"key", "notificationToken", "_"}  # our credential; a push token; a template artifact


def fix_from_params(params: Iterable[tuple[str, Any]], now_ms: int, tz: str) -> Fix:
    """One fix from OsmAnd parameters (query, form, or a flat JSON object): Traccar's
    ``decodeQuery``. Repeated scalar parameters: the last one counts."""
    device: str | None = None
    ts = now_ms
    lat = lon = speed = accuracy = battery = None
    mock: bool | None = None
    valid = True
    attrs: dict[str, Any] = {}
    for name, value in params:
        if name in ("id", "deviceid"):
            device = _device(value)
        elif name in _SKIP:
            continue
        elif name == "valid":
            valid = _flag(value)
        elif name == "timestamp":
            ts = parse_timestamp(value, tz)
        elif name == "lat":
            lat = _number("lat", value)
        elif name == "lon":
            lon = _number("lon", value)
        elif name == "location":
            parts = str(value).split(",")
            if len(parts) < 2:
                raise bad("location: lat,lon expected")
            lat, lon = _number("location", parts[0]), _number("location", parts[1])
        elif name == "speed":
            speed = _number("speed", value) * KNOT_MS
        elif name in ("bearing", "heading"):
            attrs["course"] = _number(name, value)
        elif name in ("altitude", "hdop"):
            attrs[name] = _number(name, value)
        elif name == "accuracy":
            accuracy = _number("accuracy", value)
        elif name == "batt":
            battery = _number("batt", value)
        elif name == "mock":
            mock = _flag(value)
        elif name in ("cell", "wifi"):
            attrs.setdefault(name, []).append(str(value)[:64])
        elif name == "charge":
            attrs["charge"] = _flag(value)
        else:
            attrs[name] = _attr(value)
    if device is None:
        raise bad("no device id (id or deviceid)")
    return Fix(device, ts, lat, lon, speed, accuracy, battery, mock, valid, attrs)


def _attr(value: Any) -> Any:
    """Traccar keeps unknown parameters as a number, a boolean or text."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    try:
        f = float(text)
        return f if math.isfinite(f) else text
    except ValueError:
        pass
    if text in ("true", "false"):
        return text == "true"
    return text


# ------------------------------------------------------------------ the plugin's JSON


def _json_number(obj: dict[str, Any], name: str, where: str) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise bad(f"{where}.{name}: not a number")
    f = float(v)
    if not math.isfinite(f):
        raise bad(f"{where}.{name}: not a finite number")
    return f


def fix_from_location(loc: Any, device: str, now_ms: int, tz: str) -> Fix:
    """One fix from a ``flutter_background_geolocation`` location: Traccar's
    ``decodeJson`` (speed m/s, heading / speed / battery -1 = unknown)."""
    if not isinstance(loc, dict):
        raise bad("location: an object expected")
    ts = parse_timestamp(loc["timestamp"], tz) if loc.get("timestamp") is not None else now_ms
    lat = lon = speed = accuracy = battery = None
    attrs: dict[str, Any] = {}
    coords = loc.get("coords")
    if coords is not None:
        if not isinstance(coords, dict):
            raise bad("location.coords: an object expected")
        lat = _json_number(coords, "latitude", "coords")
        lon = _json_number(coords, "longitude", "coords")
        s = _json_number(coords, "speed", "coords")
        speed = s if s is not None and s >= 0 else None
        h = _json_number(coords, "heading", "coords")
        if h is not None and h >= 0:
            attrs["course"] = h
        a = _json_number(coords, "accuracy", "coords")
        accuracy = a if a is not None and a >= 0 else None
        alt = _json_number(coords, "altitude", "coords")
        if alt is not None:
            attrs["altitude"] = alt
    battery_obj = loc.get("battery")
    if isinstance(battery_obj, dict):
        level = _json_number(battery_obj, "level", "battery")
        if level is not None and level >= 0:
            battery = round(level * 100, 1)
        if battery_obj.get("is_charging") is True:
            attrs["charge"] = True
    mock = loc.get("mock")
    if mock is not None and not isinstance(mock, bool):
        raise bad("location.mock: true or false expected")
    for name in ("event", "is_moving", "odometer", "alarm", "uuid"):
        if name in loc:
            attrs[name] = loc[name]
    activity = loc.get("activity")
    if isinstance(activity, dict) and "type" in activity:
        attrs["activity"] = activity["type"]
    extras = loc.get("extras")
    if isinstance(extras, dict):
        for k, v in extras.items():
            attrs.setdefault(str(k), v)
    return Fix(device, ts, lat, lon, speed, accuracy, battery, mock, True, attrs)


def parse_json(body: bytes, now_ms: int, tz: str) -> list[Fix]:
    try:
        root = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad("body: not JSON") from None
    if isinstance(root, list):  # Traccar Client's JSON upload: flat objects
        if not root:
            raise bad("body: an empty list")
        return [_flat(obj, now_ms, tz) for obj in root]
    if not isinstance(root, dict):
        raise bad("body: a JSON object or array expected")
    if "location" in root:
        if root.get("device_id") is None:
            raise bad("no device id (device_id)")
        device = _device(root["device_id"])
        locs = root["location"]
        if isinstance(locs, list):
            if not locs:
                raise bad("location: an empty list")
            return [fix_from_location(loc, device, now_ms, tz) for loc in locs]
        return [fix_from_location(locs, device, now_ms, tz)]
    return [_flat(root, now_ms, tz)]


def _flat(obj: Any, now_ms: int, tz: str) -> Fix:
    if not isinstance(obj, dict):
        raise bad("a JSON object expected")
    if "device_id" in obj and "id" not in obj and "deviceid" not in obj:
        obj = {**obj, "id": obj["device_id"]}
    return fix_from_params(((str(k), v) for k, v in obj.items()), now_ms, tz)


def parse(
    query: Sequence[tuple[str, str]],
    content_type: str,
    body: bytes,
    now_ms: int,
    tz: str,
) -> Parsed:
    """Every fix of one OsmAnd request (pure)."""
    params = [(k, v) for k, v in query if k != "key"]
    ctype = content_type.split(";")[0].strip().lower()
    stripped = body.lstrip()
    if ctype == "application/json" or (not params and stripped[:1] in (b"{", b"[")):
        return Parsed(parse_json(body, now_ms, tz), json=True)
    if not params and body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("body: not UTF-8 form data") from None
        params = [(k, v) for k, v in parse_qsl(text, keep_blank_values=True) if k != "key"]
    return Parsed([fix_from_params(params, now_ms, tz)], json=False)


def event_id(device_id: str, ts_ms: int) -> str:
    """Deterministic: the same fix of the same device is the same event."""
    return "osm-" + hashlib.sha256(f"{device_id}|{ts_ms}".encode()).hexdigest()[:32]


def location_event(fix: Fix, worker_id: str) -> dict[str, Any]:
    """The location feed's wire event of a located fix (strict types)."""
    assert fix.lat is not None and fix.lon is not None
    ev: dict[str, Any] = {
        "event_id": event_id(fix.device_id, fix.ts_ms),
        "worker_id": worker_id,
        "ts": int(fix.ts_ms),
        "lon": float(fix.lon),
        "lat": float(fix.lat),
    }
    if fix.accuracy is not None:
        ev["accuracy"] = float(fix.accuracy)
    if fix.speed_ms is not None:
        ev["speed"] = round(float(fix.speed_ms), 3)
    if fix.battery is not None:
        ev["battery"] = float(fix.battery)
    if fix.mock is not None:
        ev["mock"] = bool(fix.mock)
    ev["device_id"] = fix.device_id
    attrs = core.scalar_attrs({k: v for k, v in fix.attrs.items() if not isinstance(v, list)})
    for k in ("cell", "wifi"):
        if k in fix.attrs:
            attrs[k] = ";".join(fix.attrs[k])[:256]
    if attrs:
        ev["attrs"] = attrs
    return ev


# ------------------------------------------------------------------ the handler


async def _workers_of(
    gw: core.Gateway, cred: Credential, devices: set[str], json: bool
) -> dict[str, str]:
    """device id → worker id, for the devices this credential may send for."""
    out: dict[str, str] = {}
    for d in devices:
        if cred.kind == "phone":
            if d != cred.device_id:
                raise GatewayError(403, "forbidden", f"device {d} is not this key's device")
            assert cred.worker_id is not None
            out[d] = cred.worker_id
        elif cred.kind == "fleet":
            grid = await gw.worker_grid(d)
            if grid is None:  # Traccar: an unknown device is 400 (query) or 404 (JSON)
                raise GatewayError(404 if json else 400, "unknown_device", f"unknown device {d}")
            if not gw.in_area(grid, cred.area_id):
                raise GatewayError(403, "forbidden", f"worker {d} is outside this key's area")
            out[d] = d
        else:
            raise GatewayError(403, "forbidden", f"a {cred.kind} key cannot send positions")
    return out


def render(request: Request, err: GatewayError) -> Response:
    """Traccar answers with a bare status; a one-line reason does no harm."""
    return PlainTextResponse(
        f"{err.status} {err.description}\n", status_code=err.status, headers=err.headers
    )


async def receive(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    s = gw.settings
    secret = request.path_params.get("key") or request.query_params.get("key")
    body = await read_body(request, s.gateway.max_body_bytes)
    cred = await gw.authenticate(secret, client_address(request))
    assert secret is not None
    parsed = parse(
        list(request.query_params.multi_items()),
        request.headers.get("content-type", ""),
        body,
        gw.now_ms(),
        s.live.timezone,
    )
    if len(parsed.fixes) > s.gateway.max_batch:
        raise GatewayError(413, "too_large", f"more than {s.gateway.max_batch} fixes")
    workers = await _workers_of(gw, cred, {f.device_id for f in parsed.fixes}, parsed.json)
    await gw.admit(cred, secret, len(parsed.fixes))
    gs = s.gateway
    out = [
        Outgoing.of(
            location_event(f, workers[f.device_id]),
            FixIdentity(
                gw.key("fx", f.device_id),
                f.ts_ms,
                gs.osmand_dedupe_fixes,
                gs.osmand_dedupe_hours * 3600,
            ),
        )
        for f in parsed.fixes
        if f.located
    ]
    await gw.publish("locations", out)
    return Response(status_code=200)


ROUTES = [
    route(path, render, ("GET", "POST"))(receive) for path in ("/", "/osmand", "/osmand/{key}")
]

_PARAMS = [
    ("key", "Wangge credential key (or in the path: /osmand/{key}).", {"type": "string"}),
    ("id", "Device id (Traccar Client's 'Device identifier').", {"type": "string"}),
    ("deviceid", "Device id (alias of id).", {"type": "string"}),
    ("lat", "Latitude, WGS-84.", {"type": "number"}),
    ("lon", "Longitude, WGS-84.", {"type": "number"}),
    ("location", "lat,lon in one parameter.", {"type": "string"}),
    (
        "timestamp",
        "Unix s (< 2^31-1) or ms, ISO-8601, or 'yyyy-MM-dd HH:mm:ss' (server zone).",
        {"type": "string"},
    ),
    ("speed", "Speed in KNOTS.", {"type": "number"}),
    ("bearing", "Course, degrees (alias: heading).", {"type": "number"}),
    ("altitude", "Altitude, m.", {"type": "number"}),
    ("accuracy", "Horizontal accuracy, m.", {"type": "number"}),
    ("hdop", "Horizontal dilution of precision.", {"type": "number"}),
    ("batt", "Battery, percent.", {"type": "number"}),
    ("valid", "false: not a fix (kept out of positions).", {"type": "boolean"}),
    ("mock", "true: a simulated (mock) location.", {"type": "boolean"}),
]


def _operation(method: str, with_key_param: bool) -> dict[str, Any]:
    params = [
        {"name": n, "in": "query", "required": False, "description": d, "schema": sch}
        for n, d, sch in _PARAMS
        if with_key_param or n != "key"
    ]
    op: dict[str, Any] = {
        "tags": ["OsmAnd (phones)"],
        "summary": f"{method} a phone's fix (OsmAnd / Traccar Client)",
        "description": __doc__.split("\n\n", 2)[2] if __doc__ else "",
        "parameters": params,
        "responses": {
            "200": {"description": "Accepted (empty body, as Traccar's server)."},
            **{
                str(code): {
                    "description": what,
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
                for code, what in (
                    (400, "No device id, a value that is not a number, an unknown device."),
                    (401, "Missing, unknown or revoked key."),
                    (403, "A device this key may not send for."),
                    (404, "An unknown device (JSON body)."),
                    (405, "Another method."),
                    (413, "Body over gateway.max_body_bytes, or too many fixes."),
                    (429, "Over the key's rate (Retry-After), or too many failed keys."),
                    (503, "The stream store is unavailable."),
                )
            },
        },
    }
    if method == "POST":
        op["requestBody"] = {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/OsmAndJson"}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            },
        }
    return op


def _path_item(with_key_param: bool) -> dict[str, Any]:
    item = {m.lower(): _operation(m, with_key_param) for m in ("GET", "POST")}
    if not with_key_param:
        key = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
        for op in item.values():
            op["parameters"] = [key, *op["parameters"]]
    for m, op in item.items():
        op["operationId"] = f"osmand_{m}_{'query' if with_key_param else 'path'}"
    return item


SCHEMAS = {
    "OsmAndJson": {
        "description": (
            "Traccar Client 9's JSON {device_id, location}, location a list in a batch; "
            "or a flat object / array of flat objects with the query parameters."
        ),
        "oneOf": [
            {
                "type": "object",
                "required": ["device_id", "location"],
                "properties": {
                    "device_id": {"type": "string"},
                    "location": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/OsmAndLocation"},
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/OsmAndLocation"},
                            },
                        ]
                    },
                },
            },
            {"type": "array", "items": {"type": "object"}},
        ],
    },
    "OsmAndLocation": {
        "type": "object",
        "properties": {
            "timestamp": {"type": "string", "format": "date-time"},
            "coords": {
                "type": "object",
                "properties": {
                    "latitude": {"type": "number"},
                    "longitude": {"type": "number"},
                    "accuracy": {"type": "number"},
                    "speed": {"type": "number", "description": "m/s; -1 unknown"},
                    "heading": {"type": "number", "description": "degrees; -1 unknown"},
                    "altitude": {"type": "number"},
                },
            },
            "is_moving": {"type": "boolean"},
            "mock": {"type": "boolean"},
            "battery": {
                "type": "object",
                "properties": {
                    "level": {"type": "number", "description": "0-1; -1 unknown"},
                    "is_charging": {"type": "boolean"},
                },
            },
        },
    },
}

register(
    Protocol(
        name="osmand",
        title="OsmAnd (worker phones: Traccar Client, OsmAnd)",
        description=(__doc__ or "").split("\n\n")[0],
        routes=ROUTES,
        error=render,
        paths={
            "/": _path_item(True),
            "/osmand": _path_item(True),
            "/osmand/{key}": _path_item(False),
        },
        schemas=SCHEMAS,
        prefixes=("/osmand",),
    )
)
