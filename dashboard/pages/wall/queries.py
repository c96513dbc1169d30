"""The wall's tour and takeover, decided by pure functions (no Flask, no Redis).

A wall shows *stops* in turn: the panorama view at the wall's area, at each of its
districts (or streets of a district wall), then at the area of each open red warning,
and the other configured views (warnings, grid work, assessment) at the wall's area.
An unacknowledged red warning inside the wall's area takes the screen over: the tour
holds its place, the panorama focuses the warning's area, and when the warning is
acknowledged (or closed) the tour resumes at the stop it was showing.

The live warning items are what ``pipelines.warnings.live_item`` publishes; the wall uses
only their level, status, rule, area and times (the red banner's content), never evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dashboard.pages.panorama.queries import METRICS, tour_areas
from pipelines.access import accounts, policy
from pipelines.city.geography import City

VIEWS = ("panorama", "warnings", "work", "assessment")
TAKEOVER_LEVEL = "red"
TAKEOVER_STATUS = "new"  # unacknowledged; acknowledging (or dispatching) ends the takeover
MIN_DWELL_S = 2.0  # a shorter dwell (a typo, ?tour=0.1) would make the wall flicker


@dataclass(frozen=True)
class Plan:
    """What a wall tours: its area, the views in turn and their dwell times."""

    home: str
    views: tuple[str, ...]  # empty: no tour (the panorama of ``home`` stays)
    area_dwell_s: float
    page_dwell_s: float
    metric: str = "open"  # the map's colouring on the tour (a takeover shows warning levels)

    def to_json(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "views": list(self.views),
            "area_s": self.area_dwell_s,
            "page_s": self.page_dwell_s,
            "metric": self.metric,
        }

    @classmethod
    def of_json(cls, data: object, home: str) -> Plan:
        """From the page's store (untrusted): unknown views dropped, dwells clamped; the
        area is the one the caller checked, never the store's."""
        got = data if isinstance(data, Mapping) else {}
        views = parse_views(got.get("views") or ())
        metric = got.get("metric")
        return cls(
            home,
            views,
            _dwell(got.get("area_s"), 12.0),
            _dwell(got.get("page_s"), 20.0),
            metric if metric in METRICS else "open",
        )


def _dwell(value: object, default: float) -> float:
    try:
        got = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return max(MIN_DWELL_S, got) if got == got else default  # NaN → default


def parse_views(value: object) -> tuple[str, ...]:
    """Known views in the given order, each once ("panorama,work" or a list)."""
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, Iterable):
        return ()
    out: list[str] = []
    for p in parts:
        name = p.strip() if isinstance(p, str) else ""
        if name in VIEWS and name not in out:
            out.append(name)
    return tuple(out)


def plan_of(
    home: str,
    tour_setting: str,
    area_dwell_s: float,
    page_dwell_s: float,
    url_tour: str | None,
    metric: str = "open",
) -> Plan:
    """The wall's plan from ``[wall]`` and the URL: ``?tour=0`` stops the tour,
    ``?tour=SECONDS`` sets the area dwell (anything else: the settings)."""
    views = parse_views(tour_setting)
    area_s = _dwell(area_dwell_s, 12.0)
    if url_tour is not None:
        try:
            asked = float(url_tour)
        except ValueError:
            asked = None
        if asked is not None and asked == asked:
            if asked <= 0:
                views = ()
            else:
                area_s = max(MIN_DWELL_S, asked)
                views = views or ("panorama",)
    return Plan(home, views, area_s, _dwell(page_dwell_s, 20.0), metric)


@dataclass(frozen=True)
class Stop:
    view: str
    area: str

    @property
    def key(self) -> str:
        return f"{self.view}:{self.area}"


def _inside(city: City, home: str, area_id: object) -> bool:
    return (
        isinstance(area_id, str)
        and city.area(area_id) is not None
        and accounts.scope_allows(home, area_id, city)
    )


def red_areas(items: Iterable[Mapping[str, Any]], city: City, home: str) -> list[str]:
    """Areas of the open red warnings inside ``home``, most recently active first, once each."""
    reds = [w for w in items if w.get("level") == "red" and _inside(city, home, w.get("area_id"))]
    reds.sort(key=lambda w: (-int(w.get("last_ms") or 0), str(w.get("id"))))
    return list(dict.fromkeys(str(w["area_id"]) for w in reds))


def stops_of(city: City, plan: Plan, reds: Sequence[str] = ()) -> list[Stop]:
    """The tour's stops: per view in order; the panorama expands to the wall's area, its
    districts (or streets; never grids), then the red-warning areas not visited already."""
    out: list[Stop] = []
    for view in plan.views:
        if view != "panorama":
            out.append(Stop(view, plan.home))
            continue
        areas = tour_areas(city, plan.home)
        areas += [a for a in reds if a not in areas and _inside(city, plan.home, a)]
        out += [Stop("panorama", a) for a in areas]
    return out or [Stop("panorama", plan.home)]


