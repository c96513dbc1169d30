"""Boundary import: a city's own GeoJSON → a :class:`~pipelines.city.geography.City`.

Two inputs are recognised: grid polygons carrying the hierarchy in their properties, or
district outlines only (e.g. DataV / aliyun GeoAtlas admin boundaries: ``adcode``,
``name``, ``level``, ``parent``, …), inside which streets and grids are generated like
the demo city. The result is written as the same atomic cache as the demo city, so
:func:`pipelines.city.geography.load_city` reads it.

What real files need, and what this module does about it:

* **Every problem at once.** A file is checked whole; :class:`GeoImportError` lists every
  problem found (``.problems``), each naming its feature, and nothing is written.
* **Tiny self-intersections are repaired.** Public admin-boundary files are full of rings
  that cross themselves over a few metres. An invalid polygon is repaired with shapely's
  ``make_valid(method="structure")`` (shells unioned, holes subtracted: a MultiPolygon
  whose parts overlap keeps their union) when the repair changes its area by at most
  ``geo.repair_max_area_change`` (relative, default 0.1 %); every repair is reported
  (:class:`Repair`). A bigger change — a bow-tie ring whose lobes cancel, a ring wound
  through itself — means the file's geometry is wrong, and it is refused.
* **A UTF-8 byte-order mark** is skipped (and said so).
* **A declared ``crs``** is honoured when it is WGS-84 lon/lat (EPSG:4326, OGC CRS84) or
  Web Mercator (EPSG:3857 and its aliases: the inverse projection is exact maths); any
  other declared CRS is refused, naming it. Nothing is guessed: a file without a ``crs``
  is WGS-84 lon/lat (RFC 7946), and GCJ-02 offsets are never assumed.
* **The city has a name**: ``name=`` (the CLI's ``--name``), else the file's city feature
  (DataV: the feature that is the others' ``parent``), a DataV ``parent.name``, a
  ``geo.city_name_key`` property, the demo's own city code, else the import is refused
  asking for ``--name``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import Polygon, shape

from pipelines.city.generator import NANJING_ID, NANJING_NAME, _build_city, _District, _Plane
from pipelines.city.geography import (
    CACHE_VERSION,
    CITY_FILE,
    City,
    Geom,
    _city_from_rows,
    _polygon_parts,
    _polygonal,
    _write_city,
    area_km2,
)
from pipelines.settings import GeoSettings

# City codes whose names the code knows without the file naming them (the demo's city).
KNOWN_CITY_NAMES = {NANJING_ID: NANJING_NAME}

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
UTF8_BOM = b"\xef\xbb\xbf"


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
class ImportResult:
    """The imported city, every repair made, and notes on how the file was read."""

    city: City
    repairs: list[Repair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ reading the file


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


# ------------------------------------------------------------------ crs


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


# ------------------------------------------------------------------ one feature


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


# ------------------------------------------------------------------ whole-file checks


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


# ------------------------------------------------------------------ the city's name


def _parent_of(props: dict[str, Any]) -> tuple[str | None, str | None]:
    """A DataV feature's parent: (adcode, name); ``parent`` is ``{"adcode": N}`` or N."""
    parent = props.get("parent")
    if isinstance(parent, dict):
        return _text(parent.get("adcode")), _text(parent.get("name"))
    return _text(parent), None


def _one_value(
    features: Sequence[_Feature], key: str, what: str, problems: list[str]
) -> str | None:
    """The single value of ``key`` shared by the features that carry it, or None."""
    values: dict[str, _Feature] = {}
    for f in features:
        value = _text(f.props.get(key))
        if value is not None:
            values.setdefault(value, f)
    if len(values) > 1:
        (a, fa), (b, fb) = list(values.items())[:2]
        problems.append(f"{fb.label}: {what} {b!r} differs from {a!r} at {fa.label}")
        return None
    return next(iter(values), None)


def _city_name(
    explicit: str | None,
    city_id: str,
    found: list[tuple[str, str]],
    path: Path,
    problems: list[str],
    notes: list[str],
    conflict: bool = False,
) -> str:
    """The city's name: ``explicit``, else the first of ``found`` ((name, where)), else a
    known code; a problem asking for ``--name`` when there is none (and the file's names
    did not already ``conflict``)."""
    if explicit is not None:
        if found and found[0][0] != explicit:
            notes.append(f"city name {explicit!r} given; the file says {found[0][0]!r}")
        return explicit
    if found:
        name, where = found[0]
        notes.append(f"city name {name!r} from {where}")
        return name
    if city_id in KNOWN_CITY_NAMES:
        name = KNOWN_CITY_NAMES[city_id]
        notes.append(f"city name {name!r} from its code {city_id}")
        return name
    if not conflict:
        problems.append(
            f"{path}: the file does not name its city (code {city_id!r}): give the name with "
            "--name (e.g. --name 杭州市)"
        )
    return ""


