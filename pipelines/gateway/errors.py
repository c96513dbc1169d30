"""The one error the gateway raises; each protocol renders it in its own format."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class GatewayError(Exception):
    """A refused request: HTTP status, a short machine code and a human description."""

    def __init__(
        self,
        status: int,
        code: str,
        description: str,
        headers: dict[str, str] | None = None,
        items: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description
        self.headers = headers or {}
        self.items = items or []  # per-item problems of a batch (index, reason, field)


def json_error(request: Request, err: GatewayError) -> Response:
    """Our own JSON error body (batch API, Frigate over HTTP, health and docs):
    ``{"error": {"code", "message"[, "items"]}}`` with the error's status and headers."""
    body: dict[str, Any] = {"error": {"code": err.code, "message": err.description}}
    if err.items:
        body["error"]["items"] = err.items
    return JSONResponse(body, status_code=err.status, headers=err.headers)
