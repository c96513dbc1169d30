"""Named water on the demo city's map.

The demo city's districts leave one enclosed gap north of the old town, between 浦口,
六合, 栖霞 and 鼓楼 — where the Yangtze (长江) runs through the real Nanjing. Unnamed, it
reads as a hole in the data; the map draws it as water with its name instead.

A gap is found the way the eye finds it: close the districts' union (grow it by
:data:`CLOSE_DEG`, then shrink it back), and keep the parts of the closing that no district
covers; a spec names the part holding its anchor (which is also where the label goes).
Imported cities get no demo water (their own data says where water is)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import shapely
from shapely.geometry import mapping

from pipelines.city.geography import City

CLOSE_DEG = 0.05  # ~5 km: wide enough to close the gap's mouth, narrow enough for the rest
SIMPLIFY_DEG = 0.001  # ~100 m: a map outline, not a survey


@dataclass(frozen=True)
class WaterSpec:
    zh: str
    en: str
    anchor: tuple[float, float]  # (lon, lat) inside the gap; the label's place


DEMO_WATER = (WaterSpec("长江", "Yangtze River", (118.734, 32.192)),)


@dataclass(frozen=True)
class Water:
    zh: str
    en: str
    geometry: Any  # shapely polygon(s), WGS-84
    label: tuple[float, float]  # (lon, lat)

    def name(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


def gaps(city: City, close_deg: float = CLOSE_DEG) -> list[Any]:
    """The enclosed-looking gaps between the city's districts, largest first."""
    rows = city.areas.with_row_index("i").filter(pl.col("level") == "district")["i"]
    union = shapely.union_all([city.geoms[i] for i in rows])
    closed = union.buffer(close_deg).buffer(-close_deg)
    gap = closed.difference(union)
    parts = [p for p in getattr(gap, "geoms", [gap]) if not p.is_empty]
    return sorted(parts, key=lambda p: -p.area)


def demo_water(city: City, specs: tuple[WaterSpec, ...] = DEMO_WATER) -> list[Water]:
    """The named water of the demo city: for each spec, the gap holding its anchor."""
    parts = gaps(city)
    out = []
    for s in specs:
        pt = shapely.Point(*s.anchor)
        hit = [p for p in parts if p.buffer(1e-9).contains(pt)]
        if hit:
            out.append(Water(s.zh, s.en, hit[0].simplify(SIMPLIFY_DEG), s.anchor))
    return out


def water_geojson(waters: list[Water], lang: str) -> dict[str, Any]:
    """A FeatureCollection of the water, each named (``n``) with its label point."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": mapping(w.geometry),
                "properties": {"n": w.name(lang), "label": list(w.label)},
            }
            for w in waters
        ],
    }
