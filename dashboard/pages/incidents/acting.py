"""What the workbench's action callbacks share: the request a form makes, performing it
through the dispatch core, and the outcome in words. No Dash callbacks here (those are
in ``callbacks.py``, registered with each app)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from dashboard.i18n import t
from pipelines.spine.events import LEVELS

try:  # the dispatch core
    from pipelines.dispatch import actions as DA
except ImportError:  # pragma: no cover - before the core lands
    DA = None  # type: ignore[assignment]

HOUR_MS = 3_600_000
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,40}$")


def new_request_id() -> str:
    """A client nonce for one opened form (the idempotency key of its submit)."""
    return secrets.token_urlsafe(15)  # 20 characters of [A-Za-z0-9_-]


def form_state(action: str, incident_id: str, n_events: int | None) -> dict[str, Any]:
    return {
        "action": action,
        "incident_id": incident_id,
        "request_id": new_request_id(),
        "expected_events": n_events,
    }


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


def request_of(form: dict[str, Any], values: dict[str, Any], now_ms: int) -> Any:
    """The core's Request from an opened form and the fields' values (untrusted: odd
    values are dropped and the core's check says what is missing)."""
    assert DA is not None
    hours = values.get("due")
    due_ms = None
    if isinstance(hours, int | float) and not isinstance(hours, bool) and 0 < hours <= 2160:
        due_ms = int(now_ms + float(hours) * HOUR_MS)
    level = values.get("level")
    expected = form.get("expected_events")
    return DA.Request(
        action=str(form["action"]),
        incident_id=str(form["incident_id"]),
        request_id=str(form["request_id"]),
        expected_events=expected if isinstance(expected, int) else None,
        unit_id=_text(values.get("unit"), 64),
        handler_id=_text(values.get("handler"), 64),
        due_ms=due_ms,
        reason=_text(values.get("reason"), 500),
        note=_text(values.get("note"), 2000),
        photo_url=_text(values.get("photo"), 512),
        onsite_by=_text(values.get("onsite"), 64),
        level=level if level in LEVELS else None,
        duplicate_of=_text(values.get("dup"), 64),
    )


def valid_form(form: Any) -> bool:
    return (
        isinstance(form, dict)
        and isinstance(form.get("action"), str)
        and isinstance(form.get("incident_id"), str)
        and isinstance(form.get("request_id"), str)
        and bool(REQUEST_ID.match(form["request_id"]))
    )


def pending_of(outcome: Any, form: dict[str, Any]) -> dict[str, str] | None:
    """What a screen keeps of an action the pipeline has not decided yet: enough to ask
    again (its incident and request id), nothing else."""
    if getattr(outcome, "status", None) != "pending":
        return None
    return {"incident_id": str(form["incident_id"]), "request_id": str(form["request_id"])}


def valid_pending(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("incident_id"), str)
        and isinstance(data.get("request_id"), str)
        and bool(REQUEST_ID.match(data["request_id"]))
    )


def outcome_text(outcome: Any, lang: str) -> str:
    status = str(getattr(outcome, "status", "pending"))
    reason = getattr(outcome, "reason", None) or ""
    return t(f"inca.out.{status}", lang, reason=reason)


def error_text(exc: Any, lang: str) -> str:
    code = str(getattr(exc, "code", "denied"))
    detail = str(getattr(exc, "detail", "") or "")
    return t(f"inca.err.{code}", lang, detail=detail)
