"""Citizens and the 12345 hotline: Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2).

Endpoint ``/open311/v2/``; every resource in JSON and XML by its suffix (``.json`` /
``.xml``), the spec's field names and its error format (a list of ``{code,
description}``; ``<errors><error>…``), HTTP 400 / 403 / 404 as the spec assigns them.

* ``GET services`` — our report categories, named in zh-CN (English in the description).
* ``GET services/{service_code}`` — a category's attributes (severity for all; a fire's
  "people trapped" is required and makes it critical; a safety hazard's kind).
* ``POST requests`` (form-encoded, as the spec; JSON accepted too) with ``api_key`` —
  a hotline or residents' app credential — ``service_code``, ``lat`` & ``long`` (or
  ``address_id`` = one of our grid ids; ``address_string`` alone cannot be placed on
  the map and is refused), ``description`` (≤ 2,000 characters), ``media_url``,
  ``attribute[code]``, … → one ``reported`` event in the reports stream; the answer is
  the ``service_request_id`` (type realtime). The location must lie in the city and in
  the credential's area (its jurisdiction). Idempotent: a retry carrying the same
  ``Idempotency-Key`` header — or, without one, the same parameters from the same
  credential — within ``gateway.open311_idempotency_s`` returns the first request's id
  and writes nothing.
* ``GET requests`` and ``GET requests/{id}`` with ``api_key`` — requests of the
  credential's area only, from SQL (the incident's lifecycle): ``status`` is ``closed``
  once the incident is closed (结案), else ``open``, and ``status_notes`` names the
  step (e.g. "已派遣 (dispatched)"). Lists cover at most ``gateway.open311_max_days``
  (90) days — the last 90 by default — and 1,000 requests, newest first.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import orjson
import redis
from sqlalchemy import BigInteger, Column, Engine, String, Table, Text, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipelines.gateway import core
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.publish import Once, Outgoing
from pipelines.gateway.registry import Protocol, client_address, read_body, register, route
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.events import CATEGORIES

BASE = "/open311/v2"
FORMATS = ("json", "xml")
MAX_LIST = 1000
MAX_DESCRIPTION = 2000  # the reports feed's limit (the spec allows 4,000)
MAX_URL = 1000

# The request's extras the reports feed has no field for; read back by GET requests.
open311_requests = Table(
    "open311_requests",
    store.metadata,
    Column("service_request_id", String(64), primary_key=True),
    Column("credential_id", String(32), nullable=False, index=True),
    Column("address_string", Text),
    Column("media_url", Text),
    Column("jurisdiction_id", String(64)),
    Column("created_ms", BigInteger, nullable=False, index=True),
)

# ------------------------------------------------------------------ services (our categories)

# code → (zh-CN name, English name, group (zh-CN), keywords)
SERVICES: dict[str, tuple[str, str, str, str]] = {
    "dispute": ("矛盾纠纷", "Disputes", "平安建设", "纠纷,邻里,物业,劳资,dispute"),
    "safety_hazard": ("安全隐患", "Safety hazards", "安全生产", "隐患,燃气,电气,hazard"),
    "public_order": ("治安", "Public order", "平安建设", "治安,斗殴,盗窃,public order"),
    "sanitation": ("环境卫生", "Sanitation", "城市管理", "垃圾,卫生,污水,sanitation"),
    "city_management": ("城市管理", "City management", "城市管理", "违停,占道,设施,city"),
    "livelihood": ("民生服务", "Livelihood services", "民生服务", "民生,救助,服务,livelihood"),
    "fire": ("消防", "Fire", "安全生产", "火灾,烟雾,消防,fire"),
    "other": ("其他", "Other", "民生服务", "其他,other"),
}
assert set(SERVICES) == set(CATEGORIES)

SEVERITY_VALUES = [
    ("1", "轻微 minor"),
    ("2", "一般 moderate"),
    ("3", "较重 serious"),
    ("4", "严重 critical"),
]
HAZARDS = [
    ("gas", "燃气 gas"),
    ("electric", "电气 electrical"),
    ("structure", "建筑结构 structure"),
    ("other", "其他 other"),
]


@dataclass(frozen=True)
class Attribute:
    code: str
    description: str
    datatype: str
    required: bool
    order: int
    values: tuple[tuple[str, str], ...] = ()
    datatype_description: str | None = None


def attributes(code: str) -> list[Attribute]:
    """The attributes of a service (the spec's service definition)."""
    out = [
        Attribute(
            "severity",
            "严重程度 How serious is it? (default: 一般 moderate)",
            "singlevaluelist",
            False,
            1,
            tuple(SEVERITY_VALUES),
        )
    ]
    if code == "fire":
        out.append(
            Attribute(
                "people_trapped",
                "是否有人员被困 Are people trapped? (yes: critical)",
                "singlevaluelist",
                True,
                2,
                (("yes", "是 yes"), ("no", "否 no")),
            )
        )
    if code == "safety_hazard":
        out.append(
            Attribute(
                "hazard_type",
                "隐患类型 Kind of hazard",
                "singlevaluelist",
                False,
                2,
                tuple(HAZARDS),
            )
        )
    return out


# ------------------------------------------------------------------ lifecycle → Open311 status

STATUS_NOTES: dict[str, str] = {
    "received": "已接收，正在受理 (received, being registered)",
    "reported": "已上报，待受理 (reported)",
    "accepted": "已受理 (accepted)",
    "dispatched": "已派遣 (dispatched)",
    "handling": "处置中 (handling)",
    "escalated": "已上报升级 (escalated)",
    "returned": "退回重办 (returned for rework)",
    "resolved": "已办结，待核查 (resolved, awaiting verification)",
    "verified": "已核查，待结案 (verified, awaiting closure)",
    "closed": "已结案 (closed)",
}


def open311_status(step: str) -> tuple[str, str]:
    """Our lifecycle step → (Open311 status, status_notes). Only closure (结案) closes a
    request: a resolved incident can still be returned by its verification."""
    return ("closed" if step == "closed" else "open", STATUS_NOTES.get(step, step))


# ------------------------------------------------------------------ formats


def _xml_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text)  # not XML 1.0
    return escape(text)


