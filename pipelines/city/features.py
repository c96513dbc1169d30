"""Reading a boundary file's features for :mod:`pipelines.city.boundaries`: the file and
its declared CRS, each feature's coordinates and geometry (with the bounded repair of tiny
self-intersections), and the checks over the whole file (duplicates, overlaps, swapped
axes). Every function reports problems into the list it is given, naming the feature, so
an import can list every problem at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import Polygon, shape

from pipelines.city.geography import Geom, _polygon_parts, _polygonal, area_km2

UTF8_BOM = b"\xef\xbb\xbf"


WEB_MERCATOR_R = 6378137.0  # the sphere of EPSG:3857 (WGS-84 semi-major axis), metres


WEB_MERCATOR_MAX = math.pi * WEB_MERCATOR_R  # 20,037,508.34 m: ±180° and ±85.05113°


LONLAT_CRS = ("EPSG:4326", "OGC:CRS84")


WEB_MERCATOR_CRS = (
    "EPSG:3857",
    "EPSG:900913",
    "EPSG:3785",
    "EPSG:102100",
    "EPSG:102113",
    "ESRI:102100",
    "ESRI:102113",
)


class GeoImportError(ValueError):
    """A GeoJSON file cannot be imported. ``problems`` lists every problem found, each
    naming its feature; the message is all of them, one per line."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            message = f"{len(self.problems)} problems:\n{lines}"
        super().__init__(message)


@dataclass(frozen=True)
class Repair:
    """One invalid polygon repaired by ``make_valid``: which, why, and the area change."""

    label: str
    reason: str  # GEOS's validity reason, e.g. "Self-intersection[118.61 31.87]"
    before_km2: float  # the area as the rings were drawn (each ring's own enclosed area)
    after_km2: float  # the repaired polygon's area

    @property
    def change_km2(self) -> float:
        return self.after_km2 - self.before_km2

    @property
    def change(self) -> float:
        """Relative area change (after − before) / before."""
        return self.change_km2 / self.before_km2 if self.before_km2 > 0 else math.inf

    def describe(self) -> str:
        return (
            f"{self.label}: repaired an invalid polygon ({self.reason}); area "
            f"{self.before_km2:.6f} → {self.after_km2:.6f} km² "
            f"({self.change_km2 * 1e6:+,.0f} m², {self.change:+.4%})"
        )


@dataclass(frozen=True)
class _Feature:
    index: int
    props: dict[str, Any]
    geom: Geom | None  # None when the geometry has a problem (its properties still count)
    label: str


def _shaped(features: Sequence[_Feature]) -> list[_Feature]:
    """The features whose geometry is good."""
    return [f for f in features if f.geom is not None]


def _label(index: int, props: dict[str, Any], keys: Sequence[str]) -> str:
    named = [f"{k}={props[k]}" for k in keys if props.get(k) not in (None, "")]
    return f"feature #{index}" + (f" ({', '.join(named)})" if named else "")


def _read_collection(path: Path, notes: list[str]) -> dict[str, Any]:
    """The parsed FeatureCollection (a BOM skipped); file-level problems raise at once."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GeoImportError(f"{path}: cannot read ({exc})") from None
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM) :]
        notes.append(f"{path}: skipped a UTF-8 byte-order mark at the start of the file")
    elif raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise GeoImportError(f"{path}: the file is UTF-16; GeoJSON must be UTF-8 (RFC 7946)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GeoImportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise GeoImportError(f"{path}: not a GeoJSON FeatureCollection (type={kind!r})")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise GeoImportError(f"{path}: the FeatureCollection has no features")
    return data


def crs_name(crs: Any) -> str | None:
    """The declared ``crs`` member as ``AUTHORITY:CODE`` (``EPSG:3857``, ``OGC:CRS84``), or
    None when there is none. Accepts the GeoJSON 2008 forms: ``{"type": "name",
    "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}`` (also ``EPSG:3857`` and
    ``http://www.opengis.net/def/crs/EPSG/0/3857``) and ``{"type": "EPSG", "properties":
    {"code": 3857}}``. Anything else is returned as written, to be named in the refusal."""
    if crs is None:
        return None
    if not isinstance(crs, dict):
        return repr(crs)
    props: dict[str, Any] = crs["properties"] if isinstance(crs.get("properties"), dict) else {}
    kind = str(crs.get("type", "")).lower()
    if kind == "epsg" and props.get("code") is not None:
        return f"EPSG:{props['code']}"
    name = props.get("name") if kind == "name" else None
    if not isinstance(name, str) or not name.strip():
        return orjson.dumps(crs).decode()
    parts = [p for p in re.split(r"[:/]+", name.strip()) if p]
    code = parts[-1].upper()
    if code in ("CRS84", "CRS:84"):
        return "OGC:CRS84"
    authority = next((p.upper() for p in reversed(parts[:-1]) if p.upper() in _AUTHORITIES), "")
    return f"{authority}:{code}" if authority else name.strip()


_AUTHORITIES = ("EPSG", "ESRI", "OGC")


def _inverse_web_mercator(xy: np.ndarray) -> np.ndarray:
    """EPSG:3857 metres → WGS-84 lon/lat degrees (exact inverse of the spherical formula)."""
    lon = np.degrees(xy[:, 0] / WEB_MERCATOR_R)
    lat = np.degrees(2.0 * np.arctan(np.exp(xy[:, 1] / WEB_MERCATOR_R)) - math.pi / 2)
    return np.column_stack((lon, lat))


@dataclass(frozen=True)
class _Crs:
    """How the file's coordinates are read: ``name`` (None: undeclared) and a transform."""

    name: str | None
    to_lonlat: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def mercator(self) -> bool:
        return self.to_lonlat is not None


