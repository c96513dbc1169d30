"""The early-warning page's pure logic: scope, filters, order, counts, cue, markers."""

from __future__ import annotations

import pytest

from dashboard.pages.warnings import queries as WL
from pipelines.city.geography import City, demo_city

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)

NOW = 1_772_416_800_000


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def item(wid: str, area: str, level: str = "yellow", **kw: object) -> dict[str, object]:
    base = {"id": wid, "rule": "threshold", "area_id": area, "level": level, "status": "new"}
    return base | {"first_ms": NOW - 60_000, "last_ms": NOW - 60_000} | kw


def test_scope_filters_and_order(city: City) -> None:
    xuanwu = city.children("320102")
    other = city.children("320104")[0]
    items = [
        item("a", xuanwu[0], "yellow", last_ms=NOW),
        item("b", xuanwu[1], "red", rule="surge"),
        item("c", other, "red"),
        item("d", xuanwu[0], "yellow", status="dispatched", first_ms=NOW - 7_200_000),
        item("e", "nowhere", "red"),
    ]
    mine = WL.in_scope(items, city, "320102")
    assert [w["id"] for w in mine] == ["a", "b", "d"]
    assert [w["id"] for w in WL.in_scope(items, city, city.city_id)] == ["a", "b", "c", "d"]
    assert WL.in_scope(items, city, xuanwu[1]) == [items[1]]
    none = WL.Filters.of(None, None, None, None, None, NOW)
    assert [w["id"] for w in WL.apply(mine, none, city)] == ["b", "a", "d"]  # red first
    f = WL.Filters.of(["yellow", "bogus"], ["new"], None, xuanwu[0], 1, NOW)
    assert f.levels == ("yellow",)
    assert [w["id"] for w in WL.apply(mine, f, city)] == ["a"]  # d: dispatched, older
    assert [
        w["id"] for w in WL.apply(mine, WL.Filters.of(None, None, ["surge"], None, None, NOW), city)
    ] == ["b"]
    assert WL.level_counts(mine) == {"blue": 0, "yellow": 2, "orange": 0, "red": 1}


def test_cue_only_for_new_orange_and_red(city: City) -> None:
    s = city.children("320102")[0]
    items = [item("a", s, "red"), item("b", s, "orange"), item("c", s, "yellow")]
    assert WL.new_alarms(items, []) == ["a", "b"]
    assert WL.new_alarms(items, ["a"]) == ["b"]
    assert WL.new_alarms(items, ["a", "b", "c"]) == []


def test_markers_and_actions(city: City) -> None:
    s = city.children("320102")[0]
    fc = WL.markers([item("a", s, "red"), item("x", "nowhere")], city)
    (f,) = fc["features"]
    assert f["properties"]["id"] == "a" and f["properties"]["c"] == WL.LEVEL_COLORS["red"]
    assert WL.allowed_actions("district_commander", True, "new") == [
        "acknowledge",
        "dispatch",
        "dismiss",
    ]
    assert WL.allowed_actions("district_commander", True, "dispatched") == [
        "dispatch",
        "resolve",
        "dismiss",
    ]
    assert WL.allowed_actions("city_leader", False, "new") == []
    assert WL.allowed_actions("wall", True, "new") == []
    opts = WL.area_options(city, "320102")
    assert opts[0][0] == "320102" and all(a.startswith("320102") for a, _ in opts)


def test_headline_is_the_latest_red_inside_the_area(city: City) -> None:
    a, b = city.children("320102")[:2]
    other = city.children("320104")[0]
    items = [
        item("old", a, "red", last_ms=NOW - 5),
        item("new", b, "red", last_ms=NOW),
        item("far", other, "red", last_ms=NOW + 9),
        item("orange", a, "orange", last_ms=NOW + 9),
    ]
    top = WL.headline(items, city, "320102")
    assert top is not None and top["id"] == "new"
    assert WL.headline(items, city, a)["id"] == "old"  # type: ignore[index]
    assert WL.headline(items, city, city.children("320105")[0]) is None