def _xml(tag: str, value: Any, item_tags: Mapping[str, str]) -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(k, v, item_tags) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, list):
        child = item_tags.get(tag, "item")
        return f"<{tag}>{''.join(_xml(child, v, item_tags) for v in value)}</{tag}>"
    return f"<{tag}>{_xml_text(value)}</{tag}>"


ITEM_TAGS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "attributes": "attribute",
    "values": "value",
}


def document(root: str, body: Any, fmt: str, status: int = 200) -> Response:
    """The spec's JSON (the Spark convention: the root's list) or XML (``root``)."""
    if fmt == "xml":
        xml = '<?xml version="1.0" encoding="utf-8"?>\n' + _xml(root, body, ITEM_TAGS)
        return Response(xml.encode("utf-8"), status, media_type="text/xml; charset=utf-8")
    return Response(orjson.dumps(body), status, media_type="application/json; charset=utf-8")


def format_of(request: Request) -> str:
    """The answer's format: the path's suffix (XML, the spec's required one, otherwise)."""
    fmt = request.path_params.get("format") or request.url.path.rsplit(".", 1)[-1]
    return "json" if fmt == "json" else "xml"


def render(request: Request, err: GatewayError) -> Response:
    """The spec's errors: a list of {code, description}, in the request's format."""
    errors = [{"code": err.status, "description": err.description}]
    resp = document("errors", errors, format_of(request), err.status)
    resp.headers.update(err.headers)
    return resp


def _fmt(request: Request) -> str:
    fmt = request.path_params.get("format")
    if fmt not in FORMATS:
        raise GatewayError(404, "not_found", "format must be json or xml")
    return str(fmt)


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


# ------------------------------------------------------------------ reading requests (SQL)


def w3(ms: int | None, tz: str) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat(timespec="seconds")


