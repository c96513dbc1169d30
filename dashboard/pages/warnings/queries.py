"""The early-warning page's logic: pure functions over the live warning list.

Items are what ``pipelines.warnings.engine.live_item`` writes to Redis (one dict per open
warning). Scope is always the session principal's; nothing here reads a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.access import accounts
from pipelines.city.geography import City
from pipelines.warnings import ACTIONS, RANK
from pipelines.warnings import POST as W_POST
from pipelines.warnings import RULES as W_RULES

LEVEL_COLORS = {"blue": "#2f80ed", "yellow": "#f2c94c", "orange": "#f2994a", "red": "#eb5757"}
ALARM_LEVELS = ("orange", "red")  # a new one in scope raises the visible/audible cue
RULES = (*W_RULES, *W_POST)  # every registered rule, then fusion
STATUSES = ("new", "acknowledged", "dispatched")


@dataclass(frozen=True)
class Filters:
    levels: tuple[str, ...] = ()  # empty = all
    statuses: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    area_id: str | None = None  # within this area (itself or below)
    since_ms: int | None = None  # first seen at or after

    @classmethod
    def of(
        cls,
        levels: Sequence[str] | None,
        statuses: Sequence[str] | None,
        rules: Sequence[str] | None,
        area_id: str | None,
        hours: float | None,
        now_ms: int,
    ) -> Filters:
        """From component values, keeping only known values (inputs are untrusted)."""
        return cls(
            tuple(x for x in (levels or ()) if x in RANK),
            tuple(x for x in (statuses or ()) if x in STATUSES),
            tuple(x for x in (rules or ()) if x in RULES),
            area_id if isinstance(area_id, str) and area_id else None,
            now_ms - int(float(hours) * 3_600_000) if hours else None,
        )


def in_scope(items: Iterable[dict[str, Any]], city: City, scope: str) -> list[dict[str, Any]]:
    """The warnings a principal with this scope may see: those of areas inside it."""
    return [
        w
        for w in items
        if city.area(str(w.get("area_id"))) is not None
        and accounts.scope_allows(scope, str(w["area_id"]), city)
    ]


def apply(items: Iterable[dict[str, Any]], f: Filters, city: City) -> list[dict[str, Any]]:
    """Filtered, most urgent first (level, then newest activity)."""
    out = []
    for w in items:
        if f.levels and w["level"] not in f.levels:
            continue
        if f.statuses and w["status"] not in f.statuses:
            continue
        if f.rules and w["rule"] not in f.rules:
            continue
        if f.area_id and f.area_id not in city.ancestors(w["area_id"]):
            continue
        if f.since_ms is not None and w["first_ms"] < f.since_ms:
            continue
        out.append(w)
    return sorted(out, key=lambda w: (-RANK[w["level"]], -w["last_ms"], w["id"]))


def level_counts(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    out = dict.fromkeys(RANK, 0)
    for w in items:
        out[w["level"]] += 1
    return out


def new_alarms(items: Iterable[dict[str, Any]], seen: Sequence[str] | None) -> list[str]:
    """Ids of orange/red warnings not seen before (the cue fires for these)."""
    known = set(seen or ())
    return sorted(w["id"] for w in items if w["level"] in ALARM_LEVELS and w["id"] not in known)


def headline(
    items: Iterable[dict[str, Any]], city: City, area_id: str, level: str = "red"
) -> dict[str, Any] | None:
    """The most recently active warning of this level inside ``area_id`` (wall banner)."""
    inside = [w for w in in_scope(items, city, area_id) if w["level"] == level]
    return max(inside, key=lambda w: (w["last_ms"], w["id"]), default=None)


def markers(items: Iterable[dict[str, Any]], city: City) -> dict[str, Any]:
    """A point per warning at its area's centre, coloured and sized by level."""
    features = []
    for w in items:
        row = city.area(w["area_id"])
        if row is None:
            continue
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                "properties": {
                    "id": w["id"],
                    "c": LEVEL_COLORS[w["level"]],
                    "r": 5 + 2 * RANK[w["level"]],
                    "k": "inc",
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def allowed_actions(role: str, can_act: bool, status: str) -> list[str]:
    """The actions this principal may take on a warning in this status (scope checked apart)."""
    if not can_act or role == "wall":
        return []
    return [a for a, (sources, _) in ACTIONS.items() if status in sources]


def area_options(city: City, scope: str) -> list[tuple[str, str]]:
    """(area_id, name) of the scope and the districts / streets inside it, for the filter."""
    out = []
    for level in ("city", "district", "street"):
        for area_id in city.ids(level):
            if accounts.scope_allows(scope, area_id, city):
                row = city.area(area_id)
                out.append((area_id, str(row["name"]) if row else area_id))
    return out
