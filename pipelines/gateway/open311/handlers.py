"""Open311 HTTP handlers and routes."""

from __future__ import annotations

from collections.abc import Mapping

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from pipelines.gateway import core
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.open311.formats import BASE, _fmt, document, render
from pipelines.gateway.open311.intake import (
    NewRequest,
    form_params,
    idempotency_key,
    new_request_id,
    parse_new_request,
    report_event,
)
from pipelines.gateway.open311.records import (
    Query,
    parse_query,
    read_requests,
    token_of,
    token_requests,
    write_request_row,
)
from pipelines.gateway.open311.services import SERVICES, _definition, _services_body
from pipelines.gateway.publish import Once, Outgoing
from pipelines.gateway.registry import client_address, read_body, route

# ------------------------------------------------------------------ handlers


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
    token = token_of(request.headers.get("idempotency-key"))
    await run_in_threadpool(write_request_row, gw.engine, srid, cred, req, now, token)
    ev = report_event(req, srid, cred, lon, lat, now)
    ident = Once(gw.key("o311", idem), s.gateway.open311_idempotency_s, srid)
    done = await gw.publish("reports", [Outgoing.of(ev, ident)])
    if gw.keys.is_tagged and done.written:
        # tagged layout: the Once key lives in the slot of the new incident's partition;
        # the look-up above reads this one (a retry racing the first is not caught here)
        try:
            await gw.r.set(gw.key("o311", idem), srid, ex=s.gateway.open311_idempotency_s)
        except redis.RedisError as exc:
            raise core.unavailable(exc) from exc
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


async def one_token(request: Request) -> Response:
    """GET service_request_id from a token: the token is the POST's Idempotency-Key (our
    POST answers with the id at once; a client that lost that answer asks by its key).
    Only the credential that sent the POST finds it; unknown → 404 in the spec's format."""
    fmt = _fmt(request)
    params = dict(request.query_params)
    gw, cred = await _reader(request, params)
    _scope(gw, cred, params.get("jurisdiction_id"))
    await gw.admit(cred, params.get("api_key") or request.headers.get("x-api-key") or "", 1)
    token = token_of(request.path_params["token_id"])
    srid: str | None = None
    if token is not None:
        idem = idempotency_key(cred.credential_id, token, ())
        try:
            first = await gw.r.get(gw.key("o311", idem))  # the published one, while kept
        except redis.RedisError as exc:
            raise core.unavailable(exc) from exc
        if first is not None:
            srid = first.decode() if isinstance(first, bytes) else str(first)
        else:
            found = await run_in_threadpool(token_requests, gw.engine, cred.credential_id, token)
            srid = found[0] if found else None
    if srid is None:
        shown = request.path_params["token_id"][:40]
        raise GatewayError(404, "not_found", f"token {shown} was not found")
    return document("service_requests", [{"service_request_id": srid, "token": token}], fmt)


async def requests_(request: Request) -> Response:
    if request.method == "POST":
        return await create_request(request)
    return await list_requests(request)


ROUTES = [
    route(f"{BASE}/services.{{format}}", render, ("GET",))(list_services),
    route(f"{BASE}/services/{{service_code}}.{{format}}", render, ("GET",))(service_definition),
    route(f"{BASE}/requests.{{format}}", render, ("GET", "POST"))(requests_),
    route(f"{BASE}/requests/{{service_request_id}}.{{format}}", render, ("GET",))(one_request),
    route(f"{BASE}/tokens/{{token_id}}.{{format}}", render, ("GET",))(one_token),
]
