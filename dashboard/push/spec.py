"""What a push stream is, from the page's query (pure): the shared response's value key
as the page's refresh callback makes it, and the Dash request that builds it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dashboard import ids
from dashboard.auth import Decision, clean_id
from dashboard.i18n import normalize
from dashboard.pages.panorama.queries import METRICS, font_px

KIND = "aggregates"  # the kind of data every pushed page's refresh needs


@dataclass(frozen=True)
class Query:
    """A stream's request: the page and the values its refresh callback depends on."""

    page: str  # a key of ``PAGES``
    area: str
    metric: str
    grids: bool  # the panorama's "all grids" mode
    lang: str
    vh: int  # the wall's window height (its font size)

    @classmethod
    def parse(cls, page: str, q: Mapping[str, str]) -> Query | None:
        """None for an unknown page or an id no lookup may use."""
        area = clean_id(q.get("area"))
        if page not in PAGES or area is None:
            return None
        metric = q.get("metric", "open")
        try:
            vh = int(float(q.get("vh", "1080")))
        except ValueError:
            vh = 1080
        return cls(
            page=page,
            area=area,
            metric=metric if metric in METRICS else "open",
            grids=q.get("grids", "") in ("1", "true", "all"),
            lang=normalize(q.get("lang")),
            vh=vh if 0 < vh < 100_000 else 1080,
        )

    @property
    def stream(self) -> Stream:
        return PAGES[self.page]

    def parts(self) -> tuple[object, ...]:
        """The value key's parts after area and data class, as the page's refresh callback
        passes them."""
        return self.stream.parts(self)

    def key(self, grant: Decision) -> str:
        """``Backend.cache_key`` of the shared response, for a granted decision."""
        if not grant.granted:
            raise PermissionError("no stream key without a granted decision")
        return ":".join([self.page, grant.area_id, grant.data_class, *map(str, self.parts())])

    def values(self) -> dict[tuple[str, str], Any]:
        """The refresh callback's input and state values, by (component id, property)."""
        return {(self.stream.tick, "n_intervals"): 0, **self.stream.values(self)}


@dataclass(frozen=True)
class Stream:
    """One pushed page: everything the push server and the browser need to know of it."""

    page: str  # the dashboard page (its policy name and its ``wangge_push`` function)
    geo: str  # the refresh callback's first output (its map layer), which finds it
    tick: str  # the interval that drives the refresh (paused while the stream is healthy)
    # the value key's parts after area and data class, as the refresh callback makes them
    parts: Callable[[Query], tuple[object, ...]]
    # the refresh callback's other inputs and states for this query
    values: Callable[[Query], dict[tuple[str, str], Any]]

    @property
    def first_output(self) -> str:
        return f"..{self.geo}.hideout..."


# stream name → its page (``dashboard/pages/{panorama,wall,work}/callbacks.py``)
PAGES: dict[str, Stream] = {
    "pan": Stream(
        "panorama",
        ids.P_GEO,
        ids.P_TICK,
        lambda q: (q.metric, q.grids, q.lang),
        lambda q: {
            (ids.P_METRIC, "value"): q.metric,
            (ids.P_ALLGRIDS, "value"): ["all"] if q.grids else [],
            (ids.P_AREA, "data"): q.area,
            (ids.LANG, "data"): q.lang,
        },
    ),
    "wall": Stream(
        "wall",
        ids.W_GEO,
        ids.W_TICK,
        lambda q: (q.metric, q.lang, font_px(q.vh)),
        lambda q: {
            (ids.W_AREA, "data"): {"area": q.area, "metric": q.metric},
            (ids.W_VH, "data"): q.vh,
            (ids.LANG, "data"): q.lang,
        },
    ),
    "work": Stream(  # (what the viewer already has: nothing, so the whole answer)
        "work",
        ids.WK_GEO,
        ids.WK_TICK,
        lambda q: (q.lang,),
        lambda q: {(ids.WK_AREA, "data"): q.area, (ids.LANG, "data"): q.lang},
    ),
}


def refresh_callback(page: str, dependencies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The page's refresh callback in Dash's ``/_dash-dependencies`` answer."""
    first = PAGES[page].first_output
    return next((d for d in dependencies if str(d.get("output", "")).startswith(first)), None)


def request_body(query: Query, callback: dict[str, Any]) -> dict[str, Any]:
    """The JSON dash-renderer POSTs for this refresh (unknown inputs are None)."""
    values = query.values()

    def filled(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**s, "value": values.get((s["id"], s["property"]))} for s in specs]

    output = str(callback["output"])
    outs = [
        {"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
        for o in output[2:-2].split("...")
    ]
    tick = query.stream.tick
    return {
        "output": output,
        "outputs": outs,
        "inputs": filled(callback.get("inputs", [])),
        "state": filled(callback.get("state", [])),
        "changedPropIds": [f"{tick}.n_intervals"],
    }


def tick_of(now_s: float, refresh_s: float) -> int:
    """The refresh tick at ``now_s`` (``Backend.tick``)."""
    return int(now_s // refresh_s)


def until_next(now_s: float, refresh_s: float) -> float:
    """Seconds to the next tick boundary."""
    return (math.floor(now_s / refresh_s) + 1) * refresh_s - now_s
