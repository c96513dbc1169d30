"""Pure dashboard queries: snapshot shaping, scales, drill-down, catalog."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard import i18n
from dashboard.live import drill_target
from dashboard.pages.panorama import queries as q
from pipelines.city.geography import City, demo_city

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=150)


def raw_for(n: int, **over: list[int]) -> dict[str, Any]:
    base: dict[str, Any] = {m: [0] * n for m in (*q.ADDITIVE, "warn_level")}
    base.update(over)
    base["breakdowns"] = {
        "open_cat": {"fire": 2, "dispute": 1},
        "reports_cat": {},
        "closed_level": {"grid": 3, "community": 1},
        "video_label": {},
        "warn_count": {"red": 1},
    }
    base["hourly_reports"] = [1] * 24
    base["hourly_video"] = [0] * 24
    base["ticker"] = []
    base["meta"] = {"last_reports_ms": "1000", "tick_ms": "999999"}
    return base


def test_catalog_has_both_languages() -> None:
    for key, (zh, en) in i18n.CATALOG.items():
        assert zh and en, key
    assert i18n.t("nav.panorama") == "全景网格"
    assert i18n.t("nav.panorama", "en") == "Panorama"
    assert i18n.t("fresh.updated", "en", s=3) == "updated 3 s ago"
    assert i18n.normalize("en-US") == "en" and i18n.normalize("zh") == "zh-CN"
    assert i18n.normalize("fr", "zh-CN") == "zh-CN"


def test_every_vocabulary_word_is_translated() -> None:
    from pipelines.spine.events import CATEGORIES, STEPS, VIDEO_LABELS

    keys = [f"cat.{c}" for c in CATEGORIES] + [f"step.{s}" for s in STEPS]
    keys += [f"label.{v}" for v in VIDEO_LABELS] + [f"metric.{m}" for m in q.METRICS]
    assert [k for k in keys if k not in i18n.CATALOG] == []


def test_view_of_city_district_unknown(city: City) -> None:
    v = q.view_of(city, None)
    assert v is not None and v.level == "city" and len(v.children) == 11
    d = q.view_of(city, v.children[0])
    assert d is not None and d.child_level == "street"
    assert [c[2] for c in d.crumbs] == ["city", "district"]
    grid = city.grids["grid_id"][0]
    g = q.view_of(city, grid)
    assert g is not None and g.children == () and [c[2] for c in g.crumbs][-1] == "grid"
    assert q.view_of(city, "no-such-area") is None
    assert q.view_of(city, "../../etc") is None


def test_snapshot_kpis_children_and_hotspots(city: City) -> None:
    v = q.view_of(city, None)
    assert v is not None
    n = 1 + len(v.children)
    opens = [10] + [i % 3 for i in range(n - 1)]
    cover = [5] + [1] * (n - 1)
    raw = raw_for(n, open=opens, coverage=cover, closed=[4] + [0] * (n - 1))
    grids = {a: 10 for a in [v.area_id, *v.children]}
    snap = q.build_snapshot(
        v, raw, now_ms=2000, hours=list(range(24)), grid_counts=grids, on_duty={v.area_id: 42}
    )
    k = snap["kpi"]
    assert k["open"] == 10 and k["on_duty"] == 42 and k["grid_share"] == 0.75
    assert k["coverage"] == 0.5 and k["warnings"]["red"] == 1
    assert snap["children"]["open"] == [float(x) for x in opens[1:]]
    assert snap["children"]["coverage"] == [0.1] * (n - 1)
    hot = snap["hotspots"]["open"]
    assert [h["value"] for h in hot] == sorted([h["value"] for h in hot], reverse=True)
    assert all(h["value"] > 0 for h in hot) and len(hot) <= 5
    assert snap["data_ms"] == 1000  # freshness from pipeline writes, not the clock job


def test_grid_share_is_none_without_closures(city: City) -> None:
    v = q.view_of(city, None)
    assert v is not None
    raw = raw_for(1 + len(v.children))
    snap = q.build_snapshot(v, raw, now_ms=1, hours=[0], grid_counts={}, on_duty={})
    assert snap["kpi"]["grid_share"] is None and snap["kpi"]["coverage"] is None


@pytest.mark.parametrize(
    "metric, values, expected",
    [
        ("open", [0, 3, 7], [0, 2, 4, 6, 8, 10]),
        ("open", [0, 0], [0, 1, 2, 3, 4, 5]),
        ("reports", [120], [0, 50, 100, 150, 200, 250]),
        ("coverage", [0.3], [0.2, 0.4, 0.6, 0.8, 0.95, 1.0]),
        ("warning", [4], [0, 1, 2, 3, 4]),
    ],
)
def test_breaks(metric: str, values: list[float], expected: list[float]) -> None:
    assert q.breaks_for(metric, values) == expected
    h = q.hideout(metric, values)
    assert len(h["colors"]) >= len(h["breaks"]) and h["values"] == values


def test_drill_target(city: City) -> None:
    d = city.children(city.city_id)[0]
    assert drill_target(city, city.city_id, {"properties": {"id": d}}) == d
    assert drill_target(city, d, {"properties": {"id": d}}) is None
    assert drill_target(city, d, {"properties": {"id": "nope"}}) is None
    assert drill_target(city, d, None) is None


def test_time_helpers() -> None:
    hours = q.hours_back(10 * 3_600_000 + 5, 24)
    assert len(hours) == 24 and hours[-1] == 10
    assert q.hour_labels([0], "Asia/Shanghai") == ["08:00"]
    assert q.clock_text(0, "Asia/Shanghai") == ("08:00:00", "1970-01-01", 3)
    assert q.freshness(10_000, 0) is None and q.freshness(10_000, 7_000) == 3
    assert q.local_day(16 * 3_600_000, "Asia/Shanghai") == "19700102"


def test_wall_tour_and_font(city: City) -> None:
    tour = q.tour_areas(city, city.city_id)
    assert tour[0] == city.city_id and len(tour) == 12
    assert q.next_in_tour(tour, tour[-1]) == city.city_id
    assert q.next_in_tour(tour, "gone") == tour[0]
    street = city.ids("street")[0]
    assert q.tour_areas(city, street) == [street]  # never tours single grids
    assert (q.font_px(1080), q.font_px(2160), q.font_px(None)) == (18, 36, 18)


def test_map_uses_gcj02_only_for_gcj02_tiles() -> None:
    from dashboard.components.panels import leaflet_map

    plain = leaflet_map("m", "g", "/geo/area/x.json", (118.8, 32.0), 9, "", False)
    gcj = leaflet_map(
        "m",
        "g",
        "/geo/area/x.json",
        (118.8, 32.0),
        9,
        "/tiles/{z}/{x}/{y}.png",
        True,
        markers_id="k",
    )
    layers = {c.id: c for c in gcj.children if getattr(c, "id", None)}
    assert layers["g"].coordsToLatLng == {"variable": "wangge.map.gcj02"}
    assert layers["k"].coordsToLatLng == {"variable": "wangge.map.gcj02"}
    plain_geo = next(c for c in plain.children if getattr(c, "id", None) == "g")
    assert getattr(plain_geo, "coordsToLatLng", None) is None  # WGS-84 tiles: no shift
    assert any(type(c).__name__ == "TileLayer" for c in gcj.children)
    assert not any(type(c).__name__ == "TileLayer" for c in plain.children)


def test_breadcrumbs_above_the_scope_are_not_links(city: City) -> None:
    from dash import dcc

    from dashboard.components.panels import breadcrumbs

    street = city.children("320102")[0]
    view = q.view_of(city, street)
    assert view is not None
    every = breadcrumbs(view, "zh-CN")
    assert sum(isinstance(c, dcc.Link) for c in every) == 2  # city and district
    mine = breadcrumbs(view, "zh-CN", linkable=lambda a: a != city.city_id)
    links = [c for c in mine if isinstance(c, dcc.Link)]
    assert [c.href for c in links] == ["/area/320102"]


def test_worker_marker_of_a_mock_location_is_marked() -> None:
    """A phone reporting a mock (simulated) fix shows as such to the commander."""
    import polars as pl

    from dashboard.pages.work.queries import MOCK_GPS, worker_features

    live = pl.DataFrame(
        {
            "worker_id": ["W1", "W2"],
            "lon": [118.0, 118.1],
            "lat": [32.0, 32.1],
            "type": ["full_time", "full_time"],
            "name": ["王伟", "李娜"],
            "online": [True, True],
            "mock": [True, None],
        }
    )
    names = [f["properties"]["n"] for f in worker_features(live)]
    assert names == [f"王伟 ⚠ {MOCK_GPS}", "李娜"]
    assert "模拟定位" in MOCK_GPS and "mock GPS" in MOCK_GPS
    assert [f["properties"]["n"] for f in worker_features(live.drop("mock"))] == ["王伟", "李娜"]


def _ms(text: str, tz: str) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        # just after local midnight: the event before it is yesterday's, and says so
        ("Asia/Shanghai", ["00:10:05", "12-07 23:59", "12-01 08:00"]),
        # the same instants in UTC: all but the week-old one are of today (2026-12-07)
        ("UTC", ["16:10:05", "15:59:30", "12-01 00:00"]),
    ],
)
def test_ticker_shows_the_date_of_an_event_of_another_day(
    city: City, tz: str, expected: list[str]
) -> None:
    sh = "Asia/Shanghai"
    now = _ms("2026-12-08T00:30:00", sh)
    items = [
        {"ts": _ms("2026-12-08T00:10:05", sh), "k": "report", "grid": city.grids["grid_id"][0]},
        {"ts": _ms("2026-12-07T23:59:30", sh), "k": "report", "grid": "nope"},
        {"ts": _ms("2026-12-01T08:00:00", sh), "k": "video"},  # a backfill's week-old event
    ]
    rows = q.ticker_rows(items, tz, city, now)
    assert [r["time"] for r in rows] == expected
    assert rows[0]["place"] and rows[1]["place"] == ""
