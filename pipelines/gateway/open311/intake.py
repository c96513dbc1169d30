"""POST Service Request (pure): parameters, validation, idempotency and the reports
feed's ``reported`` event."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.open311.services import HAZARDS, SERVICES, attributes

MAX_DESCRIPTION = 2000  # the reports feed's limit (the spec allows 4,000)
MAX_URL = 1000

# ------------------------------------------------------------------ POST requests (pure)


@dataclass(frozen=True)
class NewRequest:
    service_code: str
    lat: float | None
    lon: float | None
    address_string: str | None
    address_id: str | None
    description: str
    media_url: str | None
    account_id: str | None
    jurisdiction_id: str | None
    severity: int
    attributes: dict[str, list[str]]


def form_params(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The POST's parameters: form-encoded (the spec) or a flat JSON object."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "bad_request", "body: not JSON") from None
        if not isinstance(obj, dict):
            raise GatewayError(400, "bad_request", "body: a JSON object expected")
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            if isinstance(v, dict) and k == "attribute":
                for ak, av in v.items():
                    for one in av if isinstance(av, list) else [av]:
                        out.append((f"attribute[{ak}]", _str(one)))
            elif isinstance(v, list | dict):
                raise GatewayError(400, "bad_request", f"{k}: a value expected")
            elif v is not None:
                out.append((str(k), _str(v)))
        return out
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise GatewayError(400, "bad_request", "body: not UTF-8") from None
    return parse_qsl(text, keep_blank_values=True)


def _str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_ATTR = re.compile(r"^attribute\[([^\]]{1,64})\](\[\])?$")


def parse_new_request(params: Sequence[tuple[str, str]], default_severity: int) -> NewRequest:
    """Validate a POST Service Request's parameters (pure). Raises 400 / 404 errors."""
    one: dict[str, str] = {}
    attrs: dict[str, list[str]] = {}
    for k, v in params:
        m = _ATTR.match(k)
        if m:
            attrs.setdefault(m.group(1), []).append(v)
        else:
            one[k] = v  # "optional" means empty equals absent (the spec)
    get = lambda k: (one.get(k) or "").strip() or None  # noqa: E731
    code = get("service_code")
    if code is None:
        raise GatewayError(400, "bad_request", "service_code was not provided")
    if code not in SERVICES:
        raise GatewayError(404, "not_found", f"service_code {code[:40]} was not found")
    lat_s, lon_s = get("lat"), get("long")
    lat = lon = None
    if (lat_s is None) != (lon_s is None):
        raise GatewayError(400, "bad_request", "lat and long must both be sent")
    if lat_s is not None and lon_s is not None:
        try:
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise GatewayError(400, "bad_request", "lat / long: not numbers") from None
        if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
            raise GatewayError(400, "bad_request", "lat / long: outside WGS-84's range")
    address_id, address_string = get("address_id"), get("address_string")
    if lat is None and address_id is None:
        if address_string:
            raise GatewayError(
                400,
                "bad_request",
                "address_string alone cannot be placed on the map: send lat & long, or "
                "address_id (a grid id)",
            )
        raise GatewayError(400, "bad_request", "a location is required: lat & long, or address_id")
    description = (one.get("description") or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise GatewayError(400, "bad_request", f"description over {MAX_DESCRIPTION} characters")
    media = get("media_url")
    if media is not None and (len(media) > MAX_URL or not re.match(r"^https?://", media)):
        raise GatewayError(400, "bad_request", "media_url: an http(s) URL expected")
    defs = {a.code: a for a in attributes(code)}
    for k, vals in attrs.items():
        a = defs.get(k)
        if a is None:
            raise GatewayError(400, "bad_request", f"attribute[{k[:40]}] is not defined for {code}")
        allowed = {key for key, _ in a.values}
        if len(vals) > 1 or any(v not in allowed for v in vals):
            raise GatewayError(
                400, "bad_request", f"attribute[{k}]: one of {', '.join(sorted(allowed))}"
            )
    for a in defs.values():
        if a.required and not attrs.get(a.code):
            raise GatewayError(400, "bad_request", f"attribute[{a.code}] is required for {code}")
    severity = int(attrs["severity"][0]) if attrs.get("severity") else default_severity
    notes = []
    if attrs.get("people_trapped") == ["yes"]:
        severity = 4
        notes.append("【有人员被困】")
    if attrs.get("hazard_type"):
        names = dict(HAZARDS)
        notes.append(f"【{names[attrs['hazard_type'][0]].split()[0]}】")
    full = "".join(notes) + description
    if len(full) > MAX_DESCRIPTION:
        raise GatewayError(400, "bad_request", f"description over {MAX_DESCRIPTION} characters")
    account = get("account_id")
    return NewRequest(
        service_code=code,
        lat=lat,
        lon=lon,
        address_string=address_string[:500] if address_string else None,
        address_id=address_id,
        description=full,
        media_url=media,
        account_id=account[:64] if account else None,
        jurisdiction_id=get("jurisdiction_id"),
        severity=severity,
        attributes=attrs,
    )


def idempotency_key(cred_id: str, header: str | None, params: Iterable[tuple[str, str]]) -> str:
    """The identity of a POST: the client's Idempotency-Key, else its parameters."""
    if header:
        basis = "key|" + header.strip()[:128]
    else:
        kept = sorted((k, v) for k, v in params if k != "api_key")
        basis = "body|" + orjson.dumps(kept).decode()
    return hashlib.sha256(f"{cred_id}|{basis}".encode()).hexdigest()


def new_request_id() -> str:
    return "311-" + secrets.token_hex(6)


def report_event(
    req: NewRequest, srid: str, cred: Credential, lon: float, lat: float, now_ms: int
) -> dict[str, Any]:
    """The reports feed's ``reported`` event of a new service request (strict types)."""
    ev: dict[str, Any] = {
        "event_id": f"{srid}-reported",
        "incident_id": srid,
        "ts": int(now_ms),
        "step": "reported",
        "category": req.service_code,
        "severity": int(req.severity),
        "source": "hotline" if cred.kind == "hotline" else "resident",
        "reporter_id": req.account_id or cred.credential_id,
        "lon": float(lon),
        "lat": float(lat),
    }
    if req.description:
        ev["description"] = req.description
    ev["channel"] = "open311"
    if req.address_string:
        ev["address"] = req.address_string
    if req.media_url:
        ev["media_url"] = req.media_url
    return ev