def _read_crs(path: Path, data: dict[str, Any], notes: list[str]) -> _Crs:
    name = crs_name(data.get("crs"))
    if name is None:
        return _Crs(None)
    if name in LONLAT_CRS:
        notes.append(f"{path}: declared crs {name}: WGS-84 lon/lat, read as is")
        return _Crs(name)
    if name in WEB_MERCATOR_CRS:
        notes.append(
            f"{path}: declared crs {name} (Web Mercator metres): converted to WGS-84 lon/lat "
            "by the inverse spherical Mercator"
        )
        return _Crs(name, _inverse_web_mercator)
    raise GeoImportError(
        f"{path}: the file declares crs {name!r}, which the import does not read: it reads "
        "WGS-84 lon/lat (EPSG:4326, OGC:CRS84) and Web Mercator (EPSG:3857). Reproject the "
        "file to EPSG:4326 first (e.g. `ogr2ogr -t_srs EPSG:4326 out.geojson in.geojson`)."
    )


def _looks_projected(xy: np.ndarray) -> bool:
    """Coordinates in the range of projected metres (most beyond ±180, none absurd)."""
    big = (np.abs(xy) > 180).any(axis=1)
    return bool(big.mean() > 0.5 and (np.abs(xy) < 4.1e7).all())


def _check_coordinates(label: str, xy: np.ndarray, crs: _Crs) -> str | None:
    """The first problem of a feature's raw coordinates, or None."""
    if not np.isfinite(xy).all():
        return f"{label}: coordinates contain NaN or infinity"
    if crs.mercator:
        if (np.abs(xy) <= 180).all():
            return (
                f"{label}: the file declares crs {crs.name} (metres) but the coordinates look "
                f"like degrees (first point {xy[0].tolist()}): remove or correct the crs"
            )
        outside = (np.abs(xy) > WEB_MERCATOR_MAX * (1 + 1e-9)).any(axis=1)
        if outside.any():
            return (
                f"{label}: coordinates outside the {crs.name} range (±{WEB_MERCATOR_MAX:.2f} m) "
                f"at {xy[outside][0].tolist()}"
            )
        return None
    x, y = xy[:, 0], xy[:, 1]
    if ((np.abs(y) > 90) & (np.abs(x) <= 90)).any():
        return (
            f"{label}: coordinates look like [lat, lon]; GeoJSON needs [lon, lat] "
            f"(first point {xy[0].tolist()})"
        )
    bad = (np.abs(x) > 180) | (np.abs(y) > 90)
    if bad.any():
        where = xy[bad][0].tolist()
        if crs.name is not None:
            return f"{label}: lon/lat out of range at {where} (the file declares crs {crs.name})"
        if _looks_projected(xy):
            return (
                f"{label}: lon/lat out of range at {where}: the values look like projected "
                "metres, but the file declares no crs, so they are read as WGS-84 lon/lat. "
                "Declare the file's crs (EPSG:3857 is understood) or reproject it to EPSG:4326"
            )
        return f"{label}: lon/lat out of range at {where}"
    return None


def _ring_area_km2(ring: Any) -> float:
    return float(abs(area_km2(Polygon(ring))[0]))


def _drawn_area_km2(geom: Geom) -> float:
    """Area of a possibly invalid polygon as its rings were drawn: per part, the exterior
    ring's enclosed area minus its holes' (what GEOS's planar area does, on the sphere)."""
    total = 0.0
    for part in shapely.get_parts(geom):
        total += _ring_area_km2(part.exterior)
        total -= sum(_ring_area_km2(h) for h in part.interiors)
    return total


def _repair(label: str, geom: Geom, max_change: float) -> tuple[Geom | None, Repair | str]:
    """``make_valid`` an invalid polygon; the repaired geometry and its :class:`Repair`, or
    None and the problem when the repair would change the area by more than allowed."""
    reason = shapely.is_valid_reason(geom)
    before = _drawn_area_km2(geom)
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    parts = _polygon_parts(fixed)
    if not parts:
        return None, f"{label}: invalid polygon ({reason}) with no area left once repaired"
    repaired = _polygonal(fixed)
    after = float(area_km2(repaired)[0])
    repair = Repair(label, reason, before, after)
    if before <= 0 or abs(repair.change) > max_change:
        change = "an undefined share" if before <= 0 else f"{repair.change:+.4%}"
        return None, (
            f"{label}: invalid polygon ({reason}); repairing it would change its area by "
            f"{change} ({before:.6f} → {after:.6f} km²), more than "
            f"geo.repair_max_area_change ({max_change:.2%}): fix the ring in the source file"
        )
    return repaired, repair


