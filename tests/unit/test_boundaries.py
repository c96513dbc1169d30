"""Boundary import on what real admin-boundary files contain (pipelines.city.boundaries).

Each defect class found in 368 public DataV files has a small constructed fixture here:
a ring crossing itself over a tiny loop, MultiPolygon parts that overlap, a ring touching
itself, a UTF-8 byte-order mark, a file in Web Mercator (EPSG:3857), a file with several
problems at once, and DataV city files with and without their city's name. Expected
values come from the geometry as constructed (lobe areas, the forward Mercator formula),
not from the importer.

``WANGGE_DATAV_DIR`` may point at a folder of real DataV files (``<adcode>_full.json``);
the tests on Nanjing's real file skip when it is absent.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import shapely
from shapely.geometry import Point, Polygon, box, mapping

from pipelines.city import boundaries, features
from pipelines.city import geography as geo
from pipelines.settings import GeoSettings

S = 0.1  # side of a district square, degrees
X0, Y0 = 118.60, 31.90


def _gj(geom: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(orjson.dumps(mapping(geom)))
    return parsed


def _ring_gj(coords: list[tuple[float, float]]) -> dict[str, Any]:
    """A Polygon exactly as drawn (shapely would not let us build an invalid one via box)."""
    ring = [list(c) for c in coords]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def _square(k: int) -> list[tuple[float, float]]:
    """The k-th district square, west to east, counter-clockwise."""
    x = X0 + k * S
    return [(x, Y0), (x + S, Y0), (x + S, Y0 + S), (x, Y0 + S)]


def _looped_square(k: int, e: float) -> list[tuple[float, float]]:
    """Square k whose west edge crosses itself: a loop of half-width ``e`` (degrees) out
    west of the edge's middle, drawn the wrong way round (a bow-tie lobe).

    As drawn (shoelace) the area is the square's; the valid polygon keeps the lobe too:
    the triangle (x−e, ym−e), (x−e, ym+e), (x−e/2, ym) of area e²/2, and the square keeps
    its own little triangle between the crossing and the edge (also e²/2), so the repair
    adds e² to S²: a relative change of (e/S)².
    """
    x, y = X0 + k * S, Y0
    ym = y + S / 2
    return [
        (x, y),
        (x + S, y),
        (x + S, y + S),
        (x, y + S),
        (x, ym + e),
        (x - e, ym - e),
        (x - e, ym + e),
        (x, ym - e),
    ]


def _datav(
    geoms: list[dict[str, Any]],
    names: tuple[str, ...] = ("玄武区", "秦淮区", "建邺区"),
    parent: int = 330100,
    codes: tuple[int, ...] = (330102, 330105, 330106),
) -> dict[str, Any]:
    """A DataV ``<adcode>_full.json``: one feature per district of city ``parent``."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "adcode": code,
                    "name": name,
                    "center": [0, 0],
                    "childrenNum": 0,
                    "level": "district",
                    "parent": {"adcode": parent},
                    "subFeatureIndex": k,
                    "acroutes": [100000, parent // 10000 * 10000, parent],
                },
                "geometry": g,
            }
            for k, (g, name, code) in enumerate(zip(geoms, names, codes, strict=False))
        ],
    }


def _squares(n: int = 3) -> list[dict[str, Any]]:
    return [_ring_gj(_square(k)) for k in range(n)]


def _write(tmp_path: Path, data: Any, name: str = "330100_full.json") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
    return path


def _import(tmp_path: Path, data: Any, **kw: Any) -> boundaries.ImportResult:
    kw.setdefault("n_grids", 30)
    kw.setdefault("name", "杭州市")
    return boundaries.import_geojson(_write(tmp_path, data), GeoSettings(), tmp_path / "out", **kw)


def _refused(tmp_path: Path, data: Any, **kw: Any) -> list[str]:
    with pytest.raises(boundaries.GeoImportError) as err:
        _import(tmp_path, data, **kw)
    assert not (tmp_path / "out").exists()  # nothing written
    return err.value.problems


# ------------------------------------------------------------------ repairs


