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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipelines.city.features import (
    GeoImportError,
    Repair,
    _china_swap,
    _city_id_from,
    _duplicates,
    _Feature,
    _overlaps,
    _parse_feature,
    _read_collection,
    _read_crs,
    _required,
    _shaped,
    _text,
)
from pipelines.city.generator import NANJING_ID, NANJING_NAME, _build_city, _District, _Plane
from pipelines.city.geography import (
    CACHE_VERSION,
    CITY_FILE,
    City,
    Geom,
    _city_from_rows,
    _polygonal,
    _write_city,
)
from pipelines.settings import GeoSettings

# City codes whose names the code knows without the file naming them (the demo's city).
KNOWN_CITY_NAMES = {NANJING_ID: NANJING_NAME}


@dataclass(frozen=True)
class ImportResult:
    """The imported city, every repair made, and notes on how the file was read."""

    city: City
    repairs: list[Repair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


__all__ = ["GeoImportError", "ImportResult", "Repair", "import_geojson"]
