"""Unit tests of pipelines.city.geography: demo city, point → grid index, cache, GeoJSON
in and out."""

from __future__ import annotations

import gzip
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
import shapely
from shapely.geometry import box, mapping

from pipelines.city import boundaries, generator
from pipelines.city import geography as geo
from pipelines.settings import GeoSettings

N_GRIDS = 12545
DISTRICTS = {
    "320102": ("玄武区", 118.843, 32.065, 75),
    "320104": ("秦淮区", 118.817, 32.012, 49),
    "320105": ("建邺区", 118.710, 32.009, 79),
    "320106": ("鼓楼区", 118.761, 32.082, 55),
    "320111": ("浦口区", 118.563, 32.053, 911),
    "320113": ("栖霞区", 118.959, 32.159, 392),
    "320114": ("雨花台区", 118.694, 31.938, 131),
    "320115": ("江宁区", 118.831, 31.854, 1570),
    "320116": ("六合区", 118.842, 32.394, 1482),
    "320117": ("溧水区", 119.033, 31.591, 1069),
    "320118": ("高淳区", 118.968, 31.331, 795),
}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("geo-cache")


@pytest.fixture(scope="module")
def settings(cache_dir: Path) -> GeoSettings:
    return GeoSettings(cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def generated(settings: GeoSettings) -> tuple[geo.City, float]:
    """The demo city, generated once (cold cache) and the time it took."""
    t0 = time.perf_counter()
    city = geo.load_city(settings)
    return city, time.perf_counter() - t0


@pytest.fixture(scope="module")
def city(generated: tuple[geo.City, float]) -> geo.City:
    return generated[0]


@pytest.fixture(scope="module")
def index(city: geo.City) -> geo.GridIndex:
    return geo.GridIndex(city)


def _gj(geom: Any) -> dict[str, Any]:
    """GeoJSON geometry with lists (not tuples), as a parsed file would have."""
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(mapping(geom)))
    return parsed


def level(city: geo.City, name: str) -> pl.DataFrame:
    return city.areas.filter(pl.col("level") == name)


def geoms_of(city: geo.City, name: str) -> np.ndarray:
    return city.geoms[(city.areas["level"] == name).to_numpy()]


# ------------------------------------------------------------------ demo city: structure


def test_demo_city_has_the_nanjing_hierarchy(city: geo.City) -> None:
    counts = dict(city.areas.group_by("level").len().iter_rows())
    assert counts["city"] == 1
    assert counts["district"] == 11
    assert 90 <= counts["street"] <= 115
    assert counts["grid"] == N_GRIDS
    assert city.city_id == "320100"
    assert city.area("320100")["name"] == "南京市"
    districts = level(city, "district")
    assert dict(zip(districts["area_id"], districts["name"], strict=True)) == {
        k: v[0] for k, v in DISTRICTS.items()
    }
    assert len(city.geoms) == city.areas.height
    assert city.areas.columns == list(geo.AREA_COLUMNS)


def test_streets_per_district_and_names(city: geo.City) -> None:
    streets = level(city, "street")
    per_district = streets.group_by("parent_id").len()
    assert per_district["len"].min() >= 4
    assert per_district["len"].max() <= 18
    assert streets["name"].str.contains("(街道|镇)$").all()
    assert streets["name"].n_unique() == streets.height
    xuanwu = set(streets.filter(pl.col("district_id") == "320102")["name"])
    assert {"玄武门街道", "新街口街道", "梅园新村街道", "孝陵卫街道"} <= xuanwu


def test_ids_follow_the_scheme(city: geo.City) -> None:
    for row in level(city, "street").iter_rows(named=True):
        assert re.fullmatch(r"\d{6}-\d{3}", row["area_id"])
        assert row["area_id"].startswith(row["parent_id"] + "-")
    for row in level(city, "grid").iter_rows(named=True):
        assert re.fullmatch(r"\d{6}-\d{3}-\d{3}", row["area_id"])
        assert row["area_id"].startswith(row["parent_id"] + "-")
    grid = city.area("320102-001-001")
    assert grid is not None
    street = city.area("320102-001")
    assert street is not None
    assert grid["name"] == f"{street['name']}第1网格"