@pytest.mark.parametrize("e", [0.0005, 0.002])  # ~50 m and ~200 m loops: (e/S)² ≤ 0.04 %
def test_a_tiny_self_intersection_is_repaired_and_reported(tmp_path: Path, e: float) -> None:
    geoms = _squares()
    geoms[0] = _ring_gj(_looped_square(0, e))  # the west end: the lobe sticks out of the city
    res = _import(tmp_path, _datav(geoms))
    assert [r.label for r in res.repairs] == ["feature #0 (adcode=330102, name=玄武区)"]
    repair = res.repairs[0]
    assert repair.reason.startswith("Self-intersection")
    assert math.isclose(repair.change, (e / S) ** 2, rel_tol=0.02)
    square_km2 = float(geo.area_km2(box(X0, Y0, X0 + S, Y0 + S))[0])
    assert math.isclose(repair.before_km2, square_km2, rel_tol=1e-3)
    assert "玄武区" in repair.describe() and "km²" in repair.describe()
    # the repaired district is valid and keeps the lobe west of its edge
    city = res.city
    assert shapely.is_valid(city.geoms).all()
    assert city.geometry("330102").contains(Point(X0 - 0.8 * e, Y0 + S / 2))
    assert math.isclose(city.area("330102")["area_km2"], repair.after_km2, rel_tol=1e-9)


def test_overlapping_multipolygon_parts_are_unioned(tmp_path: Path) -> None:
    """Two parts of one district overlapping by a sliver: the repair keeps their union."""
    geoms = _squares()
    a = box(X0 + S, Y0, X0 + 2 * S, Y0 + 0.6 * S)
    b = box(X0 + S, Y0 + 0.5999 * S, X0 + 2 * S, Y0 + S)  # overlaps a by 0.0001 S²
    geoms[1] = {
        "type": "MultiPolygon",
        "coordinates": [_gj(a)["coordinates"], _gj(b)["coordinates"]],
    }
    res = _import(tmp_path, _datav(geoms))
    (repair,) = res.repairs
    assert math.isclose(repair.change, -0.0001 / 1.0001, rel_tol=0.02)  # the sliver, once
    assert res.city.geometry("330105").equals(shapely.union(a, b))


def test_a_ring_touching_itself_is_repaired_without_area_change(tmp_path: Path) -> None:
    """The exterior ring touches itself at one vertex, closing a pocket (an inverted hole)."""
    x, y, u = X0 + S, Y0, S / 4
    ring = [
        (x, y),
        (x + 4 * u, y),
        (x + 4 * u, y + 4 * u),
        (x + 2 * u, y + 4 * u),
        (x + 3 * u, y + 2 * u),
        (x + u, y + 2 * u),
        (x + 2 * u, y + 4 * u),
        (x, y + 4 * u),
    ]
    geoms = _squares()
    geoms[1] = _ring_gj(ring)
    res = _import(tmp_path, _datav(geoms))
    (repair,) = res.repairs
    assert repair.reason.startswith("Ring Self-intersection")
    assert abs(repair.change) < 1e-9
    pocket = Polygon([(x + 2 * u, y + 4 * u), (x + 3 * u, y + 2 * u), (x + u, y + 2 * u)])
    assert not res.city.geometry("330105").contains(pocket.centroid)


def test_a_bow_tie_is_refused_with_its_area_change(tmp_path: Path) -> None:
    """Lobes of equal size cancel as drawn: no repair can say what was meant."""
    x = X0 + S
    geoms = _squares()
    geoms[1] = _ring_gj([(x, Y0), (x + S, Y0 + S), (x + S, Y0), (x, Y0 + S)])
    (problem,) = _refused(tmp_path, _datav(geoms))
    assert problem.startswith("feature #1 (adcode=330105, name=秦淮区): invalid polygon")
    assert "geo.repair_max_area_change" in problem and "fix the ring" in problem


def test_a_repair_beyond_the_tolerance_is_refused(tmp_path: Path) -> None:
    geoms = _squares()
    geoms[0] = _ring_gj(_looped_square(0, 0.005))  # (e/S)² = 0.25 % > 0.1 %
    (problem,) = _refused(tmp_path, _datav(geoms))
    assert "玄武区" in problem and "+0.25" in problem
    # the tolerance is a setting: 0.5 % accepts it
    settings = GeoSettings(repair_max_area_change=0.005)
    res = boundaries.import_geojson(
        _write(tmp_path, _datav(geoms)), settings, tmp_path / "out", n_grids=30, name="杭州市"
    )
    assert math.isclose(res.repairs[0].change, 0.0025, rel_tol=0.02)


