"""One incident's detail for the workbench: its row, timeline, linked video alerts and
warnings (pure reads over an engine; the callbacks decide who may ask first)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, and_, or_, select

from pipelines.city.geography import City
from pipelines.spine import store

WINDOW_MS = 30 * 60_000  # video alerts of the same grid within ±30 min of the report
RECENT_MS = 24 * 3_600_000  # closed warnings still listed for a day after they closed
EVENT_FIELDS = (
    "event_id",
    "step",
    "ts_ms",
    "actor_id",
    "unit_id",
    "handler_id",
    "reason",
    "note",
    "photo_url",
    "onsite_by",
    "level",
    "due_ms",
    "duplicate_of",
    "reporter_id",
    "source",
    "description",
)
OPEN_WARNINGS = ("new", "acknowledged", "dispatched")


def incident_row(engine: Engine, incident_id: str) -> dict[str, Any] | None:
    """The incident's row (every column the schema has), or None."""
    t = store.incidents
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.incident_id == incident_id)).mappings().first()
    return dict(row) if row is not None else None


def timeline(engine: Engine, incident_id: str) -> list[dict[str, Any]]:
    """Every accepted event of the incident, oldest first (time, then event id)."""
    e = store.incident_events
    cols = [e.c[c] for c in EVENT_FIELDS if c in e.c]
    with engine.connect() as conn:
        rows = conn.execute(
            select(*cols).where(e.c.incident_id == incident_id).order_by(e.c.ts_ms, e.c.event_id)
        ).mappings()
        return [dict(r) for r in rows]


def video_alerts(engine: Engine, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """Video alerts of the incident's grid within ±30 minutes of its report."""
    v = store.video_alerts
    at = incident.get("reported_ms") or incident.get("first_ms") or 0
    with engine.connect() as conn:
        rows = conn.execute(
            select(v.c.alert_id, v.c.camera_id, v.c.label, v.c.score, v.c.ts_ms)
            .where(
                v.c.grid_id == incident.get("grid_id"),
                v.c.ts_ms >= at - WINDOW_MS,
                v.c.ts_ms <= at + WINDOW_MS,
            )
            .order_by(v.c.ts_ms, v.c.alert_id)
            .limit(50)
        ).mappings()
        return [dict(r) for r in rows]


def linked_warnings(
    engine: Engine, city: City, incident: dict[str, Any], now_ms: int
) -> list[dict[str, Any]]:
    """Open or recent warnings whose area contains the incident, or whose evidence names it."""
    w = store.warnings
    grid = str(incident.get("grid_id") or "")
    areas = city.ancestors(grid) if city.area(grid) is not None else []
    iid = str(incident["incident_id"])
    live = or_(w.c.status.in_(OPEN_WARNINGS), w.c.closed_ms >= now_ms - RECENT_MS)
    named = w.c.evidence.contains(orjson.dumps(iid).decode())
    where = or_(and_(w.c.area_id.in_(areas), live), named) if areas else named
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                w.c.warning_id,
                w.c.rule,
                w.c.area_id,
                w.c.level,
                w.c.status,
                w.c.last_seen_ms,
                w.c.evidence,
            )
            .where(where)
            .order_by(w.c.last_seen_ms.desc(), w.c.warning_id)
            .limit(20)
        ).mappings()
        out = []
        for r in rows:
            d = dict(r)
            d["names_it"] = iid in orjson.loads(d.pop("evidence") or "[]")
            out.append(d)
        return out