# ------------------------------------------------------------------ grid files


def _import_grids(
    features: list[_Feature],
    geo: GeoSettings,
    name: str | None,
    path: Path,
    problems: list[str],
    notes: list[str],
) -> Callable[[], City] | None:
    """Check a grid file; a builder of the City, or None when a problem was found."""
    keys = (
        geo.grid_id_key,
        geo.grid_name_key,
        geo.street_id_key,
        geo.street_name_key,
        geo.district_id_key,
        geo.district_name_key,
    )
    good: list[tuple[_Feature, list[str]]] = []
    for f in features:
        values = _required(f, keys, problems)
        if values is not None:
            good.append((f, values))
    problems.extend(_duplicates([f for f, _ in good], [v[0] for f, v in good], geo.grid_id_key))
    street_of: dict[str, tuple[str, str, _Feature]] = {}
    district_name: dict[str, str] = {}
    for f, (_gid, _gname, sid, sname, did, dname) in good:
        if sid in street_of and street_of[sid][0] != did:
            problems.append(
                f"{f.label}: street {sid!r} is in district {did!r} here but in "
                f"{street_of[sid][0]!r} at {street_of[sid][2].label}"
            )
            continue
        street_of.setdefault(sid, (did, sname, f))
        district_name.setdefault(did, dname)
    grid_ids = [v[0] for _f, v in good]
    clash = set(grid_ids) & (set(street_of) | set(district_name))
    clash |= set(street_of) & set(district_name)
    for value in sorted(clash):
        f = next(f for f, v in good if value in v)
        problems.append(f"{f.label}: id {value!r} is used at two levels")
    problems.extend(_overlaps(features))
    city_id = _city_id_from(sorted(district_name))
    if city_id in grid_ids or city_id in street_of or city_id in district_name:
        city_id = "city"
    found = []
    before = len(problems)
    in_file = _one_value(features, geo.city_name_key, "city name", problems)
    if in_file:
        found.append((in_file, f"the {geo.city_name_key!r} property"))
    conflict = len(problems) > before
    city_name = _city_name(name, city_id, found, path, problems, notes, conflict)
    if problems:
        return None

    def build() -> City:
        values = [v for _f, v in good]
        geoms = np.array([f.geom for f, _v in good], dtype=object)
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
        rows.append((city_id, "city", None, city_name, None, None))
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

    return build


# ------------------------------------------------------------------ district outlines


def _is_decoration(f: _Feature) -> bool:
    """DataV's China map carries the South China Sea dashed line as a feature
    (``adcode`` ``100000_JD``, ``adchar`` ``JD``, no name): not an area."""
    return f.props.get("adchar") == "JD" or str(f.props.get("adcode", "")).endswith("_JD")


def _import_districts(
    features: list[_Feature],
    geo: GeoSettings,
    seed: int,
    n_grids: int,
    name: str | None,
    path: Path,
    problems: list[str],
    notes: list[str],
) -> Callable[[], City] | None:
    """Check district outlines; a builder of the City, or None when a problem was found."""
    kept = []
    for f in features:
        if _is_decoration(f):
            notes.append(f"{f.label}: DataV's dashed-line decoration, not an area: skipped")
        else:
            kept.append(f)
    features = kept
    if not features:
        return None
    found: list[tuple[str, str]] = []
    parents = {p for p in (_parent_of(f.props)[0] for f in features) if p is not None}
    parent = parents.pop() if len(parents) == 1 else None
    districts = []
    for f in features:
        adcode = _text(f.props.get("adcode"))
        if parent is not None and adcode == parent:
            city_name = _text(f.props.get("name"))
            if city_name:
                found.append((city_name, f"{f.label}, the districts' parent"))
            notes.append(
                f"{f.label}: the city's own outline (the districts' parent): not a district"
            )
        else:
            districts.append(f)
    if not districts:
        problems.append(
            f"{path}: the file holds only the city's own outline; import the file of its "
            "districts (DataV: <adcode>_full.json)"
        )
        return None
    for f in districts:
        parent_name = _parent_of(f.props)[1]
        if parent_name:
            found.append((parent_name, f"{f.label}'s parent"))
            break
    lone = districts[0] if len(districts) == 1 else None
    if lone is not None and parent is None and lone.props.get("level") in ("city", "province"):
        lone_name = _text(lone.props.get("name"))
        if lone_name:  # a city without districts (e.g. 东莞市): the file names the city
            found.append((lone_name, f"{lone.label}, a city-level feature"))
    before = len(problems)
    in_file = _one_value(districts, geo.city_name_key, "city name", problems)
    if in_file:
        found.insert(0, (in_file, f"the {geo.city_name_key!r} property"))
    conflict = len(problems) > before
    ids, names = [], []
    good = []
    for f in districts:
        datav = _text(f.props.get("adcode")) is not None
        id_key = "adcode" if datav else geo.district_id_key
        name_key = "name" if datav else geo.district_name_key
        if _text(f.props.get(name_key)) is None and _text(f.props.get(geo.district_name_key)):
            name_key = geo.district_name_key
        values = _required(f, (id_key, name_key), problems)
        if values is not None:
            good.append(f)
            ids.append(values[0])
            names.append(values[1])
    problems.extend(_duplicates(good, ids, "district id"))
    problems.extend(_overlaps(districts))
    if n_grids < len(districts):
        problems.append(f"n_grids={n_grids} is smaller than the {len(districts)} districts")
    city_id = parent if parent is not None and parent not in ids else _city_id_from(ids)
    if city_id in ids:
        city_id = "city"
    city_name = _city_name(name, city_id, found, path, problems, notes, conflict)
    if problems:
        return None

    def build() -> City:
        shaped = _shaped(good)
        assert len(shaped) == len(good)
        union = shapely.union_all([f.geom for f in shaped])
        xmin, ymin, xmax, ymax = union.bounds
        plane = _Plane((xmin + xmax) / 2, (ymin + ymax) / 2)
        rng = np.random.default_rng([seed, CACHE_VERSION])
        specs = []
        for f, did, dname in zip(good, ids, names, strict=True):
            poly = plane.to_km(f.geom)
            specs.append(_District(did, dname, poly, poly.area**0.6))
        return _build_city(city_id, city_name, specs, n_grids, plane, rng)

    return build


