"""Open311 requests in SQL: the extras table and GET Service Requests' reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Column, Engine, String, Table, Text, select

from pipelines.dispatch.flows import Flows, flows_for
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.open311.intake import NewRequest
from pipelines.gateway.open311.services import SERVICES, open311_status
from pipelines.settings import Settings
from pipelines.spine import store

MAX_LIST = 1000

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
    # the POST's Idempotency-Key: GET tokens/{token} finds the request by it
    Column("token", String(128), index=True),
)

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
        i.c.severity,
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
    flows = flows_for(settings)
    tz = settings.live.timezone
    out = []
    for r in rows:
        status, notes = open311_status(r["status"])
        name = SERVICES.get(r["category"], SERVICES["other"])
        expected = (
            closure_due(flows, r["category"], r["severity"], r["reported_ms"])
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


def closure_due(flows: Flows, category: str, severity: int | None, reported_ms: int) -> int:
    """When a request is due to be closed: its report plus its standard flow's hours (by
    category and severity; a category the flows do not know takes other's)."""
    known = category in {f.category for f in flows.flows}
    flow = flows.select(category if known else "other", int(severity or 1))
    return flow.closure_due_ms(reported_ms)


def token_of(header: str | None) -> str | None:
    """The token a POST's Idempotency-Key gives its request (None without one)."""
    return (header or "").strip()[:128] or None


def token_requests(engine: Engine, credential_id: str, token: str) -> list[str]:
    """The requests this credential created with this token, earliest first (two only
    when retries raced: the first published is the request, see ``one_token``)."""
    o = open311_requests
    q = (
        select(o.c.service_request_id)
        .where(o.c.credential_id == credential_id, o.c.token == token)
        .order_by(o.c.created_ms, o.c.service_request_id)
    )
    with engine.connect() as conn:
        return [str(x) for x in conn.execute(q).scalars()]


def write_request_row(
    engine: Engine,
    srid: str,
    cred: Credential,
    req: NewRequest,
    now_ms: int,
    token: str | None = None,
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
                    "token": token,
                }
            ],
        )
