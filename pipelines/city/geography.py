"""The city's geography: area hierarchy, point → grid index, per-level GeoJSON, demo city.

The hierarchy is city → district → street → grid. A :class:`City` holds one row per area
(a Polars frame) plus the aligned shapely geometries. Coordinates are WGS-84 ``[lon, lat]``.

Sources of a city:

* :func:`demo_city` — a deterministic, Nanjing-scale generated city (11 real districts,
  97 real streets, 12,545 grids by default), built by :mod:`pipelines.city.generator`.
* :func:`pipelines.city.boundaries.import_geojson` — a city's own GeoJSON: either grid
  polygons carrying the hierarchy in their properties, or district outlines only (e.g.
  DataV / aliyun admin boundaries), inside which streets and grids are generated like the
  demo city.

Both are cached as one Parquet file (area rows + WKB geometry column) written atomically;
:func:`load_city` reads the cache for the configured source.

Areas are computed on the sphere (authalic radius) through the cylindrical equal-area
transform ``(lon, sin(lat))``; the transform is the same for every polygon, so areas of a
tiling add up exactly.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon

from pipelines.settings import ROOT, GeoSettings

LEVELS = ("city", "district", "street", "grid")
LEVEL_ORDER = {level: i for i, level in enumerate(LEVELS)}

# Bump when the generator or the cache layout changes: old caches are then ignored.
CACHE_VERSION = 1
CITY_FILE = "city.parquet"

EARTH_RADIUS_KM = 6371.0072  # authalic radius of WGS-84
KM_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_KM
MIN_GRIDS_PER_STREET = 3

AREA_COLUMNS = (
    "area_id",
    "level",
    "parent_id",
    "name",
    "city_id",
    "district_id",
    "street_id",
    "lon",
    "lat",
    "area_km2",
)
AREAS_SCHEMA: dict[str, pl.DataType] = {
    "area_id": pl.String(),
    "level": pl.String(),
    "parent_id": pl.String(),
    "name": pl.String(),
    "city_id": pl.String(),
    "district_id": pl.String(),
    "street_id": pl.String(),
    "lon": pl.Float64(),
    "lat": pl.Float64(),
    "area_km2": pl.Float64(),
}

Geom: TypeAlias = Polygon | MultiPolygon


# ------------------------------------------------------------------ City


@dataclass(frozen=True, eq=False)
class City:
    """One city's areas (rows sorted by level order, then area_id) and their geometries."""

    areas: pl.DataFrame
    geoms: np.ndarray

    @property
    def city_id(self) -> str:
        return str(self.areas["area_id"][0])

    @property
    def name(self) -> str:
        return str(self.areas["name"][0])

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {area_id: i for i, area_id in enumerate(self.areas["area_id"].to_list())}

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for area_id, parent in zip(
            self.areas["area_id"].to_list(), self.areas["parent_id"].to_list(), strict=True
        ):
            if parent is not None:
                out.setdefault(parent, []).append(area_id)
        return {k: sorted(v) for k, v in out.items()}

    @cached_property
    def _grid_mask(self) -> np.ndarray:
        return (self.areas["level"] == "grid").to_numpy()

    @cached_property
    def grids(self) -> pl.DataFrame:
        """Grid rows; row i is "grid index i" (what :meth:`GridIndex.assign` returns)."""
        return (
            self.areas.filter(pl.col("level") == "grid")
            .select(
                pl.col("area_id").alias("grid_id"),
                "street_id",
                "district_id",
                "city_id",
                "lon",
                "lat",
                "area_km2",
                "name",
            )
            .sort("grid_id")
        )

    @cached_property
    def grid_geoms(self) -> np.ndarray:
        rows = np.flatnonzero(self._grid_mask)
        ids = self.areas["area_id"].to_numpy()[rows]
        return self.geoms[rows[np.argsort(ids, kind="stable")]]

    def ids(self, level: str) -> list[str]:
        """All area ids of one level, sorted."""
        return self.areas.filter(pl.col("level") == level)["area_id"].to_list()

    def area(self, area_id: str) -> dict[str, Any] | None:
        row = self._row_of.get(area_id)
        return None if row is None else self.areas.row(row, named=True)

    def children(self, area_id: str) -> list[str]:
        return list(self._children.get(area_id, []))

    def ancestors(self, area_id: str) -> list[str]:
        """``[area_id, parent, …, city]``; empty for an unknown id."""
        out: list[str] = []
        parents = self.areas["parent_id"]
        current: str | None = area_id
        while current is not None and current in self._row_of:
            out.append(current)
            current = parents[self._row_of[current]]
        return out

    def level_of(self, area_id: str) -> str | None:
        row = self._row_of.get(area_id)
        return None if row is None else str(self.areas["level"][row])

    def geometry(self, area_id: str) -> Geom:
        row = self._row_of.get(area_id)
        if row is None:
            raise KeyError(area_id)
        geom: Geom = self.geoms[row]
        return geom

    def geometry_hash(self) -> str:
        """SHA-256 over ids and WKB of every area (for determinism checks)."""
        digest = hashlib.sha256()
        for area_id, wkb in zip(
            self.areas["area_id"].to_list(), shapely.to_wkb(self.geoms), strict=True
        ):
            digest.update(area_id.encode())
            digest.update(wkb)
        return digest.hexdigest()