def test_parent_links_are_consistent(city: geo.City) -> None:
    a = city.areas
    levels = dict(zip(a["area_id"], a["level"], strict=True))
    assert a["area_id"].n_unique() == a.height
    for row in a.iter_rows(named=True):
        assert row["city_id"] == "320100"
        if row["level"] == "city":
            assert row["parent_id"] is None
            assert row["district_id"] is None and row["street_id"] is None
            continue
        parent_level = geo.LEVELS[geo.LEVELS.index(row["level"]) - 1]
        assert levels.get(row["parent_id"]) == parent_level, row
        if row["level"] == "district":
            assert row["district_id"] == row["area_id"] and row["street_id"] is None
        elif row["level"] == "street":
            assert row["street_id"] == row["area_id"]
            assert row["district_id"] == row["parent_id"]
        else:
            assert row["street_id"] == row["parent_id"]
            assert levels[row["street_id"]] == "street"
            assert row["street_id"].startswith(row["district_id"])


def test_rows_are_sorted_by_level_then_id(city: geo.City) -> None:
    keys = [(geo.LEVELS.index(lv), i) for lv, i in city.areas.select("level", "area_id").rows()]
    assert keys == sorted(keys)
    grids = city.grids
    assert grids["grid_id"].to_list() == sorted(grids["grid_id"].to_list())
    assert grids.columns == [
        "grid_id",
        "street_id",
        "district_id",
        "city_id",
        "lon",
        "lat",
        "area_km2",
        "name",
    ]
    assert len(city.grid_geoms) == grids.height
    # grid_geoms[i] is the geometry of grids row i
    for i in (0, 4321, grids.height - 1):
        assert city.grid_geoms[i].equals(city.geometry(grids["grid_id"][i]))


def test_every_area_is_a_valid_polygon_with_an_inside_label_point(city: geo.City) -> None:
    assert shapely.is_valid(city.geoms).all()
    assert not shapely.is_empty(city.geoms).any()
    assert set(shapely.get_type_id(city.grid_geoms).tolist()) == {3}  # Polygon only
    points = shapely.points(city.areas["lon"].to_numpy(), city.areas["lat"].to_numpy())
    assert shapely.intersects(city.geoms, points).all()
    assert (city.areas["area_km2"] > 0).all()


def test_city_extent_is_nanjing_and_organic(city: geo.City) -> None:
    outline = city.geometry("320100")
    xmin, ymin, xmax, ymax = outline.bounds
    assert 118.25 <= xmin <= 118.50 and 119.10 <= xmax <= 119.35
    assert 31.10 <= ymin <= 31.35 and 32.50 <= ymax <= 32.70
    assert 5000 < city.area("320100")["area_km2"] < 8500
    # not a rectangle: the outline fills well under its bounding box
    assert outline.area / box(*outline.bounds).area < 0.75
    assert len(shapely.get_coordinates(outline)) > 50


def test_district_areas_and_centroids_near_targets(city: geo.City) -> None:
    for row in level(city, "district").iter_rows(named=True):
        name, lon, lat, target = DISTRICTS[row["area_id"]]
        assert 0.65 * target <= row["area_km2"] <= 1.35 * target, (name, row["area_km2"])
        centroid = city.geometry(row["area_id"]).centroid
        dx = (centroid.x - lon) * 111.32 * math.cos(math.radians(lat))
        dy = (centroid.y - lat) * 110.57
        assert math.hypot(dx, dy) < 10.0, name


def test_urban_grids_are_much_smaller_than_rural(city: geo.City) -> None:
    medians = dict(city.grids.group_by("district_id").agg(pl.col("area_km2").median()).rows())
    assert medians["320102"] < 0.3 * medians["320115"]  # 玄武区 vs 江宁区
    counts = dict(city.grids.group_by("street_id").len().rows())
    assert min(counts.values()) >= geo.MIN_GRIDS_PER_STREET
    assert sum(counts.values()) == N_GRIDS


# ------------------------------------------------------------------ demo city: tiling


