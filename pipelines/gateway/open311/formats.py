"""Open311 formats: JSON and XML documents by the path's suffix, and the spec's error
format (a list of ``{code, description}``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import orjson
from starlette.requests import Request
from starlette.responses import Response

from pipelines.gateway.errors import GatewayError

BASE = "/open311/v2"
FORMATS = ("json", "xml")

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