def parse_w3(text: str, what: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise GatewayError(400, "bad_request", f"{what}: a w3 datetime expected") from None
    if dt.tzinfo is None:
        raise GatewayError(400, "bad_request", f"{what}: time zone information is required")
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True)
class Query:
    ids: tuple[str, ...]
    codes: tuple[str, ...]
    start_ms: int
    end_ms: int
    statuses: tuple[str, ...]


def parse_query(params: Mapping[str, str], now_ms: int, max_days: int) -> Query:
    """GET Service Requests' arguments (pure): the window defaults to the last
    ``max_days`` days and may not span more."""
    get = lambda k: (params.get(k) or "").strip()  # noqa: E731
    ids = tuple(x.strip() for x in get("service_request_id").split(",") if x.strip())[:MAX_LIST]
    codes = tuple(x.strip() for x in get("service_code").split(",") if x.strip())
    for c in codes:
        if c not in SERVICES:
            raise GatewayError(404, "not_found", f"service_code {c[:40]} was not found")
    statuses = tuple(x.strip() for x in get("status").split(",") if x.strip())
    for st in statuses:
        if st not in ("open", "closed"):
            raise GatewayError(400, "bad_request", "status: open or closed")
    span = max_days * 86_400_000
    start = parse_w3(get("start_date"), "start_date") if get("start_date") else None
    end = parse_w3(get("end_date"), "end_date") if get("end_date") else None
    if start is None and end is None:
        end, start = now_ms, now_ms - span
    elif start is None:
        assert end is not None
        start = end - span
    elif end is None:
        end = min(start + span, now_ms)
    if end < start:
        raise GatewayError(400, "bad_request", "end_date is before start_date")
    if end - start > span:
        raise GatewayError(400, "bad_request", f"the range may not span more than {max_days} days")
    return Query(ids, codes, start, end, statuses)


def _area_column(level: str | None) -> str | None:
    return {"district": "district_id", "street": "street_id"}.get(level or "")


def read_requests(
    engine: Engine,
    settings: Settings,
    area_id: str,
    area_level: str | None,
    credential_id: str,
    q: Query,
) -> list[dict[str, Any]]:
    """Service requests (incidents) of an area from SQL, newest first (≤ 1,000), plus
    this credential's own requests not yet through the pipeline ("received")."""
    i, o = store.incidents, open311_requests
    cols = [
        i.c.incident_id,
        i.c.status,
        i.c.category,
        i.c.description,
        i.c.reported_ms,
        i.c.last_ms,
        i.c.closed_ms,
        i.c.grid_id,
        i.c.street_id,
        i.c.lon,
        i.c.lat,
        o.c.address_string,
        o.c.media_url,
    ]
    stmt = select(*cols).select_from(i.outerjoin(o, o.c.service_request_id == i.c.incident_id))
    col = _area_column(area_level)
    if col is not None:
        stmt = stmt.where(i.c[col] == area_id)
    if q.ids:
        stmt = stmt.where(i.c.incident_id.in_(q.ids))
    else:
        stmt = stmt.where(i.c.reported_ms >= q.start_ms, i.c.reported_ms <= q.end_ms)
        if q.codes:
            stmt = stmt.where(i.c.category.in_(q.codes))
        if q.statuses == ("closed",):
            stmt = stmt.where(i.c.status == "closed")
        elif q.statuses == ("open",):
            stmt = stmt.where(i.c.status != "closed")
    stmt = stmt.order_by(i.c.reported_ms.desc(), i.c.incident_id).limit(MAX_LIST)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        found = {r["incident_id"] for r in rows}
        pending: list[dict[str, Any]] = []
        if (not q.statuses or "open" in q.statuses) and not q.codes:
            p = select(o).where(o.c.credential_id == credential_id)
            if q.ids:
                p = p.where(o.c.service_request_id.in_(q.ids))
            else:
                p = p.where(o.c.created_ms >= q.start_ms, o.c.created_ms <= q.end_ms)
            p = p.order_by(o.c.created_ms.desc()).limit(MAX_LIST)
            cand = [dict(r._mapping) for r in conn.execute(p)]
            ids = [c["service_request_id"] for c in cand if c["service_request_id"] not in found]
            known = set()  # in SQL, but outside this query (area, window): not "pending"
            if ids:
                known = set(
                    conn.execute(select(i.c.incident_id).where(i.c.incident_id.in_(ids))).scalars()
                )
            pending = [c for c in cand if c["service_request_id"] in set(ids) - known]
    deadlines = settings.deadlines
    tz = settings.live.timezone
    out = []
    for r in rows:
        status, notes = open311_status(r["status"])
        name = SERVICES.get(r["category"], SERVICES["other"])
        expected = (
            r["reported_ms"] + int(deadlines.hours(r["category"]) * 3_600_000)
            if r["reported_ms"] is not None
            else None
        )
        out.append(
            {
                "service_request_id": r["incident_id"],
                "status": status,
                "status_notes": notes,
                "service_name": name[0],
                "service_code": r["category"],
                "description": r["description"],
                "agency_responsible": None,
                "service_notice": None,
                "requested_datetime": w3(r["reported_ms"], tz),
                "updated_datetime": w3(r["closed_ms"] or r["last_ms"], tz),
                "expected_datetime": w3(expected, tz),
                "address": r["address_string"],
                "address_id": r["grid_id"],
                "zipcode": None,
                "lat": r["lat"],
                "long": r["lon"],
                "media_url": r["media_url"],
            }
        )
    for c in pending[: MAX_LIST - len(out)]:
        status, notes = open311_status("received")
        out.append(
            {
                "service_request_id": c["service_request_id"],
                "status": status,
                "status_notes": notes,
                "service_name": None,
                "service_code": None,
                "description": None,
                "agency_responsible": None,
                "service_notice": None,
                "requested_datetime": w3(c["created_ms"], tz),
                "updated_datetime": w3(c["created_ms"], tz),
                "expected_datetime": None,
                "address": c["address_string"],
                "address_id": None,
                "zipcode": None,
                "lat": None,
                "long": None,
                "media_url": c["media_url"],
            }
        )
    return out