# ------------------------------------------------------------------ encoding, crs


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    res = _import(tmp_path, b"\xef\xbb\xbf" + orjson.dumps(_datav(_squares())))
    assert res.city.grids.height == 30
    assert any("byte-order mark" in n for n in res.notes)


def test_utf16_is_refused_clearly(tmp_path: Path) -> None:
    data = "\ufeff" + orjson.dumps(_datav(_squares())).decode()
    (problem,) = _refused(tmp_path, data.encode("utf-16-le"))
    assert "UTF-16" in problem and "UTF-8" in problem


def _to_mercator(lon: float, lat: float) -> list[float]:
    """The forward spherical Mercator of EPSG:3857."""
    r = 6378137.0
    return [r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))]


def _mercator_datav(crs: Any) -> dict[str, Any]:
    geoms = []
    for k in range(3):
        ring = [_to_mercator(x, y) for x, y in [*_square(k), _square(k)[0]]]
        geoms.append({"type": "Polygon", "coordinates": [ring]})
    fc = _datav(geoms)
    if crs is not None:
        fc["crs"] = crs
    return fc


@pytest.mark.parametrize(
    "crs",
    [
        {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
        {"type": "name", "properties": {"name": "EPSG:3857"}},
        {"type": "name", "properties": {"name": "http://www.opengis.net/def/crs/EPSG/0/3857"}},
        {"type": "name", "properties": {"name": "EPSG:900913"}},
        {"type": "EPSG", "properties": {"code": 3857}},
    ],
)
def test_a_declared_web_mercator_crs_is_converted(tmp_path: Path, crs: Any) -> None:
    res = _import(tmp_path, _mercator_datav(crs))
    for k, code in enumerate(("330102", "330105", "330106")):
        expected = Polygon(_square(k))
        got = res.city.geometry(code)
        assert shapely.symmetric_difference(got, expected).area < 1e-12, code
    assert any("Web Mercator" in n for n in res.notes)


@pytest.mark.parametrize(
    "name", ["urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326", "urn:ogc:def:crs:EPSG::4326"]
)
def test_a_declared_lonlat_crs_is_read_as_is(tmp_path: Path, name: str) -> None:
    fc = _datav(_squares())
    fc["crs"] = {"type": "name", "properties": {"name": name}}
    res = _import(tmp_path, fc)
    assert res.city.geometry("330102").equals(Polygon(_square(0)))


@pytest.mark.parametrize(
    ("name", "shown"),
    [("urn:ogc:def:crs:EPSG::4490", "EPSG:4490"), ("EPSG:32650", "EPSG:32650")],
)
def test_any_other_declared_crs_is_refused_naming_it(tmp_path: Path, name: str, shown: str) -> None:
    fc = _datav(_squares())
    fc["crs"] = {"type": "name", "properties": {"name": name}}
    (problem,) = _refused(tmp_path, fc)
    assert f"declares crs '{shown}'" in problem
    assert "EPSG:4326" in problem and "EPSG:3857" in problem


def test_mercator_coordinates_without_a_crs_are_refused_with_a_hint(tmp_path: Path) -> None:
    problems = _refused(tmp_path, _mercator_datav(None))
    assert len(problems) == 3  # every feature, not only the first
    assert all("lon/lat out of range" in p and "projected metres" in p for p in problems)
    assert all("declares no crs" in p and "EPSG:3857" in p for p in problems)


def test_a_mercator_crs_on_degrees_is_refused(tmp_path: Path) -> None:
    fc = _datav(_squares())
    fc["crs"] = {"type": "name", "properties": {"name": "EPSG:3857"}}
    problems = _refused(tmp_path, fc)
    assert "look like degrees" in problems[0]


def test_crs_names_are_normalised() -> None:
    assert features.crs_name(None) is None
    assert features.crs_name({"type": "name", "properties": {"name": "CRS84"}}) == "OGC:CRS84"
    assert features.crs_name({"type": "EPSG", "properties": {"code": 4326}}) == "EPSG:4326"
    assert (
        features.crs_name({"type": "name", "properties": {"name": "ESRI:102100"}}) == "ESRI:102100"
    )


# ------------------------------------------------------------------ every problem at once


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    geoms = [_ring_gj(_square(k)) for k in range(6)]
    x = X0 + 1 * S
    geoms[1] = _ring_gj([(x, Y0), (x + S, Y0 + S), (x + S, Y0), (x, Y0 + S)])  # bow-tie
    geoms[2] = _ring_gj(_looped_square(2, 0.0005))  # tiny loop: repaired, not a problem
    geoms[4] = _gj(box(X0 + 3.5 * S, Y0, X0 + 4.5 * S, Y0 + S))  # overlaps #3 and #5
    geoms[5] = _gj(box(198.0, Y0, 198.1, Y0 + S))  # out of range
    fc = _datav(
        geoms,
        names=("甲区", "乙区", "丙区", "丁区", "", "己区"),
        codes=(330102, 330105, 330106, 330108, 330108, 330110),
    )
    problems = _refused(tmp_path, fc)
    expected = [
        r"feature #1 \(adcode=330105, name=乙区\): invalid polygon",
        r"feature #5 \(adcode=330110, name=己区\): lon/lat out of range",
        r"feature #4 \(adcode=330108\): missing property 'name'",
        r"feature #4 \(adcode=330108\): overlaps feature #3 .* by \d",
    ]
    for pattern in expected:
        assert sum(bool(re.match(pattern, p)) for p in problems) == 1, (
            pattern,
            problems,
        )
    assert len(problems) == len(expected), problems
    with pytest.raises(boundaries.GeoImportError, match=r"4 problems:\n  feature #1"):
        _import(tmp_path, fc)


def test_duplicate_ids_are_all_reported(tmp_path: Path) -> None:
    fc = _datav(_squares(), codes=(330102, 330102, 330102))
    problems = _refused(tmp_path, fc)
    assert [p.split(":")[0] for p in problems] == [
        "feature #1 (adcode=330102, name=秦淮区)",
        "feature #2 (adcode=330102, name=建邺区)",
    ]


# ------------------------------------------------------------------ the city's name


def test_the_city_is_named_by_the_name_option(tmp_path: Path) -> None:
    res = _import(tmp_path, _datav(_squares()), name="杭州市")
    assert (res.city.city_id, res.city.name) == ("330100", "杭州市")
    assert res.city.area("330100")["name"] == "杭州市"
    assert res.city.children("330100") == ["330102", "330105", "330106"]


def test_a_datav_file_without_its_city_name_asks_for_it(tmp_path: Path) -> None:
    (problem,) = _refused(tmp_path, _datav(_squares()), name=None)
    assert "does not name its city" in problem and "--name" in problem and "330100" in problem


def test_the_city_feature_names_the_city_and_is_not_a_district(tmp_path: Path) -> None:
    fc = _datav(_squares())
    outline = _gj(box(X0, Y0, X0 + 3 * S, Y0 + S))
    fc["features"].insert(
        0,
        {
            "type": "Feature",
            "properties": {"adcode": 330100, "name": "杭州市", "level": "city"},
            "geometry": outline,
        },
    )
    res = _import(tmp_path, fc, name=None)
    assert (res.city.city_id, res.city.name) == ("330100", "杭州市")
    assert res.city.ids("district") == ["330102", "330105", "330106"]


def test_a_city_without_districts_is_named_by_its_feature(tmp_path: Path) -> None:
    """DataV's 东莞市 (441900_full.json): one city-level feature, no parent."""
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"adcode": "441900", "name": "东莞市", "level": "city"},
                "geometry": _gj(box(X0, Y0, X0 + S, Y0 + S)),
            }
        ],
    }
    res = _import(tmp_path, fc, name=None)
    assert res.city.name == "东莞市"
    assert res.city.ids("district") == ["441900"]