def _ids_as_adcodes(raw: list[Any], geo: GeoSettings, notes: list[str]) -> None:
    """Echarts-style files put the code in the Feature's ``id`` member, not in its
    properties: there it stands in for a missing ``adcode`` (in place)."""
    taken = ("adcode", geo.district_id_key, geo.grid_id_key)
    used = 0
    for f in raw:
        if not isinstance(f, dict) or _text(f.get("id")) is None:
            continue
        props = f.get("properties")
        if props is None:
            props = f["properties"] = {}
        if isinstance(props, dict) and not any(_text(props.get(k)) for k in taken):
            props["adcode"] = f["id"]
            used += 1
    if used:
        notes.append(f"{used} features carry their code as the Feature id: read as adcode")


# ------------------------------------------------------------------ entry point


def import_geojson(
    path: Path,
    geo: GeoSettings,
    out_dir: Path,
    seed: int = 2026,
    n_grids: int | None = None,
    name: str | None = None,
) -> ImportResult:
    """Import a city from GeoJSON and write its cache atomically into ``out_dir``.

    Two inputs are recognised from the features' properties:

    * grid polygons carrying ``geo.grid_id_key`` and the street/district ids and names
      (streets, districts and the city are dissolved from the grids);
    * district outlines only (DataV/aliyun ``adcode`` + ``name``, or
      ``geo.district_id_key`` + ``geo.district_name_key``): streets and ``n_grids`` grids
      (default ``geo.grids``) are generated inside them with the demo generator.

    ``name`` names the city (else the file must, see the module notes). The whole file is
    checked: :class:`GeoImportError` lists every problem and nothing is written then.
    """
    path = Path(path)
    grids = geo.grids if n_grids is None else n_grids
    if grids < 1:
        raise GeoImportError(f"the number of grids must be a positive integer, got {grids}")
    name = _text(name)
    notes: list[str] = []
    data = _read_collection(path, notes)
    crs = _read_crs(path, data, notes)
    raw = data["features"]
    _ids_as_adcodes(raw, geo, notes)
    keys: set[str] = set()
    for f in raw:
        props = f.get("properties") if isinstance(f, dict) else None
        keys.update(props.keys() if isinstance(props, dict) else ())
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
    problems: list[str] = []
    repairs: list[Repair] = []
    features: list[_Feature] = []
    for i, f in enumerate(raw):
        feature, found, repair = _parse_feature(i, f, label_keys, crs, geo.repair_max_area_change)
        problems.extend(found)
        if feature is not None:
            features.append(feature)
        if repair is not None:
            repairs.append(repair)
    swapped = _china_swap(features)
    if swapped:
        problems.append(swapped)
    if mode == "grids":
        build = _import_grids(features, geo, name, path, problems, notes)
    else:
        build = _import_districts(features, geo, seed, grids, name, path, problems, notes)
    if problems or build is None:
        raise GeoImportError(problems)
    city = build()
    _write_city(city, Path(out_dir) / CITY_FILE)
    return ImportResult(city, repairs, notes)


__all__ = ["GeoImportError", "ImportResult", "Repair", "crs_name", "import_geojson"]