def write_request_row(
    engine: Engine, srid: str, cred: Credential, req: NewRequest, now_ms: int
) -> None:
    with engine.begin() as conn:
        store.insert_ignore(
            conn,
            open311_requests,
            [
                {
                    "service_request_id": srid,
                    "credential_id": cred.credential_id,
                    "address_string": req.address_string,
                    "media_url": req.media_url,
                    "jurisdiction_id": req.jurisdiction_id,
                    "created_ms": now_ms,
                }
            ],
        )


# ------------------------------------------------------------------ handlers


def _services_body() -> list[dict[str, Any]]:
    return [
        {
            "service_code": code,
            "service_name": zh,
            "description": f"{zh} {en}",
            "metadata": True,
            "type": "realtime",
            "keywords": kw,
            "group": group,
        }
        for code, (zh, en, group, kw) in SERVICES.items()
    ]


def _definition(code: str) -> dict[str, Any]:
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": a.code,
                "datatype": a.datatype,
                "required": a.required,
                "datatype_description": a.datatype_description,
                "order": a.order,
                "description": a.description,
                "values": [{"key": k, "name": n} for k, n in a.values],
            }
            for a in attributes(code)
        ],
    }


def jurisdiction_area(gw: core.Gateway, jurisdiction_id: str | None) -> str | None:
    """The area a jurisdiction_id names (None when not given); 404 when unknown."""
    if not jurisdiction_id:
        return None
    own = gw.settings.gateway.open311_jurisdiction_id
    if jurisdiction_id in (own, gw.city.city_id) and jurisdiction_id:
        return gw.city.city_id
    if gw.city.level_of(jurisdiction_id) in ("district", "street"):
        return jurisdiction_id
    raise GatewayError(404, "not_found", f"jurisdiction_id {jurisdiction_id[:40]} was not found")


async def list_services(request: Request) -> Response:
    fmt = _fmt(request)
    jurisdiction_area(request.app.state.gateway, request.query_params.get("jurisdiction_id"))
    return document("services", _services_body(), fmt)


