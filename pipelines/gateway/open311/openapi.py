"""Open311's OpenAPI fragment (paths and schemas)."""

from __future__ import annotations

from typing import Any

from pipelines.gateway.open311.formats import BASE, FORMATS
from pipelines.gateway.open311.intake import MAX_DESCRIPTION
from pipelines.gateway.open311.services import SERVICES

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

PATHS[f"{BASE}/tokens/{{token_id}}.{{format}}"] = {
    "get": {
        "operationId": "open311_token",
        "tags": ["Open311 (hotline, residents)"],
        "summary": "GET service_request_id from a token (the POST's Idempotency-Key)",
        "parameters": [
            {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string"}},
            FORMAT_PARAM,
            API_KEY,
            JURISDICTION,
        ],
        "responses": {"200": _ok("Open311Token"), **ERRORS},
    }
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
    "Open311Token": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["service_request_id", "token"],
            "properties": {"service_request_id": {"type": "string"}, "token": {"type": "string"}},
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