def _assert_children_tile_parents(city: geo.City, child_level: str) -> None:
    children = level(city, child_level)
    child_geoms = geoms_of(city, child_level)
    areas = children["area_km2"].to_numpy()
    parents = children["parent_id"].to_numpy()
    for parent_id in np.unique(parents):
        mine = parents == parent_id
        parent_area = city.area(str(parent_id))["area_km2"]
        assert math.isclose(areas[mine].sum(), parent_area, rel_tol=1e-6), parent_id
        union = shapely.union_all(child_geoms[mine])
        parent = city.geometry(str(parent_id))
        assert shapely.symmetric_difference(union, parent).area <= 1e-6 * parent.area


@pytest.mark.parametrize("child_level", ["district", "street", "grid"])
def test_children_tile_their_parent(city: geo.City, child_level: str) -> None:
    _assert_children_tile_parents(city, child_level)


@pytest.mark.parametrize("name", ["district", "street", "grid"])
def test_areas_of_a_level_do_not_overlap(city: geo.City, name: str) -> None:
    geoms = geoms_of(city, name)
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    overlap = shapely.area(shapely.intersection(geoms[i[keep]], geoms[j[keep]])).sum()
    assert overlap <= 1e-9 * shapely.area(geoms).sum()


# ------------------------------------------------------------------ determinism


def test_same_seed_same_city(city: geo.City) -> None:
    again = geo.demo_city(2026, N_GRIDS)
    assert again.areas.equals(city.areas)
    assert again.geometry_hash() == city.geometry_hash()


def test_different_seed_different_city() -> None:
    a = geo.demo_city(2026, 400)
    b = geo.demo_city(7, 400)
    assert a.grids.height == b.grids.height == 400
    assert a.geometry_hash() != b.geometry_hash()
    assert geo.demo_city(7, 400).geometry_hash() == b.geometry_hash()


def test_too_few_grids_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least the number of streets"):
        geo.demo_city(2026, 50)


def test_allocate_is_exact_largest_remainder() -> None:
    out = generator._allocate([1.0, 1.0, 1.0], 10, 2)
    assert out.sum() == 10 and sorted(out.tolist()) == [3, 3, 4]
    out = generator._allocate([5.0, 1.0], 7, 3)
    assert out.tolist() == [4, 3]
    out = generator._allocate(np.random.default_rng(0).random(97), N_GRIDS, 3)
    assert out.sum() == N_GRIDS and out.min() >= 3


# ------------------------------------------------------------------ City helpers


def test_city_navigation(city: geo.City) -> None:
    assert city.children("320100") == sorted(DISTRICTS)
    streets = city.children("320102")
    assert streets == sorted(streets) and len(streets) == 7
    grid_ids = city.children(streets[0])
    assert grid_ids and all(g.startswith(streets[0] + "-") for g in grid_ids)
    assert city.ancestors(grid_ids[0]) == [grid_ids[0], streets[0], "320102", "320100"]
    assert city.ancestors("320100") == ["320100"]
    assert city.ancestors("nope") == []
    assert city.children(grid_ids[0]) == []
    assert city.children("nope") == []
    assert city.level_of(grid_ids[0]) == "grid"
    assert city.level_of("320102") == "district"
    assert city.level_of("nope") is None
    assert city.area("nope") is None
    assert city.area("320102")["name"] == "玄武区"
    assert city.geometry("320102").geom_type in ("Polygon", "MultiPolygon")
    with pytest.raises(KeyError):
        city.geometry("nope")
    assert city.ids("district") == sorted(DISTRICTS)


# ------------------------------------------------------------------ point → grid


