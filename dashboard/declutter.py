"""Markers that do not cover each other: circles drawn at area centres are pushed apart
until none overlaps at the zoom the map opens with (pure; no Dash).

Positions are compared in Web-Mercator pixels at ``zoom`` (Leaflet's projection, 256-px
tiles). Moving two markers apart by enough pixels at one zoom keeps them apart at every
closer zoom, since pixel distances double with each zoom step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TILE = 256.0
MAX_LAT = 85.0511287798


def to_px(lon: float, lat: float, zoom: float) -> tuple[float, float]:
    scale = TILE * 2**zoom
    lat = max(-MAX_LAT, min(MAX_LAT, lat))
    s = math.sin(math.radians(lat))
    x = (lon + 180.0) / 360.0 * scale
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * scale
    return x, y


def from_px(x: float, y: float, zoom: float) -> tuple[float, float]:
    scale = TILE * 2**zoom
    lon = x / scale * 360.0 - 180.0
    n = math.pi - 2 * math.pi * y / scale
    lat = math.degrees(math.atan(math.sinh(n)))
    return lon, lat


def spread(
    points: Sequence[tuple[float, float]],
    sizes: Sequence[float],
    zoom: float,
    gap: float = 4.0,
    rounds: int = 300,
) -> list[tuple[float, float]]:
    """(lon, lat) of each marker, moved as little as needed so that markers of diameter
    ``sizes`` (px) are at least ``gap`` px apart at ``zoom``. Markers already apart are
    returned unchanged; coincident ones are parted in a fixed direction (deterministic)."""
    if len(points) != len(sizes):
        raise ValueError("one size per point")
    px = [list(to_px(lon, lat, zoom)) for lon, lat in points]
    moved = False
    for _ in range(rounds):
        clash = False
        for i in range(len(px)):
            for j in range(i + 1, len(px)):
                need = (sizes[i] + sizes[j]) / 2 + gap
                dx, dy = px[j][0] - px[i][0], px[j][1] - px[i][1]
                d = math.hypot(dx, dy)
                if d >= need - 1e-6:
                    continue
                clash = moved = True
                if d < 1e-9:  # the same spot: part them along a direction set by the pair
                    a = (i * 7 + j * 13) % 360
                    dx, dy, d = math.cos(math.radians(a)), math.sin(math.radians(a)), 1.0
                push = (need - d) / 2 + 0.01
                ux, uy = dx / d, dy / d
                px[i][0] -= ux * push
                px[i][1] -= uy * push
                px[j][0] += ux * push
                px[j][1] += uy * push
        if not clash:
            break
    if not moved:
        return [(float(lon), float(lat)) for lon, lat in points]
    return [from_px(x, y, zoom) for x, y in px]


def cluster_size(total: int) -> float:
    """A cluster circle's diameter in px (as assets/wangge_work.js draws it)."""
    return float(round(min(54.0, 22 + math.sqrt(max(total, 0)) * 2.2)))