def test_a_grid_file_names_its_city_by_property(tmp_path: Path) -> None:
    features = []
    for k in range(3):
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "grid_id": f"G{k}",
                    "grid_name": f"第{k}网格",
                    "street_id": "S1",
                    "street_name": "某街道",
                    "district_id": "330102",
                    "district_name": "上城区",
                    "city_name": "杭州市",
                },
                "geometry": _gj(box(X0 + k * S, Y0, X0 + (k + 1) * S, Y0 + S)),
            }
        )
    fc = {"type": "FeatureCollection", "features": features}
    res = _import(tmp_path, fc, name=None)
    assert res.city.name == "杭州市"
    features[2]["properties"]["city_name"] = "宁波市"
    (problem,) = _refused(tmp_path / "b", fc, name=None)
    assert "city name '宁波市' differs from '杭州市'" in problem


def test_datav_dashed_line_decoration_is_skipped(tmp_path: Path) -> None:
    fc = _datav(_squares())
    fc["features"].append(
        {
            "type": "Feature",
            "properties": {"name": "", "adchar": "JD", "adcode": "100000_JD"},
            "geometry": _gj(box(X0, Y0 - 0.2, X0 + 0.01, Y0 - 0.19)),
        }
    )
    res = _import(tmp_path, fc)
    assert res.city.ids("district") == ["330102", "330105", "330106"]
    assert any("100000_JD" in n and "skipped" in n for n in res.notes)


