"""The dark hole north of the demo city's centre is named water (长江), drawn on the maps."""

from __future__ import annotations

import polars as pl
import pytest
import shapely

from dashboard.components.panels import leaflet_map
from pipelines.city.geography import City, demo_city
from pipelines.city.water import demo_water, gaps, water_geojson


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=400)


def test_the_only_enclosed_gap_is_named_water_north_of_the_centre(city: City) -> None:
    big = [g for g in gaps(city) if g.area > 1e-3]  # ignore slivers along the outline
    assert len(big) == 1
    (river,) = demo_water(city)
    assert (river.zh, river.en) == ("长江", "Yangtze River")
    assert river.geometry.symmetric_difference(big[0]).area < 0.05 * big[0].area
    centre = city.area(city.city_id)
    assert centre is not None and river.label[1] > centre["lat"]  # north of the centre
    assert river.geometry.buffer(1e-9).contains(shapely.Point(*river.label))
    # water, not land: no district covers it
    rows = city.areas.with_row_index("i").filter(pl.col("level") == "district")["i"]
    land = shapely.union_all([city.geoms[i] for i in rows])
    assert river.geometry.intersection(land).area < 0.02 * river.geometry.area


@pytest.mark.parametrize("lang,name", [("zh-CN", "长江"), ("en", "Yangtze River")])
def test_the_map_draws_and_names_it(city: City, lang: str, name: str) -> None:
    fc = water_geojson(demo_water(city), lang)
    m = leaflet_map("m", "g", "/geo/area/x.json", (118.8, 32.0), 9, "", False, water=fc)
    layers = m.children
    shapes = [x for x in layers if type(x).__name__ == "Polygon"]
    labels = [x for x in layers if type(x).__name__ == "DivMarker"]
    assert len(shapes) == 1 and shapes[0].interactive is False
    assert [x.iconOptions["html"] for x in labels] == [name]
    ring = shapes[0].positions[0]
    assert all(31 < lat < 33 and 118 < lon < 120 for lat, lon in ring)  # [lat, lon]
    # with map tiles the real water shows: nothing drawn on top
    tiled = leaflet_map(
        "m", "g", "/x.json", (118.8, 32.0), 9, "/tiles/{z}/{x}/{y}.png", False, water=fc
    )
    assert not [x for x in tiled.children if type(x).__name__ in ("Polygon", "DivMarker")]