async def service_definition(request: Request) -> Response:
    fmt = _fmt(request)
    jurisdiction_area(request.app.state.gateway, request.query_params.get("jurisdiction_id"))
    code = request.path_params["service_code"]
    if code not in SERVICES:
        raise GatewayError(404, "not_found", f"service_code {code[:40]} was not found")
    return document("service_definition", _definition(code), fmt)


async def _reader(request: Request, params: Mapping[str, str]) -> tuple[core.Gateway, Credential]:
    gw: core.Gateway = request.app.state.gateway
    key = params.get("api_key") or request.headers.get("x-api-key")
    try:
        cred = await gw.authenticate(key, client_address(request))
    except GatewayError as err:
        if err.status == 401:  # the spec: 403 for a missing or invalid api_key
            raise GatewayError(
                403, "forbidden", f"missing or invalid api_key ({err.description})"
            ) from None
        raise
    if cred.kind not in ("hotline", "app"):
        raise GatewayError(403, "forbidden", f"a {cred.kind} key cannot use Open311")
    return gw, cred


def _scope(gw: core.Gateway, cred: Credential, jurisdiction: str | None) -> str:
    """The area a request may read or write: the credential's, narrowed by jurisdiction_id."""
    area = cred.area_id or gw.city.city_id
    named = jurisdiction_area(gw, jurisdiction)
    if named is None:
        return area
    if gw.in_area(named, area):
        return named
    if gw.in_area(area, named):
        return area
    raise GatewayError(403, "forbidden", "jurisdiction_id is outside this api_key's area")


async def create_request(request: Request) -> Response:
    fmt = _fmt(request)
    gw: core.Gateway = request.app.state.gateway
    s = gw.settings
    body = await read_body(request, s.gateway.max_body_bytes)
    params = form_params(request.headers.get("content-type", ""), body)
    flat = dict(params)
    _gw, cred = await _reader(request, flat)
    req = parse_new_request(params, s.gateway.open311_default_severity)
    area = _scope(gw, cred, req.jurisdiction_id)
    if req.lat is not None and req.lon is not None:
        lon, lat = req.lon, req.lat
        grid = gw.grids_of([lon], [lat])[0]
        if grid is None:
            raise GatewayError(400, "bad_request", "the location is outside the city")
    else:
        assert req.address_id is not None
        found = gw.city.area(req.address_id)
        if found is None or found.get("lon") is None:
            raise GatewayError(404, "not_found", f"address_id {req.address_id[:40]} was not found")
        lon, lat, grid = float(found["lon"]), float(found["lat"]), req.address_id
    if not gw.in_area(grid, area):
        raise GatewayError(403, "forbidden", "the location is outside this api_key's jurisdiction")
    await gw.admit(cred, flat.get("api_key") or request.headers.get("x-api-key") or "", 1)
    now = gw.now_ms()
    idem = idempotency_key(cred.credential_id, request.headers.get("idempotency-key"), params)
    try:
        first = await gw.r.get(gw.key("o311", idem))
    except redis.RedisError as exc:
        raise core.unavailable(exc) from exc
    if first is not None:  # a retry: the first request's id, nothing written
        return _created(first.decode() if isinstance(first, bytes) else str(first), req, fmt)
    srid = new_request_id()
    await run_in_threadpool(write_request_row, gw.engine, srid, cred, req, now)
    ev = report_event(req, srid, cred, lon, lat, now)
    ident = Once(gw.key("o311", idem), s.gateway.open311_idempotency_s, srid)
    done = await gw.publish("reports", [Outgoing.of(ev, ident)])
    return _created(done.first(0) if done.duplicates else srid, req, fmt)  # a racing retry


NOTICE = "已受理接收，将按流程处置 (received; it will be handled through the incident lifecycle)"


def _created(srid: str, req: NewRequest, fmt: str) -> Response:
    body = [{"service_request_id": srid, "service_notice": NOTICE, "account_id": req.account_id}]
    return document("service_requests", body, fmt)