# ------------------------------------------------------------------ grid counts


@pytest.mark.parametrize("n", [0, -5])
def test_a_non_positive_grid_count_is_refused(tmp_path: Path, n: int) -> None:
    (problem,) = _refused(tmp_path, _datav(_squares()), n_grids=n)
    assert "positive" in problem and str(n) in problem
    settings = GeoSettings(grids=n)  # the setting, too: never silently the default
    with pytest.raises(boundaries.GeoImportError, match="positive"):
        boundaries.import_geojson(
            _write(tmp_path, _datav(_squares())), settings, tmp_path / "out", name="杭州市"
        )


# ------------------------------------------------------------------ real files (optional)


def _real(name: str) -> Path:
    folder = os.environ.get("WANGGE_DATAV_DIR", "")
    path = Path(folder) / name
    if not folder or not path.exists():
        pytest.skip(f"set WANGGE_DATAV_DIR to a folder holding DataV's {name}")
    return path


def test_real_nanjing_file_imports_with_its_repairs(tmp_path: Path) -> None:
    path = _real("320100_full.json")
    res = boundaries.import_geojson(path, GeoSettings(), tmp_path / "out", n_grids=500)
    city = res.city
    assert (city.city_id, city.name) == ("320100", "南京市")
    assert len(city.ids("district")) == 11
    repaired = {r.label.split("name=")[1].rstrip(")") for r in res.repairs}
    assert {"雨花台区", "高淳区"} <= repaired
    assert all(abs(r.change) <= 1e-3 for r in res.repairs)
    assert shapely.is_valid(city.geoms).all()
    total = city.areas.filter(city.areas["level"] == "district")["area_km2"].sum()
    assert 6000 < total < 7000  # Nanjing: 6,587 km²


def test_a_feature_id_stands_in_for_a_missing_adcode(tmp_path: Path) -> None:
    """Echarts-style files: ``{"type": "Feature", "id": "330102", "properties": {"name": …}}``."""
    fc = _datav(_squares())
    for f in fc["features"]:
        f["id"] = str(f["properties"].pop("adcode"))
        f["properties"] = {"name": f["properties"]["name"], "cp": [0, 0], "childNum": 1}
    res = _import(tmp_path, fc)
    assert res.city.ids("district") == ["330102", "330105", "330106"]
    assert res.city.area("330105")["name"] == "秦淮区"
    assert any("Feature id" in n for n in res.notes)


def test_a_datav_parent_name_names_the_city(tmp_path: Path) -> None:
    fc = _datav(_squares())
    for f in fc["features"]:
        f["properties"]["parent"] = {"adcode": 330100, "name": "杭州市"}
    res = _import(tmp_path, fc, name=None)
    assert (res.city.city_id, res.city.name) == ("330100", "杭州市")
    assert any("'杭州市'" in n and "parent" in n for n in res.notes)