def dwell_s(stop: Stop, plan: Plan) -> float:
    return plan.area_dwell_s if stop.view == "panorama" else plan.page_dwell_s


def take_key(warning_id: str) -> str:
    """What the browser holds of the warning on screen: a digest, not its id."""
    return hashlib.sha256(warning_id.encode()).hexdigest()[:16]


def takeover(items: Iterable[Mapping[str, Any]], city: City, home: str) -> dict[str, Any] | None:
    """The red warning that holds the screen: unacknowledged (``new``), inside ``home``;
    the newest first seen (a new red supersedes an older one). None: the tour runs.
    ``waiting`` counts the other unacknowledged red warnings behind it."""
    pending = [
        w
        for w in items
        if w.get("level") == TAKEOVER_LEVEL
        and w.get("status") == TAKEOVER_STATUS
        and _inside(city, home, w.get("area_id"))
    ]
    if not pending:
        return None
    top = max(pending, key=lambda w: (int(w.get("first_ms") or 0), str(w.get("id"))))
    return {
        "id": str(top["id"]),
        "key": take_key(str(top["id"])),
        "area_id": str(top["area_id"]),
        "focus": focus_of(city, home, str(top["area_id"])),
        "rule": str(top.get("rule") or ""),
        "first_ms": int(top.get("first_ms") or 0),
        "escalated_to": top.get("escalated_to"),
        "waiting": len(pending) - 1,
    }


def focus_of(city: City, home: str, area_id: str) -> str:
    """Where the map looks for a warning: the warning's parent area, so the warning's own
    area is one of the coloured shapes in its surroundings, when the parent is inside the
    wall; else the area itself."""
    chain = city.ancestors(area_id)  # the area, its parent, …, the city
    parent = chain[1] if len(chain) > 1 else area_id
    return parent if _inside(city, home, parent) else area_id


def step(
    stops: Sequence[Stop],
    state: object,
    take: Mapping[str, Any] | None,
    advance: bool,
) -> tuple[Stop, dict[str, Any]]:
    """The stop to show and the tour's next state.

    ``state`` is the previous result's (``{"i", "key", "take"}``; anything odd: the start).
    The stop list may have changed since (red warnings come and go): the tour finds its
    stop by key, else shows the stop now at its position. A takeover shows the warning's
    area and holds the position; when it ends the tour shows the stop it held, and only
    the next dwell moves on. ``advance`` (the dwell ran out) moves to the next stop."""
    if not stops:
        raise ValueError("a tour has at least one stop")
    got = state if isinstance(state, Mapping) else {}
    keys = [s.key for s in stops]
    i = got.get("i")
    i = i if isinstance(i, int) and not isinstance(i, bool) and i >= 0 else 0
    found = got.get("key") in keys
    if found:
        i = keys.index(got["key"])
    i %= len(stops)  # its stop is gone (a red warning closed): the one now in its place
    if take is not None:
        return Stop("panorama", str(take.get("focus") or take["area_id"])), {
            "i": i,
            "key": keys[i],
            "take": take["key"],
        }
    if advance and found and not got.get("take"):
        i = (i + 1) % len(stops)
    return stops[i], {"i": i, "key": keys[i], "take": None}


def may_acknowledge(role: str, kiosk: bool, scope: str, area_id: str, city: City) -> bool:
    """May this principal acknowledge a warning of ``area_id`` on the wall? A person whose
    role may act on warnings, inside their scope; a kiosk (wall token) never."""
    return (
        not kiosk
        and role != "wall"
        and policy.may(role, "warning_actions")
        and _inside(city, scope, area_id)
    )


TITLE_FITS = 21  # characters of "<area> · <app title>" that fit the head at the full size


def title_class(lang: str, area_name: str, app_title: str) -> str:
    """The wall title's classes: its language, and a smaller size when the area's name
    (a grid's, on a red-warning stop) would push the title into the clock or the status."""
    n = len(area_name) + 3 + len(app_title)
    size = "" if n <= TITLE_FITS else " wall-title-long" if n <= 27 else " wall-title-longer"
    return f"wall-title wall-title-{lang}{size}" if lang != "en" else "wall-title wall-title-en"


def root_class(view: str, taken: bool) -> str:
    """The wall root's classes: which view shows, and the takeover frame."""
    view = view if view in VIEWS else "panorama"
    return f"wall wall-v-{view}" + (" wall-takeover" if taken else "")


def since_text(first_ms: int, now_ms: int) -> tuple[int, int]:
    """(hours, minutes) a warning has been open (never negative)."""
    minutes = max(0, (now_ms - first_ms) // 60_000)
    return int(minutes // 60), int(minutes % 60)
