"""The ``?at=`` value of a page: a past moment in local time, shared in a link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class At:
    """What ``?at=`` asks for: ``at_ms`` a past moment, or None for live; ``problem`` says
    why a value given was not taken ("bad": not a local date and time; "future": not
    past yet, so live is shown)."""

    at_ms: int | None
    problem: str | None = None


def parse_at(value: object, tz: str, now_ms: int) -> At:
    """``2026-12-03T09:40`` (seconds optional; a space for the T too) in ``tz`` → the
    moment; empty → live; garbage → live with "bad"; now or later → live with "future"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return At(None)
    if not isinstance(value, str) or len(value) > 40:
        return At(None, "bad")
    text = value.strip()
    for fmt in FORMATS:
        try:
            local = datetime.strptime(text, fmt)
        except ValueError:
            continue
        at_ms = int(local.replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)
        if at_ms >= now_ms:
            return At(None, "future")
        return At(at_ms)
    return At(None, "bad")


def format_at(at_ms: int, tz: str) -> str:
    """The ``?at=`` text of a moment (seconds only when not on a whole minute)."""
    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz))
    return local.strftime("%Y-%m-%dT%H:%M" if local.second == 0 else "%Y-%m-%dT%H:%M:%S")


def day_start_ms(at_ms: int, tz: str) -> int:
    """Local midnight of the moment's day (where stepping through a day starts)."""
    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(tz))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
