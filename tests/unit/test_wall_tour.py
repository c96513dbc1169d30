"""The wall's tour and red-warning takeover, from the rules (dashboard/pages/wall/queries.py).

Rules: the panorama visits the wall's area, its districts (a district wall: its streets;
never grids), then the areas of open red warnings inside the wall not visited already;
the other views follow in the configured order at the wall's area; each stop stays its
dwell. An unacknowledged (``new``) red warning inside the wall takes the screen over
(the newest first seen), the tour holds its stop and shows it again when the takeover
ends. ``?tour=0`` stops the tour; ``?tour=N`` sets the area dwell."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.pages.wall import queries as Q
from pipelines.city.geography import City, demo_city


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=150)


def warning(
    wid: str,
    area: str,
    level: str = "red",
    status: str = "new",
    first: int = 0,
    last: int | None = None,
) -> dict[str, Any]:
    return {
        "id": wid,
        "area_id": area,
        "level": level,
        "status": status,
        "rule": "surge",
        "first_ms": first,
        "last_ms": first if last is None else last,
    }


def plan(
    city: City, home: str | None = None, views: str = "panorama,warnings,work,assessment"
) -> Q.Plan:
    return Q.plan_of(home or city.city_id, views, 10.0, 20.0, None)


def test_stops_city_wall(city: City) -> None:
    p = plan(city)
    districts = city.children(city.city_id)
    stops = Q.stops_of(city, p)
    expected = [Q.Stop("panorama", a) for a in [city.city_id, *districts]]
    expected += [Q.Stop(v, city.city_id) for v in ("warnings", "work", "assessment")]
    assert stops == expected


def test_district_wall_tours_its_streets_and_red_areas_inside_only(city: City) -> None:
    d1, d2 = city.children(city.city_id)[:2]
    streets = city.children(d1)
    grid_in = city.children(streets[0])[0]
    grid_out = city.children(city.children(d2)[0])[0]
    p = plan(city, d1, "panorama,work")
    reds = Q.red_areas(
        [
            warning("a", grid_in, last=5),
            warning("b", grid_out, last=9),
            warning("c", streets[0], last=7),
            warning("d", grid_in, level="orange", last=8),
        ],
        city,
        d1,
    )
    assert reds == [streets[0], grid_in]  # newest activity first; d2's grid and orange left out
    stops = Q.stops_of(city, p, reds)
    areas = [d1, *streets, grid_in]  # the street is a stop already; the grid is added
    assert stops == [*(Q.Stop("panorama", a) for a in areas), Q.Stop("work", d1)]


def test_a_street_wall_never_tours_grids(city: City) -> None:
    street = city.ids("street")[0]
    assert Q.stops_of(city, plan(city, street, "panorama")) == [Q.Stop("panorama", street)]


def test_views_and_url_override(city: City) -> None:
    assert Q.parse_views("work, panorama,work,bogus") == ("work", "panorama")
    home = city.city_id
    assert Q.plan_of(home, "panorama,work", 10, 20, "0").views == ()
    assert Q.plan_of(home, "panorama,work", 10, 20, "30").area_dwell_s == 30
    assert Q.plan_of(home, "", 10, 20, "15").views == ("panorama",)  # ?tour=N turns it on
    assert Q.plan_of(home, "work", 10, 20, "x") == Q.Plan(home, ("work",), 10, 20)
    assert Q.Plan.of_json({"metric": "evil", "views": "work"}, home).metric == "open"
    assert Q.plan_of(home, "work", 10, 20, "0.1").area_dwell_s == Q.MIN_DWELL_S
    no_tour = Q.plan_of(home, "", 10, 20, None)
    assert Q.stops_of(city, no_tour) == [Q.Stop("panorama", home)]
    p = Q.plan_of(home, "panorama,work", 10, 20, None)
    assert Q.Plan.of_json(p.to_json() | {"views": ["work", "evil"]}, home).views == ("work",)
    assert Q.dwell_s(Q.Stop("panorama", home), p) == 10
    assert Q.dwell_s(Q.Stop("work", home), p) == 20


def test_step_advances_and_wraps(city: City) -> None:
    stops = Q.stops_of(city, plan(city))
    first, state = Q.step(stops, None, None, advance=True)  # no state yet: the start
    assert first == stops[0]
    seen = []
    for _ in range(len(stops) + 1):
        stop, state = Q.step(stops, state, None, advance=True)
        seen.append(stop)
    assert seen == [*stops[1:], stops[0], stops[1]]
    same, again = Q.step(stops, state, None, advance=False)  # a refresh tick: no move
    assert same == stops[1] and again == state


def test_step_follows_its_stop_when_the_list_changes(city: City) -> None:
    p = plan(city, views="panorama")
    grid = city.ids("grid")[0]
    before = Q.stops_of(city, p, [grid])
    _, state = Q.step(before, {"i": len(before) - 1, "key": before[-1].key}, None, False)
    after = Q.stops_of(city, p, [])  # the red warning closed: its stop is gone
    stop, _ = Q.step(after, state, None, advance=True)
    assert stop == after[0]  # the position is kept (wrapped), never an error
    moved = [after[-1], *after[:-1]]  # the current stop moved in the list: found by key
    stop, _ = Q.step(moved, {"i": 0, "key": after[2].key}, None, advance=True)
    assert stop == moved[moved.index(after[2]) + 1]


def test_takeover_picks_the_newest_unacknowledged_red_inside(city: City) -> None:
    d1, d2 = city.children(city.city_id)[:2]
    s1 = city.children(d1)[0]
    items = [
        warning("old", s1, first=1_000),
        warning("new", d1, first=5_000),
        warning("acked", s1, status="acknowledged", first=9_000),
        warning("orange", s1, level="orange", first=9_500),
        warning("outside", d2, first=9_900),
    ]
    got = Q.takeover(items, city, d1)
    assert got is not None and got["id"] == "new" and got["area_id"] == d1
    assert got["focus"] == d1  # its parent (the city) is outside a district wall
    assert got["waiting"] == 1 and got["key"] == Q.take_key("new") != "new"
    assert Q.takeover(items, city, d2)["id"] == "outside"  # type: ignore[index]
    older = Q.takeover(items[:1], city, d1)
    assert older is not None and older["focus"] == d1  # a street's warning: its district
    assert Q.takeover(items, city, city.city_id)["focus"] == city.city_id  # type: ignore[index]
    assert Q.takeover([warning("x", s1, status="dispatched")], city, d1) is None
    assert Q.takeover([], city, d1) is None


def test_takeover_holds_the_tour_and_resumes_where_it_was(city: City) -> None:
    stops = Q.stops_of(city, plan(city))
    stop, state = Q.step(stops, {"i": 0, "key": stops[0].key}, None, advance=True)
    stop, state = Q.step(stops, state, None, advance=True)
    assert stop == stops[2]
    grid = city.ids("grid")[3]
    street = city.ancestors(grid)[1]
    take = Q.takeover([warning("w", grid)], city, city.city_id)
    assert take is not None and take["focus"] == street  # the grid among its street's grids
    for advance in (False, True, True):  # dwell ticks during the takeover do not move it
        shown, state = Q.step(stops, state, take, advance)
        assert shown == Q.Stop("panorama", street) and state["take"] == take["key"]
    shown, state = Q.step(stops, state, None, advance=True)  # acknowledged
    assert shown == stops[2] and state["take"] is None  # the stop it held, shown again
    shown, state = Q.step(stops, state, None, advance=True)
    assert shown == stops[3]


def test_root_class_and_duration() -> None:
    assert Q.root_class("work", False) == "wall wall-v-work"
    assert Q.root_class("evil x", True) == "wall wall-v-panorama wall-takeover"
    assert Q.since_text(0, 125 * 60_000 + 59_000) == (2, 5)
    assert Q.since_text(10_000, 0) == (0, 0)


# README "Accounts, scope and audit": acknowledge, dispatch, resolve, dismiss belong to the
# command centres (district_commander, street_operator), inside their scope; a wall is a
# read-only kiosk.
ACTORS = {"district_commander", "street_operator"}


@pytest.mark.parametrize(
    "role", ["city_leader", "district_commander", "street_operator", "supervisor", "admin", "wall"]
)
def test_who_may_acknowledge_on_the_wall(city: City, role: str) -> None:
    d1, d2 = city.children(city.city_id)[:2]
    street = city.children(d1)[0]
    grid = city.children(street)[0]
    scope = {"district_commander": d1, "street_operator": street}.get(role, city.city_id)
    mine = role in ACTORS
    assert Q.may_acknowledge(role, False, scope, grid, city) == mine
    assert Q.may_acknowledge(role, False, scope, city.children(d2)[0], city) is False
    assert Q.may_acknowledge(role, True, scope, grid, city) is False  # a kiosk: never


def test_title_size_follows_the_name_length() -> None:
    app = "网格化社会治理态势感知平台"  # 13 characters; the head fits 21 at the full size
    assert Q.title_class("zh-CN", "玄武门街道", app) == "wall-title wall-title-zh-CN"
    long = "玄武门街道第1网格"  # 9 + 3 + 13 = 25
    assert Q.title_class("zh-CN", long, app).endswith(" wall-title-long")
    assert Q.title_class("zh-CN", long + "东侧片区", app).endswith(" wall-title-longer")
    assert Q.title_class("en", long, "Grid Governance") == "wall-title wall-title-en"
