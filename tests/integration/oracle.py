"""Expected live state and SQL contents computed from the published input alone.

Deliberately independent of the pipeline code (no Lua, no runner, no ``aggregate``):
plain Python over each stream's entries in stream order, applying the README's rules —

* payload-level reasons come with the input (the generator knows the defect it made);
  a valid payload whose point is in no grid is ``outside_city``, an alert of a camera
  not in the registry ``unknown_camera``;
* an event id (alert id) belongs to the first entry in stream order carrying it; any
  later entry with it is a ``duplicate`` (another incident, another day: still);
* an incident's valid entries in time order (ts, then stream order): a ``reported``
  after an entry with another event id, and anything after a ``closed`` with another
  event id, is a ``bad_transition``;
* an entry breaking both is dead-lettered with either reason (whichever the pipelines
  met first: a rejection is final); every other entry is accepted;
* an incident's state is a function of its accepted events: category, severity and
  place of the first (time, then stream order), status the last step (``closed`` once
  there is one), last time the latest, open while it has no ``closed``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from pipelines.city.geography import City, GridIndex

CHAIN = ("grid_id", "street_id", "district_id", "city_id")
# Reasons a valid payload can still earn: decided here, not taken from the input.
DECIDED_HERE = (None, "duplicate", "bad_transition", "outside_city")

Entry = tuple[dict[bytes, bytes], str | None]  # stream entry fields, payload-level reason


@dataclass
class Incident:
    status: str
    last_ms: int
    category: str
    severity: int
    grid_id: str
    open: bool


@dataclass
class Expected:
    dead: dict[tuple[str, str], set[str]]  # (stream, entry id) → acceptable reasons
    incidents: dict[str, Incident]
    reports_by_day: dict[tuple[str, str], int]  # (day, area) → accepted ``reported``
    closed_by_day: dict[tuple[str, str], int]
    open_by_area: dict[str, int]
    video_by_day: dict[tuple[str, str], int]
    patrolled: dict[str, set[str]]  # day → grids
    positions: dict[str, tuple[int, str]]  # worker → (ts, grid)
    accepted_reports: set[str]  # entry ids in incident_events
    alert_owner: dict[str, str]  # alert id → entry id
    n_track_slots: int
    dead_by_reason: dict[str, int] = field(default_factory=dict)  # the unambiguous ones


def _day(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz).strftime("%Y%m%d")


def _chains(city: City, index: GridIndex, pts: list[tuple[float, float]]) -> list[Any]:
    if not pts:
        return []
    arr = np.asarray(pts, dtype=np.float64)
    gi = index.assign(arr[:, 0], arr[:, 1])
    rows = city.grids.select(CHAIN).rows()
    return [rows[i] if i >= 0 else None for i in gi.tolist()]


def _per_area(counts: dict[tuple[str, str], int], day: str, chain: tuple[str, ...]) -> None:
    for a in chain:
        counts[(day, a)] = counts.get((day, a), 0) + 1


def expected(
    streams: dict[str, list[Entry]],
    ids: dict[str, list[str]],
    city: City,
    index: GridIndex,
    cameras: dict[str, tuple[float, float]],
    tz_name: str,
    track_every_s: int = 60,
) -> Expected:
    tz = ZoneInfo(tz_name)
    dead: dict[tuple[str, str], set[str]] = {}
    valid: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}  # feed → (pos, entry, event)
    for feed, entries in streams.items():
        valid[feed] = []
        for pos, ((fields, reason), entry) in enumerate(zip(entries, ids[feed], strict=True)):
            if reason not in DECIDED_HERE:
                dead[(feed, entry)] = {reason}  # type: ignore[arg-type]
                continue
            ev = orjson.loads(fields[b"data"])
            if feed == "video" and ev["camera_id"] not in cameras:
                dead[(feed, entry)] = {"unknown_camera"}
                continue
            if feed == "video" and ev.get("lon") is None:
                ev["lon"], ev["lat"] = cameras[ev["camera_id"]]
            valid[feed].append((pos, entry, ev))
        chains = _chains(city, index, [(ev["lon"], ev["lat"]) for _, _, ev in valid[feed]])
        kept = []
        for (pos, entry, ev), chain in zip(valid[feed], chains, strict=True):
            if chain is None:
                dead[(feed, entry)] = {"outside_city"}
            else:
                ev["_chain"] = chain
                kept.append((pos, entry, ev))
        valid[feed] = kept

    # ---- reports: the event-id rule and the lifecycle rule
    owner: dict[str, int] = {}
    for pos, _, ev in valid["reports"]:
        owner.setdefault(ev["event_id"], pos)  # stream order: the first carrier
    by_inc: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    for item in valid["reports"]:
        by_inc[item[2]["incident_id"]].append(item)
    accepted: dict[str, list[dict[str, Any]]] = {}
    accepted_entries: set[str] = set()
    for inc, items in by_inc.items():
        items.sort(key=lambda x: (x[2]["ts"], x[0]))
        for k, (pos, entry, ev) in enumerate(items):
            earlier = [x[2] for x in items[:k]]
            eid = ev["event_id"]
            bad = (ev["step"] == "reported" and any(x["event_id"] != eid for x in earlier)) or any(
                x["step"] == "closed" and x["event_id"] != eid for x in earlier
            )
            dup = owner[eid] != pos
            if dup and bad:
                dead[("reports", entry)] = {"duplicate", "bad_transition"}
            elif dup:
                dead[("reports", entry)] = {"duplicate"}
            elif bad:
                dead[("reports", entry)] = {"bad_transition"}
            else:
                accepted.setdefault(inc, []).append(ev)
                accepted_entries.add(entry)

    incidents: dict[str, Incident] = {}
    reports_by_day: dict[tuple[str, str], int] = {}
    closed_by_day: dict[tuple[str, str], int] = {}
    open_by_area: dict[str, int] = {}
    for inc, evs in accepted.items():  # already in time, then stream, order
        first = evs[0]
        closed = any(e["step"] == "closed" for e in evs)
        incidents[inc] = Incident(
            status="closed" if closed else evs[-1]["step"],
            last_ms=max(e["ts"] for e in evs),
            category=first["category"],
            severity=first["severity"],
            grid_id=first["_chain"][0],
            open=not closed,
        )
        chain = first["_chain"]  # an incident counts where its first event was
        for e in evs:
            if e["step"] == "reported":
                _per_area(reports_by_day, _day(e["ts"], tz), chain)
            elif e["step"] == "closed":
                _per_area(closed_by_day, _day(e["ts"], tz), chain)
        if not closed:
            for a in chain:
                open_by_area[a] = open_by_area.get(a, 0) + 1

    # ---- video: the alert-id rule
    alert_owner: dict[str, str] = {}
    video_by_day: dict[tuple[str, str], int] = {}
    for _, entry, ev in valid["video"]:  # in stream order
        if ev["alert_id"] in alert_owner:
            dead[("video", entry)] = {"duplicate"}
            continue
        alert_owner[ev["alert_id"]] = entry
        _per_area(video_by_day, _day(ev["ts"], tz), ev["_chain"])

    # ---- locations
    patrolled: dict[str, set[str]] = {}
    positions: dict[str, tuple[int, str]] = {}
    slots = set()
    for _, _, ev in valid["locations"]:
        grid = ev["_chain"][0]
        patrolled.setdefault(_day(ev["ts"], tz), set()).add(grid)
        w = ev["worker_id"]
        if w not in positions or ev["ts"] > positions[w][0]:
            positions[w] = (ev["ts"], grid)
        slots.add((w, ev["ts"] // (track_every_s * 1000)))

    by_reason: dict[str, int] = {}
    for reasons in dead.values():
        if len(reasons) == 1:
            (r,) = reasons
            by_reason[r] = by_reason.get(r, 0) + 1
    return Expected(
        dead=dead,
        incidents=incidents,
        reports_by_day=reports_by_day,
        closed_by_day=closed_by_day,
        open_by_area=open_by_area,
        video_by_day=video_by_day,
        patrolled=patrolled,
        positions=positions,
        accepted_reports=accepted_entries,
        alert_owner=alert_owner,
        n_track_slots=len(slots),
        dead_by_reason=by_reason,
    )
