"""Map geometry, built once per area and served as a cacheable, pre-compressed response.

Features carry ``i`` (their index: the position of their value in the refresh's
``hideout.values``), ``id`` and ``n`` (name). Refreshes send only values, never shapes.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.city.geography import City, level_geojson
from pipelines.city.water import demo_water, water_geojson


@dataclass(frozen=True)
class Blob:
    raw: bytes
    gz: bytes
    etag: str


def _blob(fc: dict[str, Any]) -> Blob:
    raw = orjson.dumps(fc)
    return Blob(raw, gzip.compress(raw, 6), hashlib.sha1(raw).hexdigest()[:16])


def _indexed(fc: dict[str, Any], order: list[str]) -> dict[str, Any]:
    by_id = {f["properties"]["area_id"]: f for f in fc["features"]}
    feats = []
    for i, area_id in enumerate(order):
        f = by_id[area_id]
        props = f["properties"]
        feats.append(
            {
                "type": "Feature",
                "geometry": f["geometry"],
                "properties": {"i": i, "id": area_id, "n": props["name"]},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def children_collection(city: City, area_id: str, simplify_m: float) -> dict[str, Any]:
    """The children of an area (for a grid: the grid itself), in ``city.children`` order."""
    kids = city.children(area_id)
    if kids:
        level = city.level_of(kids[0])
        assert level is not None
        return _indexed(level_geojson(city, level, area_id, simplify_m), kids)
    row = city.area(area_id)
    assert row is not None
    fc = level_geojson(city, row["level"], row["parent_id"], simplify_m)
    return _indexed(fc, [area_id])


def grids_collection(city: City, simplify_m: float) -> dict[str, Any]:
    """All grids of the city, in ``city.grids`` order (the city-level "all grids" view)."""
    fc = level_geojson(city, "grid", None, simplify_m)
    return _indexed(fc, city.grids["grid_id"].to_list())


@dataclass
class GeometryCache:
    city: City
    simplify_m: float
    _blobs: dict[str, Blob] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def area(self, area_id: str) -> Blob | None:
        if self.city.area(area_id) is None:
            return None
        return self._get(
            f"a:{area_id}", lambda: children_collection(self.city, area_id, self.simplify_m)
        )

    def grids(self) -> Blob:
        return self._get("grids", lambda: grids_collection(self.city, self.simplify_m))

    def _get(self, key: str, build: Any) -> Blob:
        with self._lock:
            hit = self._blobs.get(key)
        if hit is not None:
            return hit
        blob = _blob(build())
        with self._lock:
            self._blobs[key] = blob
        return blob


def city_water(b: Any, lang: str) -> dict[str, Any] | None:
    """The demo city's named water (长江) for the maps; None for an imported city (its own
    data says where water is). Built per page layout (about 20 ms): it is public geometry,
    so it stays out of the shared cache, which holds only what a decision granted."""
    if b.settings.geo.source != "demo":
        return None
    return water_geojson(demo_water(b.city), lang)
