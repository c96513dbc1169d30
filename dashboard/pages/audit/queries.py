"""The audit page's pure parts: the filter's time range, rows in words and local time,
an entry's detail as ``key: value`` lines, the chain check as a sentence. No Flask, no SQL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dashboard.i18n import t
from pipelines.access import text
from pipelines.access.audit import VerifyResult

LIMIT = 500  # rows shown at most (newest first)
DEFAULT_DAYS = 7  # the range the page opens with: the last week, today included


def local_time(ms: int, tz: str) -> str:
    """``2026-12-05 09:30:00`` in the city's time zone (ISO date, 24-hour clock)."""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def default_range(now_ms: int, tz: str) -> tuple[str, str]:
    """The first and last local day (ISO) the page opens with."""
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).date()
    return (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(), today.isoformat()


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def time_range(start: Any, end: Any, tz: str) -> tuple[int | None, int | None]:
    """[since, until) in ms for local days ``start``..``end`` (both included); None for
    an open end. Swapped days are put in order; anything that is not a date is open."""
    first, last = _day(start), _day(end)
    if first and last and first > last:
        first, last = last, first
    zone = ZoneInfo(tz)

    def ms(d: date) -> int:
        return int(datetime.combine(d, time(0), zone).timestamp() * 1000)

    return (
        ms(first) if first else None,
        ms(last + timedelta(days=1)) if last else None,
    )


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    if isinstance(value, list):
        return [(prefix, ", ".join(str(x) for x in value))]
    return [(prefix, "" if value is None else str(value))]


def detail_lines(
    detail: str | None,
    lang: str = "zh-CN",
    names: Mapping[str, str] | None = None,
    tz: str = "Asia/Shanghai",
) -> list[tuple[str, str]]:
    """An entry's detail (JSON text) as (key, value) lines in words: known keys by the
    catalog, a role in words, an area id by its name, ``*_ms`` instants in local time;
    text that is not a JSON object is one line without a key. Every value made visible
    (no control characters)."""
    if not detail:
        return []
    try:
        data = json.loads(detail)
    except ValueError:
        return [("", text.visible(detail))]
    if not isinstance(data, dict):
        return [("", text.visible(str(data)))]
    names = names or {}
    out = []
    for k, v in _flatten("", data):
        shown = v
        if k == "role":
            shown = label("role", v, lang)
        elif v in names:
            shown = names[v]
        elif k.endswith("_ms") and v.isdigit():
            shown = local_time(int(v), tz)
        out.append((text.visible(label("audit.key", k, lang)), text.visible(shown)))
    return out


def label(prefix: str, value: str, lang: str) -> str:
    """The catalog's word for ``prefix.value`` (an action, a role), else the value itself."""
    got = t(f"{prefix}.{value}", lang)
    return value if got == f"{prefix}.{value}" else got


def view_rows(
    rows: list[dict[str, Any]], tz: str, lang: str, names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Audit rows as the page shows them: local time, words for the action and role, the
    scope's name (its id kept for the hover), the detail as lines."""
    out = []
    for r in rows:
        scope = str(r.get("scope") or "")
        out.append(
            {
                "seq": r["seq"],
                "at": local_time(int(r["at_ms"]), tz),
                "actor": text.visible(str(r.get("actor") or "")),
                "role": label("role", str(r.get("role") or ""), lang),
                "scope": names.get(scope, scope),
                "scope_id": scope,
                "action": label("audit.action", str(r.get("action") or ""), lang),
                "action_id": str(r.get("action") or ""),
                "target": text.visible(str(r.get("target") or "")),
                "detail": detail_lines(r.get("detail"), lang, names, tz),
            }
        )
    return out


def verify_text(check: VerifyResult, lang: str) -> tuple[str, bool]:
    """The chain check as a sentence, and whether it is intact."""
    if not check.ok:
        return t("audit.tampered", lang, seq=check.bad_seq, why=check.reason), False
    if not check.rows:
        return t("audit.ok_empty", lang), True
    return (
        t("audit.ok", lang, n=check.rows, first=check.first_seq, last=check.last_seq)
        + (t("audit.ok_unkeyed", lang, n=check.unkeyed) if check.unkeyed else ""),
        True,
    )


def options(values: list[str], prefix: str, lang: str) -> list[dict[str, str]]:
    """Dropdown options for distinct values (actors, actions), in words where known."""
    return [
        {"label": label(prefix, v, lang) if prefix else v, "value": v}
        for v in sorted({v for v in values if v})
    ]