async def list_requests(request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    gw, cred = await _reader(request, params)
    area = _scope(gw, cred, params.get("jurisdiction_id"))
    await gw.admit(cred, params.get("api_key") or request.headers.get("x-api-key") or "", 1)
    q = parse_query(params, gw.now_ms(), gw.settings.gateway.open311_max_days)
    rows = await run_in_threadpool(
        read_requests, gw.engine, gw.settings, area, gw.city.level_of(area), cred.credential_id, q
    )
    return document("service_requests", rows, fmt)


async def one_request(request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    gw, cred = await _reader(request, params)
    area = _scope(gw, cred, params.get("jurisdiction_id"))
    await gw.admit(cred, params.get("api_key") or request.headers.get("x-api-key") or "", 1)
    srid = request.path_params["service_request_id"]
    now = gw.now_ms()
    q = Query((srid,), (), 0, now, ())
    rows = await run_in_threadpool(
        read_requests, gw.engine, gw.settings, area, gw.city.level_of(area), cred.credential_id, q
    )
    if not rows:  # unknown, or outside the area: the same answer
        raise GatewayError(404, "not_found", f"service_request_id {srid[:40]} was not found")
    return document("service_requests", rows[:1], fmt)


async def requests_(request: Request) -> Response:
    if request.method == "POST":
        return await create_request(request)
    return await list_requests(request)


ROUTES = [
    route(f"{BASE}/services.{{format}}", render, ("GET",))(list_services),
    route(f"{BASE}/services/{{service_code}}.{{format}}", render, ("GET",))(service_definition),
    route(f"{BASE}/requests.{{format}}", render, ("GET", "POST"))(requests_),
    route(f"{BASE}/requests/{{service_request_id}}.{{format}}", render, ("GET",))(one_request),
]


# ------------------------------------------------------------------ OpenAPI


def _errors_response(what: str) -> dict[str, Any]:
    return {
        "description": what,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Open311Errors"}},
            "text/xml": {"schema": {"type": "string"}},
        },
    }


FORMAT_PARAM = {
    "name": "format",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(FORMATS)},
    "description": "json or xml",
}
JURISDICTION = {
    "name": "jurisdiction_id",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "Optional: this city's jurisdiction id, or a district / street id.",
}
API_KEY = {
    "name": "api_key",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "A hotline or residents' app credential (also X-Api-Key).",
}
ERRORS = {
    "400": _errors_response("A parameter is missing or invalid."),
    "403": _errors_response("Missing or invalid api_key, or outside its jurisdiction."),
    "404": _errors_response("Unknown service_code, request, jurisdiction or format."),
    "405": _errors_response("Another method."),
    "413": _errors_response("Body over gateway.max_body_bytes."),
    "429": _errors_response("Over the key's rate (Retry-After)."),
    "503": _errors_response("The stream store is unavailable."),
}


def _ok(schema: str) -> dict[str, Any]:
    return {
        "description": "OK",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}},
            "text/xml": {"schema": {"type": "string"}},
        },
    }


