"""The demo city generator: a deterministic, Nanjing-scale city, and the streets and grids
generated inside imported district outlines.

Districts are unions of small Voronoi "atoms" assigned by a warped power distance whose
weights are fitted to the real district areas; streets and grids are Lloyd-relaxed
Voronoi cells clipped to their parent. Work happens in a local equal-area plane
(:class:`_Plane`, kilometres) and the result is mapped back to WGS-84.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon

from pipelines.city.geography import (
    CACHE_VERSION,
    KM_PER_DEG,
    MIN_GRIDS_PER_STREET,
    City,
    Geom,
    _cell_anchors,
    _city_from_rows,
    _polygon_parts,
    _polygonal,
)


@dataclass(frozen=True)
class DistrictSpec:
    """A demo district: adcode, name, target centroid/area, population and street names."""

    adcode: str
    name: str
    lon: float
    lat: float
    area_km2: float
    population_k: float  # thousands of residents (2020 census, rounded); drives grid density
    streets: tuple[str, ...]


NANJING_ID = "320100"


NANJING_NAME = "南京市"


# fmt: off
NANJING: tuple[DistrictSpec, ...] = (
    DistrictSpec("320102", "玄武区", 118.843, 32.065, 75, 538, (
        "玄武门街道", "新街口街道", "梅园新村街道", "孝陵卫街道", "锁金村街道", "红山街道",
        "玄武湖街道")),
    DistrictSpec("320104", "秦淮区", 118.817, 32.012, 49, 741, (
        "夫子庙街道", "中华门街道", "红花街道", "秦虹街道", "双塘街道", "光华路街道",
        "朝天宫街道", "洪武路街道", "大光路街道", "瑞金路街道", "月牙湖街道", "五老村街道")),
    DistrictSpec("320105", "建邺区", 118.710, 32.009, 79, 534, (
        "南苑街道", "兴隆街道", "莫愁湖街道", "沙洲街道", "双闸街道", "江心洲街道")),
    DistrictSpec("320106", "鼓楼区", 118.761, 32.082, 55, 940, (
        "宁海路街道", "华侨路街道", "湖南路街道", "中央门街道", "挹江门街道", "江东街道",
        "凤凰街道", "小市街道", "宝塔桥街道", "热河南路街道", "幕府山街道", "建宁路街道",
        "阅江楼街道")),
    DistrictSpec("320111", "浦口区", 118.563, 32.053, 911, 1172, (
        "泰山街道", "顶山街道", "沿江街道", "江浦街道", "桥林街道", "汤泉街道", "盘城街道",
        "星甸街道", "永宁街道")),
    DistrictSpec("320113", "栖霞区", 118.959, 32.159, 392, 988, (
        "尧化街道", "马群街道", "迈皋桥街道", "燕子矶街道", "栖霞街道", "龙潭街道",
        "仙林街道", "八卦洲街道", "西岗街道")),
    DistrictSpec("320114", "雨花台区", 118.694, 31.938, 131, 609, (
        "雨花街道", "赛虹桥街道", "西善桥街道", "板桥街道", "铁心桥街道", "梅山街道")),
    DistrictSpec("320115", "江宁区", 118.831, 31.854, 1570, 1926, (
        "东山街道", "秣陵街道", "汤山街道", "淳化街道", "禄口街道", "江宁街道", "谷里街道",
        "湖熟街道", "横溪街道", "麒麟街道")),
    DistrictSpec("320116", "六合区", 118.842, 32.394, 1482, 947, (
        "雄州街道", "龙池街道", "程桥街道", "葛塘街道", "长芦街道", "龙袍街道", "横梁街道",
        "金牛湖街道", "竹镇镇")),
    DistrictSpec("320117", "溧水区", 119.033, 31.591, 1069, 491, (
        "永阳街道", "柘塘街道", "东屏街道", "石湫街道", "洪蓝街道", "白马镇", "晶桥镇",
        "和凤镇")),
    DistrictSpec("320118", "高淳区", 118.968, 31.331, 795, 430, (
        "淳溪街道", "古柏街道", "漆桥街道", "固城街道", "东坝街道", "桠溪街道", "砖墙镇",
        "阳江镇")),
)
# fmt: on


# Syllables for made-up street names of imported district outlines.
_NAME_SYLLABLES = (
    "东",
    "西",
    "南",
    "北",
    "新",
    "长",
    "安",
    "华",
    "兴",
    "明",
    "和",
    "平",
    "丰",
    "永",
    "青",
    "龙",
    "凤",
    "金",
    "桂",
    "梅",
    "松",
    "竹",
    "湖",
    "山",
    "河",
    "江",
    "桥",
    "园",
    "宁",
    "瑞",
    "嘉",
    "福",
    "德",
    "泰",
    "康",
    "乐",
    "春",
    "秋",
    "阳",
    "光",
    "文",
    "武",
    "清",
    "泉",
    "林",
    "石",
    "仁",
    "义",
    "富",
    "民",
    "盛",
    "昌",
    "宝",
    "莲",
)


@dataclass(frozen=True)
class _Plane:
    """Local equirectangular plane in km around (lon0, lat0), used by the generator."""

    lon0: float
    lat0: float

    @property
    def kx(self) -> float:
        return KM_PER_DEG * math.cos(math.radians(self.lat0))

    def xy(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        return (np.asarray(lon) - self.lon0) * self.kx, (np.asarray(lat) - self.lat0) * KM_PER_DEG

    def to_km(self, geoms: Any) -> Any:
        kx = self.kx
        return shapely.transform(
            geoms,
            lambda c: np.column_stack(
                ((c[:, 0] - self.lon0) * kx, (c[:, 1] - self.lat0) * KM_PER_DEG)
            ),
        )

    def to_lonlat(self, geoms: Any) -> Any:
        kx = self.kx
        return shapely.transform(
            geoms,
            lambda c: np.column_stack((c[:, 0] / kx + self.lon0, c[:, 1] / KM_PER_DEG + self.lat0)),
        )


def _sample_points(parent: Geom, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform random points strictly inside ``parent`` (rejection sampling)."""
    shapely.prepare(parent)
    xmin, ymin, xmax, ymax = parent.bounds
    out: list[np.ndarray] = []
    have = 0
    fill = max(parent.area / max((xmax - xmin) * (ymax - ymin), 1e-12), 0.05)
    while have < n:
        m = int((n - have) / fill * 1.3) + 16
        xy = np.column_stack((rng.uniform(xmin, xmax, m), rng.uniform(ymin, ymax, m)))
        inside = shapely.contains_xy(parent, xy[:, 0], xy[:, 1])
        out.append(xy[inside])
        have += int(inside.sum())
    return np.concatenate(out)[:n]