def _brute_force(city: geo.City, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Smallest index of a grid covering each point, by bounding box + shapely.covers."""
    geoms = city.grid_geoms
    bounds = shapely.bounds(geoms)
    out = np.full(len(lon), -1, dtype=np.int32)
    for k, (x, y) in enumerate(zip(lon, lat, strict=True)):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        cand = np.flatnonzero(
            (bounds[:, 0] <= x) & (x <= bounds[:, 2]) & (bounds[:, 1] <= y) & (y <= bounds[:, 3])
        )
        hits = cand[shapely.covers(geoms[cand], shapely.Point(x, y))]
        if hits.size:
            out[k] = hits.min()
    return out


def _shared_edge_midpoints(geoms: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    picks = rng.choice(len(geoms), n, replace=False)
    i, j = shapely.STRtree(geoms).query(geoms[picks], predicate="touches")
    shared = shapely.intersection(shapely.boundary(geoms[picks[i]]), shapely.boundary(geoms[j]))
    coords = []
    for line in shared:
        for part in shapely.get_parts(line):
            c = shapely.get_coordinates(part)
            if len(c) >= 2:
                coords.append((c[0] + c[1]) / 2)
                coords.append(c[0])
    return np.array(coords[:n])


def test_assign_matches_brute_force_including_boundaries(
    city: geo.City, index: geo.GridIndex
) -> None:
    rng = np.random.default_rng(11)
    geoms = city.grid_geoms
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    inside = np.column_stack((rng.uniform(xmin, xmax, 800), rng.uniform(ymin, ymax, 800)))
    picks = rng.choice(len(geoms), 300, replace=False)
    vertices = np.concatenate([shapely.get_coordinates(g)[:2] for g in geoms[picks]])
    urban = city.grids["district_id"].to_numpy() == "320102"
    dense = city.grids.filter(pl.Series(urban)).select("lon", "lat").to_numpy()[:200]
    midpoints = _shared_edge_midpoints(geoms, 400, rng)
    points = np.concatenate((inside, vertices, dense, midpoints))
    assert len(points) >= 1800
    got = index.assign(points[:, 0], points[:, 1])
    want = _brute_force(city, points[:, 0], points[:, 1])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32
    # vertices are shared by several grids: the smallest index wins
    on_vertex = got[len(inside) : len(inside) + len(vertices)]
    assert (on_vertex >= 0).all()
    multi = [
        k
        for k, (x, y) in enumerate(vertices)
        if shapely.intersects(geoms, shapely.Point(x, y)).sum() > 1
    ]
    assert len(multi) > 100


def test_assign_outside_and_nan(city: geo.City, index: geo.GridIndex) -> None:
    lon = np.array([0.0, 121.47, np.nan, 118.80, np.inf, 118.78])
    lat = np.array([0.0, 31.23, 32.0, np.nan, 32.0, 32.04])
    got = index.assign(lon, lat)
    assert got[:5].tolist() == [-1, -1, -1, -1, -1]
    grid_id = city.grids["grid_id"][int(got[5])]
    assert city.geometry(grid_id).covers(shapely.Point(118.78, 32.04))
    assert index.assign(np.array([]), np.array([])).shape == (0,)
    assert index.assign([118.78], [32.04]).tolist() == [got[5]]
    with pytest.raises(ValueError):
        index.assign(np.zeros(2), np.zeros(3))


def test_assign_label_points_land_in_their_own_grid(city: geo.City, index: geo.GridIndex) -> None:
    grids = city.grids
    got = index.assign(grids["lon"].to_numpy(), grids["lat"].to_numpy())
    # a label point can lie on a shared border only by accident; then the tie rule applies
    assert (got == np.arange(grids.height)).mean() > 0.999


# ------------------------------------------------------------------ cache


def test_cache_reload_is_equal_and_fast(
    settings: GeoSettings, city: geo.City, generated: tuple[geo.City, float]
) -> None:
    path = geo.demo_cache_path(settings)
    assert path.exists()
    assert f"seed{settings.seed}" in path.name and f"grids{settings.grids}" in path.name
    assert f"v{geo.CACHE_VERSION}" in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    t0 = time.perf_counter()
    again = geo.load_city(settings)
    geo.GridIndex(again)
    elapsed = time.perf_counter() - t0
    assert again.areas.equals(city.areas)
    assert np.array_equal(shapely.to_wkb(again.geoms), shapely.to_wkb(city.geoms))
    assert elapsed < generated[1]
    assert elapsed < 1.5


def test_relative_cache_dir_resolves_against_root(tmp_path: Path) -> None:
    settings = GeoSettings(cache_dir="var/geo", grids=300)
    city = geo.load_city(settings, root=tmp_path)
    assert geo.demo_cache_path(settings, root=tmp_path).exists()
    assert (tmp_path / "var" / "geo").is_dir()
    assert city.grids.height == 300


def test_stale_cache_is_regenerated(tmp_path: Path) -> None:
    settings = GeoSettings(cache_dir=str(tmp_path), grids=300)
    path = geo.demo_cache_path(settings)
    path.write_bytes(b"not parquet")
    city = geo.load_city(settings)
    assert city.grids.height == 300
    assert geo.load_city(settings).areas.equals(city.areas)


def test_missing_imported_city(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        geo.load_city(GeoSettings(source=str(tmp_path / "nothing")))


# ------------------------------------------------------------------ GeoJSON out


def _max_decimals(fc: dict[str, Any]) -> int:
    coords = np.concatenate(
        [shapely.get_coordinates(shapely.geometry.shape(f["geometry"])) for f in fc["features"]]
    )
    return int(np.max(np.abs(coords * 1e5 - np.round(coords * 1e5))) > 1e-6)


@pytest.mark.parametrize(("name", "count"), [("city", 1), ("district", 11), ("grid", N_GRIDS)])
def test_level_geojson_counts(city: geo.City, name: str, count: int) -> None:
    fc = geo.level_geojson(city, name)
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == count
    feature = fc["features"][0]
    assert feature["type"] == "Feature"
    assert set(feature["properties"]) == {"area_id", "name", "level", "parent_id"}
    assert {f["properties"]["level"] for f in fc["features"]} == {name}
    assert {f["geometry"]["type"] for f in fc["features"]} <= {"Polygon", "MultiPolygon"}
    assert _max_decimals(fc) == 0
    shapes = [shapely.geometry.shape(f["geometry"]) for f in fc["features"]]
    assert all(not s.is_empty for s in shapes)


def test_level_geojson_streets_and_children_filter(city: geo.City) -> None:
    streets = geo.level_geojson(city, "street")
    assert len(streets["features"]) == level(city, "street").height
    xuanwu = geo.level_geojson(city, "street", parent_id="320102")
    ids = [f["properties"]["area_id"] for f in xuanwu["features"]]
    assert ids == city.children("320102")
    assert {f["properties"]["parent_id"] for f in xuanwu["features"]} == {"320102"}
    street_id = ids[0]
    grids = geo.level_geojson(city, "grid", parent_id=street_id)
    assert [f["properties"]["area_id"] for f in grids["features"]] == city.children(street_id)
    assert geo.level_geojson(city, "grid", parent_id="nope")["features"] == []
    with pytest.raises(ValueError, match="unknown level"):
        geo.level_geojson(city, "province")


def test_level_geojson_is_simplified_but_faithful(city: geo.City) -> None:
    fc = geo.level_geojson(city, "district")
    raw = geo.level_geojson(city, "district", tolerance_m=0)
    n_simple = sum(
        len(shapely.get_coordinates(shapely.geometry.shape(f["geometry"]))) for f in fc["features"]
    )
    n_raw = sum(
        len(shapely.get_coordinates(shapely.geometry.shape(f["geometry"]))) for f in raw["features"]
    )
    assert n_simple < n_raw
    for f in fc["features"]:
        simple = shapely.geometry.shape(f["geometry"])
        exact = city.geometry(f["properties"]["area_id"])
        assert abs(simple.area - exact.area) < 0.02 * exact.area


def test_all_grids_geojson_is_compact(city: geo.City) -> None:
    body = orjson.dumps(geo.level_geojson(city, "grid"))
    assert orjson.loads(body)["type"] == "FeatureCollection"
    # 12,545 Voronoi polygons (~6 vertices) with four properties each: ~4 MB raw,
    # ~0.4 MB gzipped (flask-compress serves it gzipped).
    assert len(body) < 4.5e6
    assert len(gzip.compress(body, 6)) < 1.0e6


# ------------------------------------------------------------------ import: files


X_EDGES = [round(118.70 + k * 0.01, 2) for k in range(13)]


def _rect_grids(**override: Any) -> dict[str, Any]:
    """2 districts × 2 streets × 3 grids, each grid a 0.01° square in one row."""
    features = []
    xs = X_EDGES
    for d, district in enumerate(("320102", "320104")):
        for s in range(2):
            for g in range(3):
                k = d * 6 + s * 3 + g
                street = f"{district}-{s + 1:03d}"
                features.append(
                    {
                        "type": "Feature",
                        "properties": {
                            "grid_id": f"{street}-{g + 1:03d}",
                            "grid_name": f"第{g + 1}网格",
                            "street_id": street,
                            "street_name": f"街道{d}{s}",
                            "district_id": district,
                            "district_name": f"区{d}",
                        },
                        "geometry": _gj(box(xs[k], 32.0, xs[k + 1], 32.01)),
                    }
                )
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    fc.update(override)
    return fc


def _datav_districts() -> dict[str, Any]:
    """Two districts in DataV/aliyun format: numeric adcode, name, MultiPolygon."""
    west = shapely.MultiPolygon(
        [box(118.60, 31.90, 118.75, 32.05), box(118.60, 32.06, 118.64, 32.09)]  # + islet
    )
    east = shapely.MultiPolygon(
        [
            shapely.Polygon(
                [
                    (118.75, 31.90),
                    (118.92, 31.88),
                    (118.95, 32.02),
                    (118.80, 32.08),
                    (118.75, 32.05),
                ]
            )
        ]
    )
    features = []
    for k, (adcode, name, geom) in enumerate(((320105, "建邺区", west), (320104, "秦淮区", east))):
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "adcode": adcode,
                    "name": name,
                    "level": "district",
                    "parent": {"adcode": 320100},
                    "subFeatureIndex": k,
                },
                "geometry": _gj(geom),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _write(tmp_path: Path, data: Any, name: str = "in.geojson") -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
    return path


def test_import_grid_file_dissolves_streets_and_districts(tmp_path: Path) -> None:
    src = _write(tmp_path, _rect_grids())
    out = tmp_path / "city"
    city = boundaries.import_geojson(src, GeoSettings(), out).city
    counts = dict(city.areas.group_by("level").len().iter_rows())
    assert counts == {"city": 1, "district": 2, "street": 4, "grid": 12}
    assert city.city_id == "320100"
    assert city.name == "南京市"  # the demo's own city code: named without --name
    assert city.children("320100") == ["320102", "320104"]
    assert city.children("320102") == ["320102-001", "320102-002"]
    assert city.ancestors("320104-002-003") == ["320104-002-003", "320104-002", "320104", "320100"]
    assert city.geometry("320102-002").equals(box(118.73, 32.0, 118.76, 32.01))
    assert city.geometry("320104").equals(box(118.76, 32.0, 118.82, 32.01))
    assert city.geometry("320100").equals(box(118.70, 32.0, 118.82, 32.01))
    assert city.area("320102-001-002")["name"] == "第2网格"
    assert city.area("320102-001")["name"] == "街道00"
    grid_km2 = city.grids["area_km2"].to_numpy()
    assert np.allclose(grid_km2, grid_km2[0], rtol=1e-6)
    expected = 1.0 * 111.195 * 111.195 * math.cos(math.radians(32.005)) * 1e-4
    assert math.isclose(grid_km2[0], expected, rel_tol=2e-3)
    assert math.isclose(city.area("320100")["area_km2"], 12 * grid_km2[0], rel_tol=1e-9)
    # written atomically, and loadable as a configured source
    assert sorted(p.name for p in out.iterdir()) == [geo.CITY_FILE]
    loaded = geo.load_city(GeoSettings(source=str(out)))
    assert loaded.areas.equals(city.areas)
    assert geo.load_city(GeoSettings(source=str(out / geo.CITY_FILE))).areas.equals(city.areas)
    idx = geo.GridIndex(loaded)
    # x=118.71 is the shared edge of grids 0 and 1: the smaller index wins
    got = idx.assign(
        np.array([118.705, 118.71, 118.70, 118.83]), np.array([32.005, 32.005, 32.0, 32.0])
    )
    assert got.tolist() == [0, 0, 0, -1]


def test_import_grid_file_with_custom_keys(tmp_path: Path) -> None:
    fc = _rect_grids()
    for f in fc["features"]:
        f["properties"]["wgbm"] = f["properties"].pop("grid_id")
    settings = GeoSettings(grid_id_key="wgbm")
    city = boundaries.import_geojson(_write(tmp_path, fc), settings, tmp_path / "out").city
    assert city.grids.height == 12


def test_import_datav_district_outlines_generates_streets_and_grids(tmp_path: Path) -> None:
    src = _write(tmp_path, _datav_districts())
    city = boundaries.import_geojson(src, GeoSettings(), tmp_path / "out", n_grids=60).city
    assert city.city_id == "320100"
    assert city.name == "南京市"
    assert city.children("320100") == ["320104", "320105"]
    assert city.area("320105")["name"] == "建邺区"
    assert city.grids.height == 60
    streets = level(city, "street")
    assert streets.height >= 2
    assert streets["name"].str.contains("(街道|镇)$").all()
    assert all(re.fullmatch(r"32010[45]-\d{3}", s) for s in streets["area_id"])
    assert all(re.fullmatch(r"32010[45]-\d{3}-\d{3}", g) for g in city.grids["grid_id"])
    for child_level in ("street", "grid"):
        _assert_children_tile_parents(city, child_level)
    # the generated grids stay inside the real outlines
    outline = shapely.geometry.shape(_datav_districts()["features"][0]["geometry"])
    west = city.geometry("320105")
    assert shapely.symmetric_difference(west, outline).area < 1e-9
    assert shapely.is_valid(city.geoms).all()
    assert (tmp_path / "out" / geo.CITY_FILE).exists()
    again = boundaries.import_geojson(src, GeoSettings(), tmp_path / "out2", n_grids=60).city
    assert again.geometry_hash() == city.geometry_hash()


def test_import_district_outlines_without_adcodes(tmp_path: Path) -> None:
    fc = _datav_districts()
    for k, f in enumerate(fc["features"]):
        f["properties"] = {"district_id": f"D{k}", "district_name": f"区{k}"}
    src = _write(tmp_path, fc)
    city = boundaries.import_geojson(
        src, GeoSettings(), tmp_path / "out", n_grids=40, name="示例市"
    ).city
    assert city.city_id == "city"
    assert city.name == "示例市"
    assert city.grids.height == 40
    assert city.children("city") == ["D0", "D1"]


# ------------------------------------------------------------------ import: errors


def _mutate(fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    fc = _rect_grids()
    fn(fc)
    return fc


def _set_geometry(k: int, geometry: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda fc: fc["features"][k].__setitem__("geometry", geometry)


def _swap(fc: dict[str, Any], k: int) -> None:
    ring = fc["features"][k]["geometry"]["coordinates"][0]
    fc["features"][k]["geometry"]["coordinates"][0] = [[y, x] for x, y in ring]


def _swap_all_far_west(fc: dict[str, Any]) -> None:
    """Ürümqi-like coordinates (lon < 90) swapped: only the China-wide heuristic sees it."""
    for f in fc["features"]:
        ring = f["geometry"]["coordinates"][0]
        f["geometry"]["coordinates"][0] = [[y - 32.0 + 43.8, x - 118.7 + 87.6] for x, y in ring]


BOWTIE = {
    "type": "Polygon",
    "coordinates": [
        [[118.7, 32.0], [118.71, 32.01], [118.71, 32.0], [118.7, 32.01], [118.7, 32.0]]
    ],
}

ERROR_CASES: dict[str, tuple[Any, str]] = {
    "not_json": (b"{not json", r"not valid JSON"),
    "not_fc": ({"type": "Feature", "geometry": None}, r"not a GeoJSON FeatureCollection"),
    "no_features": ({"type": "FeatureCollection", "features": []}, r"has no features"),
    "no_geometry": (
        _mutate(_set_geometry(3, None)),
        r"feature #3 \(grid_id=320102-002-001.*geometry is missing",
    ),
    "point": (
        _mutate(_set_geometry(2, {"type": "Point", "coordinates": [118.7, 32.0]})),
        r"feature #2 \(grid_id=320102-001-003.*geometry is Point; expected Polygon",
    ),
    "bowtie": (
        _mutate(_set_geometry(4, BOWTIE)),
        r"feature #4 \(grid_id=320102-002-002.*invalid polygon \(Self-intersection",
    ),
    "missing_property": (
        _mutate(lambda fc: fc["features"][5]["properties"].pop("street_name")),
        r"feature #5 \(grid_id=320102-002-003.*missing property 'street_name'",
    ),
    "duplicate_id": (
        _mutate(lambda fc: fc["features"][7]["properties"].update(grid_id="320102-001-001")),
        r"feature #7 \(grid_id=320102-001-001.*duplicate grid_id.*feature #0",
    ),
    "overlap": (
        _mutate(_set_geometry(1, _gj(box(118.705, 32.0, 118.72, 32.01)))),
        r"feature #\d \(grid_id=320102-001-00\d.*overlaps feature #\d",
    ),
    "street_in_two_districts": (
        _mutate(lambda fc: fc["features"][6]["properties"].update(street_id="320102-001")),
        r"feature #6 .*street '320102-001' is in district '320104'",
    ),
    "lat_lon_order": (
        _mutate(lambda fc: _swap(fc, 9)),
        r"feature #9 \(grid_id=320104-002-001.*coordinates look like \[lat, lon\]; "
        r"GeoJSON needs \[lon, lat\]",
    ),
    "lat_lon_order_everywhere": (
        _mutate(_swap_all_far_west),
        r"coordinates look like \[lat, lon\]; GeoJSON needs \[lon, lat\]",
    ),
    "out_of_range": (
        _mutate(_set_geometry(10, _gj(box(198.7, 32.0, 198.71, 32.01)))),
        r"feature #10 \(grid_id=320104-002-002.*lon/lat out of range",
    ),
    "missing_grid_id": (
        _mutate(lambda fc: fc["features"][0]["properties"].pop("grid_id")),
        r"feature #0 \(grid_name=第1网格\): missing property 'grid_id'",
    ),
    "no_hierarchy_keys": (
        _mutate(lambda fc: [f.__setitem__("properties", {"x": 1}) for f in fc["features"]]),
        r"no feature carries 'grid_id'",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_import_errors_name_the_feature_and_write_nothing(tmp_path: Path, case: str) -> None:
    data, pattern = ERROR_CASES[case]
    src = _write(tmp_path, data)
    out = tmp_path / "out"
    with pytest.raises(boundaries.GeoImportError, match=pattern):
        boundaries.import_geojson(src, GeoSettings(), out, n_grids=30)
    assert not (out / geo.CITY_FILE).exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_datav_import_errors(tmp_path: Path) -> None:
    fc = _datav_districts()
    fc["features"][1]["properties"]["adcode"] = 320105
    with pytest.raises(
        boundaries.GeoImportError, match=r"feature #1 \(adcode=320105, name=秦淮区.*duplicate"
    ):
        boundaries.import_geojson(_write(tmp_path, fc), GeoSettings(), tmp_path / "out", n_grids=30)
    fc = _datav_districts()
    fc["features"][1]["geometry"] = _gj(shapely.MultiPolygon([box(118.70, 31.95, 118.90, 32.00)]))
    with pytest.raises(
        boundaries.GeoImportError, match=r"feature #1 \(adcode=320104.*overlaps feature #0"
    ):
        boundaries.import_geojson(_write(tmp_path, fc), GeoSettings(), tmp_path / "out", n_grids=30)
    assert not (tmp_path / "out").exists()


def test_import_keeps_a_previous_city_when_the_new_file_is_bad(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = boundaries.import_geojson(
        _write(tmp_path, _rect_grids(), "a.json"), GeoSettings(), out
    ).city
    bad = _mutate(_set_geometry(4, BOWTIE))
    with pytest.raises(boundaries.GeoImportError):
        boundaries.import_geojson(_write(tmp_path, bad, "b.json"), GeoSettings(), out)
    assert geo.load_city(GeoSettings(source=str(out))).areas.equals(good.areas)
    assert sorted(p.name for p in out.iterdir()) == [geo.CITY_FILE]