_NEW_REQUEST = {
    "type": "object",
    "required": ["api_key", "service_code"],
    "properties": {
        "api_key": {"type": "string"},
        "jurisdiction_id": {"type": "string"},
        "service_code": {"type": "string", "enum": list(SERVICES)},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "long": {"type": "number", "minimum": -180, "maximum": 180},
        "address_string": {"type": "string"},
        "address_id": {"type": "string", "description": "one of our grid ids"},
        "email": {"type": "string"},
        "device_id": {"type": "string"},
        "account_id": {"type": "string"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "phone": {"type": "string"},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "media_url": {"type": "string"},
    },
    "additionalProperties": {"type": "string"},
}

PATHS: dict[str, Any] = {
    f"{BASE}/services.{{format}}": {
        "get": {
            "operationId": "open311_services",
            "tags": ["Open311 (hotline, residents)"],
            "summary": "GET Service List: our report categories (zh-CN names)",
            "parameters": [FORMAT_PARAM, JURISDICTION],
            "responses": {"200": _ok("Open311Services"), **ERRORS},
        }
    },
    f"{BASE}/services/{{service_code}}.{{format}}": {
        "get": {
            "operationId": "open311_service_definition",
            "tags": ["Open311 (hotline, residents)"],
            "summary": "GET Service Definition: a category's attributes",
            "parameters": [
                {
                    "name": "service_code",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                FORMAT_PARAM,
                JURISDICTION,
            ],
            "responses": {"200": _ok("Open311Definition"), **ERRORS},
        }
    },
    f"{BASE}/requests.{{format}}": {
        "post": {
            "operationId": "open311_create_request",
            "tags": ["Open311 (hotline, residents)"],
            "summary": "POST Service Request: a new report (returns service_request_id)",
            "description": "Idempotent: see the Idempotency-Key header.",
            "parameters": [
                FORMAT_PARAM,
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 128},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": _NEW_REQUEST},
                    "application/json": {"schema": _NEW_REQUEST},
                },
            },
            "responses": {"200": _ok("Open311Created"), **ERRORS},
        },
        "get": {
            "operationId": "open311_requests",
            "tags": ["Open311 (hotline, residents)"],
            "summary": "GET Service Requests of the key's area (≤ 90 days, ≤ 1000)",
            "parameters": [
                FORMAT_PARAM,
                API_KEY,
                JURISDICTION,
                {"name": "service_request_id", "in": "query", "schema": {"type": "string"}},
                {"name": "service_code", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "start_date",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "end_date",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {"name": "status", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _ok("Open311Requests"), **ERRORS},
        },
    },
    f"{BASE}/requests/{{service_request_id}}.{{format}}": {
        "get": {
            "operationId": "open311_request",
            "tags": ["Open311 (hotline, residents)"],
            "summary": "GET Service Request: one request's status",
            "parameters": [
                {
                    "name": "service_request_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                FORMAT_PARAM,
                API_KEY,
                JURISDICTION,
            ],
            "responses": {"200": _ok("Open311Requests"), **ERRORS},
        }
    },
}

_NULLABLE_STR = {"type": ["string", "null"]}
SCHEMAS: dict[str, Any] = {
    "Open311Errors": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code", "description"],
            "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
        },
    },
    "Open311Services": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["service_code", "service_name", "metadata", "type"],
            "properties": {
                "service_code": {"type": "string"},
                "service_name": {"type": "string"},
                "description": {"type": "string"},
                "metadata": {"type": "boolean"},
                "type": {"type": "string", "enum": ["realtime", "batch", "blackbox"]},
                "keywords": {"type": "string"},
                "group": {"type": "string"},
            },
        },
    },
    "Open311Definition": {
        "type": "object",
        "required": ["service_code", "attributes"],
        "properties": {
            "service_code": {"type": "string"},
            "attributes": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Open311Created": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["service_request_id"],
            "properties": {
                "service_request_id": {"type": "string"},
                "service_notice": _NULLABLE_STR,
                "account_id": _NULLABLE_STR,
            },
        },
    },
    "Open311Requests": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["service_request_id", "status"],
            "properties": {
                "service_request_id": {"type": "string"},
                "status": {"type": "string", "enum": ["open", "closed"]},
                "status_notes": _NULLABLE_STR,
                "service_name": _NULLABLE_STR,
                "service_code": _NULLABLE_STR,
                "description": _NULLABLE_STR,
                "requested_datetime": _NULLABLE_STR,
                "updated_datetime": _NULLABLE_STR,
                "expected_datetime": _NULLABLE_STR,
                "address": _NULLABLE_STR,
                "address_id": _NULLABLE_STR,
                "lat": {"type": ["number", "null"]},
                "long": {"type": ["number", "null"]},
                "media_url": _NULLABLE_STR,
            },
        },
    },
}

register(
    Protocol(
        name="open311",
        title="Open311 GeoReport v2 (12345 hotline, residents' apps)",
        description=(__doc__ or "").split("\n\n")[0],
        routes=ROUTES,
        error=render,
        paths=PATHS,
        schemas=SCHEMAS,
        prefixes=("/open311",),
    )
)
