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
* ``GET tokens/{token_id}`` with ``api_key`` — the spec's "service_request_id from a
  token": our POST answers with the id at once, and its ``Idempotency-Key`` is the
  request's token, so a client that lost the answer finds ``[{service_request_id,
  token}]`` by its key (its own requests only; 404 in the spec's format otherwise).
"""

from __future__ import annotations

from pipelines.gateway.open311.formats import BASE, FORMATS, document, format_of, render
from pipelines.gateway.open311.handlers import ROUTES, jurisdiction_area
from pipelines.gateway.open311.intake import (
    MAX_DESCRIPTION,
    NewRequest,
    form_params,
    idempotency_key,
    parse_new_request,
    report_event,
)
from pipelines.gateway.open311.openapi import PATHS, SCHEMAS
from pipelines.gateway.open311.records import (
    MAX_LIST,
    Query,
    open311_requests,
    parse_query,
    read_requests,
)
from pipelines.gateway.open311.services import (
    SERVICES,
    STATUS_NOTES,
    _definition,
    _services_body,
    attributes,
    open311_status,
)
from pipelines.gateway.registry import Protocol, register

__all__ = [
    "BASE",
    "FORMATS",
    "MAX_DESCRIPTION",
    "MAX_LIST",
    "PATHS",
    "ROUTES",
    "SCHEMAS",
    "SERVICES",
    "STATUS_NOTES",
    "NewRequest",
    "Query",
    "_definition",
    "_services_body",
    "attributes",
    "document",
    "form_params",
    "format_of",
    "idempotency_key",
    "jurisdiction_area",
    "open311_requests",
    "open311_status",
    "parse_new_request",
    "parse_query",
    "read_requests",
    "render",
    "report_event",
]

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