def _voronoi_cells(points: np.ndarray, parent: Geom) -> np.ndarray:
    """Voronoi cells of ``points`` (in input order) clipped to ``parent``."""
    if len(points) == 1:
        return np.array([parent], dtype=object)
    diagram = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=parent, ordered=True)
    cells = shapely.get_parts(diagram)
    if len(cells) != len(points):
        raise ValueError("duplicate Voronoi seeds")
    return shapely.intersection(cells, parent)


def _merge_stray_parts(cells: np.ndarray) -> np.ndarray:
    """Keep each cell's largest polygon; merge its other parts into the best neighbour.

    The neighbour is the cell sharing the longest border with the stray part (or the
    nearest cell if none touches it, e.g. an island). The number of cells is unchanged.
    """
    parts, owner = shapely.get_parts(cells, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    parts, owner = parts[keep], owner[keep]
    counts = np.bincount(owner, minlength=len(cells))
    if (counts == 0).any():
        raise ValueError("empty cell")
    if (counts == 1).all():
        return parts[np.argsort(owner, kind="stable")]
    areas = shapely.area(parts)
    order = np.lexsort((-areas, owner))  # by owner, largest part first
    parts, owner = parts[order], owner[order]
    first = np.r_[True, owner[1:] != owner[:-1]]
    mains = parts[first].copy()
    strays = parts[~first]
    tree = shapely.STRtree(mains)
    for stray in sorted(strays, key=lambda g: -g.area):
        near = tree.query(stray, predicate="intersects")
        shared = (
            shapely.length(shapely.intersection(stray.boundary, shapely.boundary(mains[near])))
            if near.size
            else np.zeros(0)
        )
        if near.size and shared.max() > 0:
            target = int(near[int(np.argmax(shared))])
        else:
            target = int(tree.query_nearest(stray)[0])
        mains[target] = _polygonal(shapely.union(mains[target], stray))
    return mains


def _partition(parent: Geom, n: int, rng: np.random.Generator, lloyd: int = 2) -> np.ndarray:
    """Cut ``parent`` into exactly ``n`` cells (Lloyd-relaxed Voronoi, clipped)."""
    if n <= 1:
        return np.array([parent], dtype=object)
    for _attempt in range(5):
        points = _sample_points(parent, n, rng)
        try:
            for _ in range(lloyd):
                points = _cell_anchors(_voronoi_cells(points, parent))
            cells = _merge_stray_parts(_voronoi_cells(points, parent))
        except ValueError:
            continue
        if len(cells) == n and shapely.is_valid(cells).all():
            return cells
    raise RuntimeError(f"could not partition a polygon into {n} cells")


def _reading_order(cells: np.ndarray) -> np.ndarray:
    """Indices ordering cells in rows from north to south, west to east within a row."""
    xy = _cell_anchors(cells)
    xmin, ymin, xmax, ymax = shapely.total_bounds(cells)
    row_height = math.sqrt(max((xmax - xmin) * (ymax - ymin), 1e-12) / max(len(cells), 1)) * 1.5
    rows = np.floor((ymax - xy[:, 1]) / row_height)
    return np.lexsort((xy[:, 0], rows))


def _allocate(weights: Sequence[float], total: int, minimum: int) -> np.ndarray:
    """Integers summing to ``total``: ``minimum`` each, the rest by largest remainder."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    minimum = min(minimum, total // max(n, 1))
    base = np.full(n, minimum, dtype=np.int64)
    rest = total - base.sum()
    share = w / w.sum() * rest if w.sum() > 0 else np.full(n, rest / n)
    floor = np.floor(share).astype(np.int64)
    left = int(rest - floor.sum())
    order = np.lexsort((np.arange(n), -(share - floor)))
    floor[order[:left]] += 1
    return base + floor


def _blob(x: float, y: float, r: float, rng: np.random.Generator) -> Polygon:
    """A smooth irregular disc of mean radius ``r`` around (x, y)."""
    theta = np.linspace(0, 2 * np.pi, 97)[:-1]
    radius = np.ones_like(theta)
    for k in range(2, 6):
        radius += rng.uniform(0.03, 0.07) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    return Polygon(
        np.column_stack((x + r * radius * np.cos(theta), y + r * radius * np.sin(theta)))
    )


def _city_outline(centers: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> Polygon:
    """An organic outline: union of noisy discs around the districts, closed, area ≈ total."""
    shapes = [_blob(cx, cy, 1.0, rng) for cx, cy in centers]
    base_r = np.sqrt(targets / np.pi)

    def outline(scale: float) -> Polygon:
        discs = [
            shapely.affinity.scale(s, r * scale, r * scale, origin=(cx, cy))
            for s, r, (cx, cy) in zip(shapes, base_r, centers, strict=True)
        ]
        merged = shapely.union_all(discs).buffer(4.0, 16).buffer(-4.0, 16)
        largest = max(_polygon_parts(merged), key=lambda p: p.area)
        return Polygon(largest.exterior)

    lo, hi = 0.8, 1.6
    for _ in range(14):
        mid = (lo + hi) / 2
        if outline(mid).area < targets.sum():
            lo = mid
        else:
            hi = mid
    return outline((lo + hi) / 2)


def _atom_graph(atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of atoms that touch."""
    tree = shapely.STRtree(atoms)
    i, j = tree.query(atoms, predicate="intersects")
    keep = i < j
    return i[keep], j[keep]


def _components(labels: np.ndarray, ei: np.ndarray, ej: np.ndarray) -> np.ndarray:
    """Connected-component id per atom over edges joining atoms of the same label."""
    parent = np.arange(len(labels))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    same = labels[ei] == labels[ej]
    for a, b in zip(ei[same].tolist(), ej[same].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    return np.array([find(a) for a in range(len(labels))])


def _make_contiguous(
    labels: np.ndarray, areas: np.ndarray, ei: np.ndarray, ej: np.ndarray
) -> np.ndarray:
    """Give every atom outside its label's largest component to its most common neighbour."""
    labels = labels.copy()
    for _ in range(20):
        comp = _components(labels, ei, ej)
        comp_area = np.bincount(comp, weights=areas, minlength=len(labels))
        main: dict[int, int] = {}
        for c in np.unique(comp):
            lab = int(labels[c])
            if lab not in main or comp_area[c] > comp_area[main[lab]]:
                main[lab] = int(c)
        stray = np.array([main[int(labels[a])] != comp[a] for a in range(len(labels))])
        if not stray.any():
            return labels
        new = labels.copy()
        for a in np.flatnonzero(stray):
            nbrs = np.concatenate((ej[ei == a], ei[ej == a]))
            other = labels[nbrs][labels[nbrs] != labels[a]]
            if other.size:
                vals, counts = np.unique(other, return_counts=True)
                new[a] = vals[np.argmax(counts)]
        labels = new
    return labels


def _demo_districts(
    specs: Sequence[DistrictSpec], plane: _Plane, rng: np.random.Generator
) -> list[Geom]:
    """District polygons (km plane) tiling an organic city outline, fitted to target areas."""
    cx, cy = plane.xy([s.lon for s in specs], [s.lat for s in specs])
    centers = np.column_stack((cx, cy))
    targets = np.array([s.area_km2 for s in specs], dtype=np.float64)
    outline = _city_outline(centers, targets, rng)

    # Atoms: Voronoi cells of points denser around small (urban) districts.
    seeds = [_sample_points(outline, 600, rng)]
    for (x, y), target in zip(centers, targets, strict=True):
        k = 60 + int(2400 * target / targets.sum())
        r = math.sqrt(target / math.pi) * 1.1
        disc = outline.intersection(shapely.Point(x, y).buffer(r, 16))
        seeds.append(_sample_points(_polygonal(disc), k, rng))
    atoms = _merge_stray_parts(_voronoi_cells(np.concatenate(seeds), outline))
    atom_xy = _cell_anchors(atoms)
    atom_area = shapely.area(atoms)

    # Smooth domain warp so borders wander instead of following Apollonius circles.
    warped = atom_xy.copy()
    for axis in (0, 1):
        for low, high, amp in ((0.05, 0.15, 0.6), (0.05, 0.15, 0.6), (0.4, 0.8, 0.3)):
            freq = rng.uniform(low, high, 2) * rng.choice([-1.0, 1.0], 2)
            warped[:, axis] += amp * np.sin(atom_xy @ freq + rng.uniform(0, 2 * np.pi))

    # Multiplicatively weighted distance |p - site| / rho: fit rho to the target areas
    # and move the sites so the district centroids approach the given points. The
    # iteration is not monotone, so keep the best labelling seen.
    sites = centers.copy()
    rho = np.sqrt(targets)
    best_labels, best_score = None, np.inf
    iterations = 300
    for it in range(iterations):
        dist = np.sqrt(((warped[:, None, :] - sites[None, :, :]) ** 2).sum(axis=2))
        labels = np.argmin(dist / rho[None, :], axis=1)
        got = np.bincount(labels, weights=atom_area, minlength=len(specs))
        offset = 0.0
        for i in range(len(specs)):
            mine = labels == i
            if mine.any():
                actual = np.average(atom_xy[mine], axis=0, weights=atom_area[mine])
                offset = max(offset, float(np.hypot(*(centers[i] - actual))))
                sites[i] += 0.1 * (centers[i] - actual)
        score = float(np.max(np.abs(got / targets - 1))) + offset / 20.0
        if score < best_score:
            best_labels, best_score = labels, score
        step = 0.2 * (1 - it / iterations) + 0.02
        rho *= (targets / np.maximum(got, 1e-3)) ** step
    assert best_labels is not None
    ei, ej = _atom_graph(atoms)
    labels = _make_contiguous(best_labels, atom_area, ei, ej)

    districts: list[Geom] = []
    for i in range(len(specs)):
        merged = shapely.union_all(atoms[labels == i])
        districts.append(_drop_tiny_holes(_polygonal(merged)))
    return districts


def _drop_tiny_holes(geom: Geom, min_area: float = 1e-6) -> Geom:
    """Remove interior rings smaller than ``min_area`` (overlay noise)."""
    polys = []
    for p in _polygon_parts(geom):
        holes = [h for h in p.interiors if Polygon(h).area >= min_area]
        polys.append(Polygon(p.exterior, holes))
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


@dataclass(frozen=True)
class _District:
    """Input of the street/grid generator: one district polygon in the km plane."""

    district_id: str
    name: str
    polygon: Geom
    weight: float  # relative number of grids (population-ish)
    street_names: tuple[str, ...] | None = None  # None → generated names and count


def _street_count(area: float) -> int:
    return int(np.clip(round(math.sqrt(area) / 3.5), 4, 18))


def _made_up_names(n: int, rng: np.random.Generator, taken: set[str], rural: bool) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        a, b = rng.choice(len(_NAME_SYLLABLES), 2, replace=False)
        suffix = "镇" if rural and rng.random() < 0.35 else "街道"
        name = _NAME_SYLLABLES[a] + _NAME_SYLLABLES[b] + suffix
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _build_city(
    city_id: str,
    city_name: str,
    districts: Sequence[_District],
    n_grids: int,
    plane: _Plane,
    rng: np.random.Generator,
) -> City:
    """Generate streets and exactly ``n_grids`` grids inside the districts; return the City."""
    counts = [
        len(d.street_names) if d.street_names else _street_count(d.polygon.area) for d in districts
    ]
    if sum(counts) > n_grids:  # tiny cities: fewer streets so every street has a grid
        counts = list(_allocate([d.polygon.area for d in districts], n_grids, 1))
        counts = [max(1, c) for c in counts]
    district_grids = _allocate(
        [d.weight for d in districts], n_grids, MIN_GRIDS_PER_STREET * max(counts)
    )
    names_taken: set[str] = set()
    rows: list[tuple[str, str, str | None, str, str | None, str | None]] = []
    geoms: list[Geom] = []
    city_km = shapely.union_all([d.polygon for d in districts])
    rows.append((city_id, "city", None, city_name, None, None))
    geoms.append(city_km)
    for d, n_streets, d_grids in zip(districts, counts, district_grids, strict=True):
        n_streets = min(n_streets, int(d_grids))
        streets = _partition(d.polygon, n_streets, rng)
        streets = streets[_reading_order(streets)]
        if d.street_names and len(d.street_names) == n_streets:
            street_names = list(d.street_names)
        else:
            rural = d.polygon.area > 300
            street_names = _made_up_names(n_streets, rng, names_taken, rural)
        rows.append((d.district_id, "district", city_id, d.name, d.district_id, None))
        geoms.append(d.polygon)
        per_street = _allocate(shapely.area(streets), int(d_grids), MIN_GRIDS_PER_STREET)
        width = max(3, len(str(n_streets)))
        for s, (street, s_name, s_grids) in enumerate(
            zip(streets, street_names, per_street, strict=True), start=1
        ):
            street_id = f"{d.district_id}-{s:0{width}d}"
            rows.append((street_id, "street", d.district_id, s_name, d.district_id, street_id))
            geoms.append(street)
            cells = _partition(street, int(s_grids), rng)
            cells = cells[_reading_order(cells)]
            g_width = max(3, len(str(int(s_grids))))
            for g, cell in enumerate(cells, start=1):
                grid_id = f"{street_id}-{g:0{g_width}d}"
                rows.append(
                    (grid_id, "grid", street_id, f"{s_name}第{g}网格", d.district_id, street_id)
                )
                geoms.append(cell)
    lonlat = plane.to_lonlat(np.array(geoms, dtype=object))
    return _city_from_rows(city_id, rows, lonlat)


def demo_city(seed: int = 2026, n_grids: int = 12545) -> City:
    """The deterministic Nanjing-scale demo city (same seed and count → same city)."""
    if n_grids < sum(len(s.streets) for s in NANJING):
        raise ValueError(f"n_grids must be at least the number of streets, got {n_grids}")
    rng = np.random.default_rng([seed, CACHE_VERSION])
    plane = _Plane(118.80, 31.92)
    polygons = _demo_districts(NANJING, plane, rng)
    districts = [
        _District(s.adcode, s.name, poly, s.population_k, s.streets)
        for s, poly in zip(NANJING, polygons, strict=True)
    ]
    return _build_city(NANJING_ID, NANJING_NAME, districts, n_grids, plane, rng)