def _parse_feature(
    index: int,
    raw: Any,
    label_keys: Sequence[str],
    crs: _Crs,
    max_change: float,
) -> tuple[_Feature | None, list[str], Repair | None]:
    """One feature: (the feature, its problems, its repair if one was made). The feature
    is None when it is no Feature at all; its ``geom`` is None when the geometry is bad."""
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        return None, [f"feature #{index}: not a GeoJSON Feature"], None
    props = raw.get("properties") or {}
    if not isinstance(props, dict):
        return None, [f"feature #{index}: properties must be an object"], None
    props = dict(props)
    label = _label(index, props, label_keys)
    unshaped = _Feature(index, props, None, label)
    gj = raw.get("geometry")
    if not gj:
        return unshaped, [f"{label}: geometry is missing"], None
    kind = gj.get("type") if isinstance(gj, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        return unshaped, [f"{label}: geometry is {kind}; expected Polygon or MultiPolygon"], None
    try:
        geom = shape(gj)
    except Exception as exc:
        return unshaped, [f"{label}: malformed {kind} coordinates ({exc})"], None
    if geom.is_empty:
        return unshaped, [f"{label}: geometry is empty"], None
    xy = shapely.get_coordinates(geom)
    problem = _check_coordinates(label, xy, crs)
    if problem:
        return unshaped, [problem], None
    if crs.to_lonlat is not None:
        geom = shapely.transform(geom, crs.to_lonlat)
    if geom.is_valid:
        return _Feature(index, props, geom, label), [], None
    repaired, outcome = _repair(label, geom, max_change)
    if repaired is None:
        assert isinstance(outcome, str)
        return unshaped, [outcome], None
    assert isinstance(outcome, Repair)
    return _Feature(index, props, repaired, label), [], outcome


def _china_swap(features: Sequence[_Feature]) -> str | None:
    """Every point in China's latitude band as lon and China's longitudes as lat → swapped."""
    features = _shaped(features)
    if not features:
        return None
    xy = np.concatenate([shapely.get_coordinates(f.geom) for f in features])
    if (
        (xy[:, 0] >= 3).all()
        and (xy[:, 0] <= 54).all()
        and (xy[:, 1] >= 73).all()
        and (xy[:, 1] <= 136).all()
    ):
        return (
            f"{features[0].label}: coordinates look like [lat, lon]; GeoJSON needs [lon, lat] "
            "(every point has lon in China's latitude band and lat in its longitudes)"
        )
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(feature: _Feature, keys: Sequence[str], problems: list[str]) -> list[str] | None:
    """The features' values of ``keys`` (stripped), or None with a problem per missing key."""
    values, missing = [], []
    for key in keys:
        value = _text(feature.props.get(key))
        if value is None:
            missing.append(key)
        values.append(value or "")
    for key in missing:
        problems.append(f"{feature.label}: missing property {key!r}")
    return None if missing else values


def _duplicates(features: Sequence[_Feature], ids: Sequence[str], what: str) -> list[str]:
    seen: dict[str, _Feature] = {}
    out = []
    for f, value in zip(features, ids, strict=True):
        if value in seen:
            out.append(f"{f.label}: duplicate {what} {value!r} (also {seen[value].label})")
        else:
            seen[value] = f
    return out


def _overlaps(features: Sequence[_Feature], rel_tol: float = 1e-4) -> list[str]:
    """Every pair of polygons overlapping by more than ``rel_tol`` of the smaller one."""
    features = _shaped(features)
    if len(features) < 2:
        return []
    geoms = np.array([f.geom for f in features], dtype=object)
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    if i.size == 0:
        return []
    inner = ~shapely.touches(geoms[i], geoms[j])
    i, j = i[inner], j[inner]
    if i.size == 0:
        return []
    areas = shapely.area(geoms)
    shared = shapely.intersection(geoms[i], geoms[j])
    overlap = shapely.area(shared)
    bad = np.flatnonzero(overlap > np.maximum(rel_tol * np.minimum(areas[i], areas[j]), 1e-14))
    out = []
    for k in bad:
        a, b = features[int(i[k])], features[int(j[k])]
        km2 = float(area_km2(shared[k])[0])
        out.append(f"{b.label}: overlaps {a.label} by {km2:.6f} km²")
    return out


def _city_id_from(district_ids: Sequence[str]) -> str:
    codes = {d[:4] for d in district_ids if len(d) == 6 and d.isdigit()}
    if len(codes) == 1 and all(len(d) == 6 and d.isdigit() for d in district_ids):
        return codes.pop() + "00"
    return "city"
