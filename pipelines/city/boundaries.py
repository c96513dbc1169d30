"""Boundary import: a city's own GeoJSON → a :class:`~pipelines.city.geography.City`.

Two inputs are recognised: grid polygons carrying the hierarchy in their properties, or
district outlines only (e.g. DataV / aliyun admin boundaries), inside which streets and
grids are generated like the demo city. The result is written as the same atomic cache
as the demo city, so :func:`pipelines.city.geography.load_city` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import shape

from pipelines.city.geography import (
    CACHE_VERSION,
    CITY_FILE,
    City,
    Geom,
    _build_city,
    _city_from_rows,
    _District,
    _Plane,
    _polygonal,
    _write_city,
    area_km2,
)
from pipelines.settings import GeoSettings


class GeoImportError(ValueError):
    """A GeoJSON file cannot be imported; the message names the feature and the problem."""


# ------------------------------------------------------------------ GeoJSON in


@dataclass(frozen=True)
class _Feature:
    index: int
    props: dict[str, Any]
    geom: Geom
    label: str


def _label(index: int, props: dict[str, Any], keys: Sequence[str]) -> str:
    named = [f"{k}={props[k]}" for k in keys if props.get(k) not in (None, "")]
    return f"feature #{index}" + (f" ({', '.join(named)})" if named else "")


def _read_features(path: Path) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise GeoImportError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise GeoImportError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise GeoImportError(f"{path}: not a GeoJSON FeatureCollection (type={kind!r})")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise GeoImportError(f"{path}: the FeatureCollection has no features")
    for i, f in enumerate(features):
        if not isinstance(f, dict) or f.get("type") != "Feature":
            raise GeoImportError(f"feature #{i}: not a GeoJSON Feature")
        if not isinstance(f.get("properties") or {}, dict):
            raise GeoImportError(f"feature #{i}: properties must be an object")
    return features


def _check_coordinates(label: str, geom: Geom) -> None:
    xy = shapely.get_coordinates(geom)
    if not np.isfinite(xy).all():
        raise GeoImportError(f"{label}: coordinates contain NaN or infinity")
    x, y = xy[:, 0], xy[:, 1]
    if ((np.abs(y) > 90) & (np.abs(x) <= 90)).any():
        raise GeoImportError(
            f"{label}: coordinates look like [lat, lon]; GeoJSON needs [lon, lat] "
            f"(first point {xy[0].tolist()})"
        )
    if (np.abs(x) > 180).any() or (np.abs(y) > 90).any():
        bad = xy[(np.abs(x) > 180) | (np.abs(y) > 90)][0]
        raise GeoImportError(f"{label}: lon/lat out of range at {bad.tolist()}")


def _check_china_swap(features: Sequence[_Feature]) -> None:
    """Every point in China's latitude band as lon and China's longitudes as lat → swapped."""
    xy = np.concatenate([shapely.get_coordinates(f.geom) for f in features])
    if (
        (xy[:, 0] >= 3).all()
        and (xy[:, 0] <= 54).all()
        and (xy[:, 1] >= 73).all()
        and (xy[:, 1] <= 136).all()
    ):
        raise GeoImportError(
            f"{features[0].label}: coordinates look like [lat, lon]; GeoJSON needs [lon, lat] "
            "(every point has lon in China's latitude band and lat in its longitudes)"
        )


def _parse_feature(index: int, raw: dict[str, Any], label_keys: Sequence[str]) -> _Feature:
    props = dict(raw.get("properties") or {})
    label = _label(index, props, label_keys)
    gj = raw.get("geometry")
    if not gj:
        raise GeoImportError(f"{label}: geometry is missing")
    kind = gj.get("type") if isinstance(gj, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        raise GeoImportError(f"{label}: geometry is {kind}; expected Polygon or MultiPolygon")
    try:
        geom = shape(gj)
    except Exception as exc:
        raise GeoImportError(f"{label}: malformed {kind} coordinates ({exc})") from None
    if geom.is_empty:
        raise GeoImportError(f"{label}: geometry is empty")
    _check_coordinates(label, geom)
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        raise GeoImportError(f"{label}: invalid polygon ({reason})")
    return _Feature(index, props, geom, label)


def _require(feature: _Feature, keys: Sequence[str]) -> list[str]:
    values = []
    for key in keys:
        value = feature.props.get(key)
        if value is None or str(value).strip() == "":
            raise GeoImportError(f"{feature.label}: missing property {key!r}")
        values.append(str(value).strip())
    return values


def _check_unique(features: Sequence[_Feature], ids: Sequence[str], what: str) -> None:
    seen: dict[str, _Feature] = {}
    for f, value in zip(features, ids, strict=True):
        if value in seen:
            raise GeoImportError(
                f"{f.label}: duplicate {what} {value!r} (also {seen[value].label})"
            )
        seen[value] = f


def _check_overlaps(features: Sequence[_Feature], rel_tol: float = 1e-4) -> None:
    """No two polygons may overlap by more than ``rel_tol`` of the smaller one (STRtree)."""
    geoms = np.array([f.geom for f in features], dtype=object)
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    if i.size == 0:
        return
    inner = ~shapely.touches(geoms[i], geoms[j])
    i, j = i[inner], j[inner]
    if i.size == 0:
        return
    areas = shapely.area(geoms)
    overlap = shapely.area(shapely.intersection(geoms[i], geoms[j]))
    bad = overlap > np.maximum(rel_tol * np.minimum(areas[i], areas[j]), 1e-14)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        a, b = features[int(i[k])], features[int(j[k])]
        km2 = float(area_km2(shapely.intersection(a.geom, b.geom))[0])
        raise GeoImportError(f"{b.label}: overlaps {a.label} by {km2:.6f} km²")


def _city_id_from(district_ids: Sequence[str]) -> str:
    codes = {d[:4] for d in district_ids if len(d) == 6 and d.isdigit()}
    if len(codes) == 1 and all(len(d) == 6 and d.isdigit() for d in district_ids):
        return codes.pop() + "00"
    return "city"


def _import_grids(features: list[_Feature], geo: GeoSettings) -> City:
    keys = (
        geo.grid_id_key,
        geo.grid_name_key,
        geo.street_id_key,
        geo.street_name_key,
        geo.district_id_key,
        geo.district_name_key,
    )
    values = [_require(f, keys) for f in features]
    grid_ids = [v[0] for v in values]
    _check_unique(features, grid_ids, geo.grid_id_key)
    street_of: dict[str, tuple[str, str, _Feature]] = {}
    district_name: dict[str, str] = {}
    for f, (_gid, _gname, sid, sname, did, dname) in zip(features, values, strict=True):
        if sid in street_of and street_of[sid][0] != did:
            raise GeoImportError(
                f"{f.label}: street {sid!r} is in district {did!r} here but in "
                f"{street_of[sid][0]!r} at {street_of[sid][2].label}"
            )
        street_of.setdefault(sid, (did, sname, f))
        district_name.setdefault(did, dname)
    clash = set(grid_ids) & (set(street_of) | set(district_name))
    clash |= set(street_of) & set(district_name)
    if clash:
        value = sorted(clash)[0]
        f = next(f for f, v in zip(features, values, strict=True) if value in v)
        raise GeoImportError(f"{f.label}: id {value!r} is used at two levels")
    _check_overlaps(features)
    city_id = _city_id_from(sorted(district_name))
    if city_id in grid_ids or city_id in street_of or city_id in district_name:
        city_id = "city"

    geoms = np.array([f.geom for f in features], dtype=object)
    street_idx: dict[str, list[int]] = {}
    for k, v in enumerate(values):
        street_idx.setdefault(v[2], []).append(k)
    rows: list[tuple[str, str, str | None, str, str | None, str | None]] = []
    out: list[Geom] = []
    street_geom: dict[str, Geom] = {}
    for sid, idx in street_idx.items():
        street_geom[sid] = _polygonal(shapely.union_all(geoms[idx]))
    district_geom: dict[str, Geom] = {}
    for did in district_name:
        sids = [s for s, (d, _n, _f) in street_of.items() if d == did]
        district_geom[did] = _polygonal(shapely.union_all([street_geom[s] for s in sids]))
    rows.append((city_id, "city", None, "全市", None, None))
    out.append(_polygonal(shapely.union_all(list(district_geom.values()))))
    for did, dname in district_name.items():
        rows.append((did, "district", city_id, dname, did, None))
        out.append(district_geom[did])
    for sid, (did, sname, _f) in street_of.items():
        rows.append((sid, "street", did, sname, did, sid))
        out.append(street_geom[sid])
    for v, g in zip(values, geoms, strict=True):
        rows.append((v[0], "grid", v[2], v[1], v[4], v[2]))
        out.append(g)
    return _city_from_rows(city_id, rows, np.array(out, dtype=object))


def _import_districts(features: list[_Feature], geo: GeoSettings, seed: int, n_grids: int) -> City:
    ids, names = [], []
    for f in features:
        id_key = "adcode" if f.props.get("adcode") not in (None, "") else geo.district_id_key
        name_key = "name" if f.props.get("name") not in (None, "") else geo.district_name_key
        did, dname = _require(f, (id_key, name_key))
        ids.append(did)
        names.append(dname)
    _check_unique(features, ids, "district id")
    _check_overlaps(features)
    if n_grids < len(features):
        raise GeoImportError(f"n_grids={n_grids} is smaller than the {len(features)} districts")
    city_id = _city_id_from(ids)
    if city_id in ids:
        city_id = "city"
    union = shapely.union_all([f.geom for f in features])
    xmin, ymin, xmax, ymax = union.bounds
    plane = _Plane((xmin + xmax) / 2, (ymin + ymax) / 2)
    rng = np.random.default_rng([seed, CACHE_VERSION])
    districts = []
    for f, did, dname in zip(features, ids, names, strict=True):
        poly = plane.to_km(f.geom)
        districts.append(_District(did, dname, poly, poly.area**0.6))
    return _build_city(city_id, "全市", districts, n_grids, plane, rng)


def import_geojson(
    path: Path, geo: GeoSettings, out_dir: Path, seed: int = 2026, n_grids: int | None = None
) -> City:
    """Import a city from GeoJSON and write its cache atomically into ``out_dir``.

    Two inputs are recognised from the first feature's properties:

    * grid polygons carrying ``geo.grid_id_key`` and the street/district ids and names
      (streets, districts and the city are dissolved from the grids);
    * district outlines only (DataV/aliyun ``adcode`` + ``name``, or
      ``geo.district_id_key`` + ``geo.district_name_key``): streets and ``n_grids`` grids
      (default ``geo.grids``) are generated inside them with the demo generator.

    Every problem raises :class:`GeoImportError` naming the feature; nothing is written then.
    """
    raw = _read_features(Path(path))
    keys = set().union(*((f.get("properties") or {}).keys() for f in raw))
    if geo.grid_id_key in keys:
        label_keys: tuple[str, ...] = (geo.grid_id_key, geo.grid_name_key)
        mode = "grids"
    elif "adcode" in keys or geo.district_id_key in keys:
        label_keys = ("adcode", "name", geo.district_id_key, geo.district_name_key)
        mode = "districts"
    else:
        raise GeoImportError(
            f"{path}: no feature carries {geo.grid_id_key!r} (grid file) nor "
            f"'adcode'/{geo.district_id_key!r} (district outlines)"
        )
    features = [_parse_feature(i, f, label_keys) for i, f in enumerate(raw)]
    _check_china_swap(features)
    if mode == "grids":
        city = _import_grids(features, geo)
    else:
        city = _import_districts(features, geo, seed, n_grids or geo.grids)
    _write_city(city, Path(out_dir) / CITY_FILE)
    return city


__all__ = ["GeoImportError", "import_geojson"]