# ------------------------------------------------------------------ point → grid


class GridIndex:
    """Point → grid lookup over a city's grids (a shapely STRtree)."""

    def __init__(self, city: City) -> None:
        self.city = city
        self.geoms = city.grid_geoms
        self.tree = shapely.STRtree(self.geoms)

    def assign(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Vectorised: int32 grid index (row of ``city.grids``) per point, -1 outside every grid.

        Boundary rule: a point on a shared edge or vertex intersects several grids and
        belongs to the one with the **smallest grid index** among them. Points outside
        every grid, and points with a NaN/inf coordinate, get -1.
        """
        x = np.asarray(lon, dtype=np.float64).ravel()
        y = np.asarray(lat, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError("lon and lat must have the same length")
        out = np.full(x.shape[0], -1, dtype=np.int32)
        ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        if ok.size == 0:
            return out
        points = shapely.points(x[ok], y[ok])
        which, grid = self.tree.query(points, predicate="intersects")
        if which.size == 0:
            return out
        best = np.full(ok.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, which, grid)
        hit = best != np.iinfo(np.int64).max
        out[ok[hit]] = best[hit].astype(np.int32)
        return out


# ------------------------------------------------------------------ areas & projections


def area_km2(geoms: np.ndarray | Geom) -> np.ndarray:
    """Area on the sphere (authalic radius) of lon/lat polygons, in km².

    Edges are taken as straight lines in lon/lat (the GeoJSON convention), and the area
    element cos φ dφ dλ is integrated exactly along them (Green's theorem):
    ∮ sin φ dλ over an edge is Δλ · sin φ̄ · sinc(Δφ/2). Splitting an edge at a point on
    it does not change the integral, so the areas of a tiling add up to the whole.
    """
    arr = np.atleast_1d(np.asarray(geoms, dtype=object))
    parts, part_of = shapely.get_parts(shapely.orient_polygons(arr), return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    lam, phi = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    same = coord_ring[1:] == coord_ring[:-1]
    dphi = np.diff(phi)
    term = np.diff(lam) * np.sin((phi[1:] + phi[:-1]) / 2) * np.sinc(dphi / (2 * np.pi))
    ring_sum = np.bincount(coord_ring[1:][same], weights=term[same], minlength=len(rings))
    part_sum = np.bincount(ring_part, weights=ring_sum, minlength=len(parts))
    geom_sum = np.bincount(part_of, weights=part_sum, minlength=len(arr))
    # exterior rings run counter-clockwise after orient_polygons: ∮ sin φ dλ is negative
    return -geom_sum * EARTH_RADIUS_KM**2


# ------------------------------------------------------------------ polygon parts


def _polygon_parts(geom: Any) -> list[Polygon]:
    """The non-empty Polygon parts of any geometry."""
    parts = shapely.get_parts(geom)
    return [p for p in parts if isinstance(p, Polygon) and not p.is_empty and p.area > 0]


def _polygonal(geom: Any) -> Geom:
    """``geom`` as a Polygon/MultiPolygon: lines and points of a collection are dropped."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = _polygon_parts(geom)
    if not parts:
        raise ValueError("geometry has no polygonal part")
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


# ------------------------------------------------------------------ rows → City


def _cell_anchors(cells: np.ndarray) -> np.ndarray:
    """Centroids of cells, or a point on the surface where the centroid falls outside."""
    centroids = shapely.centroid(cells)
    inside = shapely.contains(cells, centroids)
    if not inside.all():
        centroids[~inside] = shapely.point_on_surface(cells[~inside])
    return shapely.get_coordinates(centroids)


def _city_from_rows(
    city_id: str,
    rows: Sequence[tuple[str, str, str | None, str, str | None, str | None]],
    geoms: np.ndarray,
) -> City:
    """Assemble a City: compute label points and areas, sort rows, round-trip via WKB."""
    geoms = np.asarray(geoms, dtype=object)
    anchors = _cell_anchors(geoms)
    frame = pl.DataFrame(
        {
            "area_id": [r[0] for r in rows],
            "level": [r[1] for r in rows],
            "parent_id": [r[2] for r in rows],
            "name": [r[3] for r in rows],
            "city_id": [city_id] * len(rows),
            "district_id": [r[4] for r in rows],
            "street_id": [r[5] for r in rows],
            "lon": anchors[:, 0],
            "lat": anchors[:, 1],
            "area_km2": area_km2(geoms),
            "_row": np.arange(len(rows)),
        },
        schema={**AREAS_SCHEMA, "_row": pl.Int64},
    )
    frame = frame.with_columns(
        pl.col("level").replace_strict(LEVEL_ORDER, return_dtype=pl.Int8).alias("_level")
    ).sort("_level", "area_id")
    order = frame["_row"].to_numpy()
    # Same bytes as a cache load: generated and loaded cities are identical.
    wkb = shapely.to_wkb(geoms[order])
    return City(areas=frame.select(AREA_COLUMNS), geoms=shapely.from_wkb(wkb))


# ------------------------------------------------------------------ cache


def _write_city(city: City, path: Path) -> None:
    """Write the city atomically: a temp file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = city.areas.with_columns(pl.Series("wkb", shapely.to_wkb(city.geoms), dtype=pl.Binary))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, metadata={"wangge_geo_version": str(CACHE_VERSION)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_city(path: Path) -> City:
    meta = pl.read_parquet_metadata(path)
    version = meta.get("wangge_geo_version")
    if version != str(CACHE_VERSION):
        raise ValueError(f"{path}: city cache version {version}, expected {CACHE_VERSION}")
    frame = pl.read_parquet(path)
    geoms = shapely.from_wkb(frame["wkb"].to_numpy())
    return City(areas=frame.select(AREA_COLUMNS).cast(pl.Schema(AREAS_SCHEMA)), geoms=geoms)


def demo_cache_path(geo: GeoSettings, root: Path | None = None) -> Path:
    """Cache file of the demo city for (seed, grids, generator version)."""
    cache_dir = _resolve(geo.cache_dir, root)
    return cache_dir / f"demo-v{CACHE_VERSION}-seed{geo.seed}-grids{geo.grids}.parquet"


def _resolve(path: str | Path, root: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (root or ROOT) / p


def demo_city(seed: int = 2026, n_grids: int = 12545) -> City:
    """The generated demo city (:mod:`pipelines.city.generator`): same seed, same city."""
    from pipelines.city import generator  # the generator builds on this module

    return generator.demo_city(seed, n_grids)


def load_city(geo: GeoSettings, root: Path | None = None) -> City:
    """The configured city: the (cached) demo city, or an imported city cache."""
    if geo.source == "demo":
        path = demo_cache_path(geo, root)
        if path.exists():
            try:
                return _read_city(path)
            except Exception:  # unreadable or stale cache: regenerate it
                pass
        city = demo_city(geo.seed, geo.grids)
        _write_city(city, path)
        return city
    path = _resolve(geo.source, root)
    if path.is_dir():
        path = path / CITY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no imported city at {path} (run `wangge geo import` first)")
    return _read_city(path)


# ------------------------------------------------------------------ GeoJSON out


def level_geojson(
    city: City, level: str, parent_id: str | None = None, tolerance_m: float = 30.0
) -> dict[str, Any]:
    """FeatureCollection of the areas of ``level`` (optionally children of ``parent_id``).

    Geometries are simplified as a coverage (shared borders stay shared), grids with half
    the tolerance; coordinates are rounded to 5 decimals (≈1 m). Properties:
    ``area_id, name, level, parent_id``.
    """
    if level not in LEVEL_ORDER:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    mask = city.areas["level"] == level
    if parent_id is not None:
        mask = mask & (city.areas["parent_id"] == parent_id)
    rows = np.flatnonzero(mask.to_numpy())
    frame = city.areas[rows]
    geoms = city.geoms[rows]
    tol_deg = (tolerance_m / 2 if level == "grid" else tolerance_m) / (KM_PER_DEG * 1000)
    if len(geoms) and tol_deg > 0:
        geoms = _simplify(geoms, tol_deg)
    if len(geoms):
        # snap to the 1e-5° output grid keeping polygons valid; keep tiny ones unsnapped
        snapped = shapely.set_precision(geoms, 1e-5)
        geoms = np.where(shapely.is_empty(snapped), geoms, snapped)
    features = [
        {
            "type": "Feature",
            "properties": {"area_id": a, "name": n, "level": level, "parent_id": p},
            "geometry": _rounded(g),
        }
        for a, n, p, g in zip(
            frame["area_id"].to_list(),
            frame["name"].to_list(),
            frame["parent_id"].to_list(),
            geoms,
            strict=True,
        )
    ]
    return {"type": "FeatureCollection", "features": features}


def _simplify(geoms: np.ndarray, tol_deg: float) -> np.ndarray:
    """Coverage simplification; per-polygon topology-preserving simplify as a fallback."""
    try:
        out = shapely.coverage_simplify(geoms, tol_deg)
        if shapely.is_valid(out).all() and not shapely.is_empty(out).any():
            return np.asarray(out, dtype=object)
    except shapely.errors.GEOSException:
        pass
    return np.asarray(shapely.simplify(geoms, tol_deg, preserve_topology=True), dtype=object)


def _rounded(geom: Geom) -> dict[str, Any]:
    def ring(coords: Any) -> list[list[float]]:
        arr = np.round(np.asarray(coords)[:, :2], 5)
        return arr.tolist()

    def poly(p: Polygon) -> list[list[list[float]]]:
        return [ring(p.exterior.coords), *(ring(r.coords) for r in p.interiors)]

    if isinstance(geom, Polygon):
        return {"type": "Polygon", "coordinates": poly(geom)}
    return {"type": "MultiPolygon", "coordinates": [poly(p) for p in _polygon_parts(geom)]}


__all__ = [
    "CACHE_VERSION",
    "LEVELS",
    "City",
    "GridIndex",
    "area_km2",
    "demo_city",
    "level_geojson",
    "load_city",
]
