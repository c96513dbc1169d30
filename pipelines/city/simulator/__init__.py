"""Realistic, deterministic live feeds for demos, tests and load tests.

A :class:`Simulator` owns a roster of grid workers, a camera registry and a simulated
clock. ``advance(until_ms)`` returns every event with ``ts`` in (clock, until_ms] as
``(feed, payload)`` pairs sorted by time; nothing here talks to Redis or SQL.

Determinism: all randomness comes from one ``numpy.random.Generator`` seeded from the
settings, and the simulation runs internally in fixed one-minute chunks aligned on
``start_ms``. The same seed and start therefore give identical bytes, whatever the
sequence of ``advance`` calls.

Local time is Asia/Shanghai (UTC+8, no daylight saving), used for working hours and the
daily rhythm of incidents and video alerts.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import io
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import shapely

from pipelines.city import geography as geo
from pipelines.settings import DeadlineSettings, SimulateSettings
from pipelines.spine.events import FEEDS, LEVELS

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LOCAL_OFFSET_H = 8.0  # Asia/Shanghai
CHUNK_MS = MINUTE_MS  # internal simulation step (fixed → output independent of calls)

M_PER_DEG_LAT = 110_540.0
M_PER_DEG_LON_EQ = 111_320.0

# (feed, payload, expected dead-letter reason or None)
Labelled = tuple[str, bytes, str | None]

# ---------------------------------------------------------------- vocabulary / mixes

WORKER_TYPES = ("full_time", "part_time", "political_legal", "emergency", "safety_supervision")
WORKER_TYPE_P = (0.70, 0.12, 0.07, 0.05, 0.06)
NIGHT_SHIFT_P = (0.05, 0.03, 0.25, 0.40, 0.10)  # per worker type

CATEGORY_P = {
    "dispute": 0.10,
    "safety_hazard": 0.12,
    "public_order": 0.07,
    "sanitation": 0.28,
    "city_management": 0.24,
    "livelihood": 0.12,
    "fire": 0.02,
    "other": 0.05,
}
SOURCE_P = {"worker": 0.55, "hotline": 0.25, "resident": 0.12, "camera": 0.08}
SEVERITY_P = (0.55, 0.30, 0.11, 0.04)
LEVEL_P = (0.74, 0.12, 0.09, 0.05)  # level at which an incident is handled/closed
OVERDUE_SHARE = 0.07
RETURN_SHARE = 0.06
LABEL_P = {
    "illegal_parking": 0.31,
    "garbage_overflow": 0.21,
    "street_vending": 0.18,
    "crowd_gathering": 0.13,
    "intrusion": 0.09,
    "fall": 0.07,
    "smoke_fire": 0.01,
}
NO_LOCATION_SHARE = 0.30  # video alerts without lon/lat (camera registry fallback)
STRAY_SHARE = 0.03  # patrol legs that go into a neighbouring grid
POOL_K = 8  # patrol waypoints per grid

# Relative incident rate per local hour 0..23 (normalised to mean 1 below).
_HOURLY = np.array(
    [
        0.15,
        0.10,
        0.08,
        0.08,
        0.10,
        0.20,
        0.45,
        0.90,
        1.50,
        1.90,
        2.00,
        1.70,
        1.10,
        1.20,
        1.60,
        1.80,
        1.60,
        1.30,
        0.90,
        0.70,
        0.60,
        0.50,
        0.35,
        0.22,
    ]
)
HOURLY_INCIDENTS = _HOURLY / _HOURLY.mean()
HOURLY_VIDEO = (0.5 + 0.5 * HOURLY_INCIDENTS) / (0.5 + 0.5 * HOURLY_INCIDENTS).mean()

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "dispute": (
        "邻里噪音纠纷",
        "楼上漏水引发邻里矛盾",
        "物业费纠纷",
        "停车位争执",
        "家庭矛盾需调解",
    ),
    "safety_hazard": ("楼道堆放杂物", "电动车楼道充电", "井盖破损", "广告牌松动", "燃气管道老化"),
    "public_order": ("夜间聚集喧哗", "可疑人员徘徊", "酒后滋事", "无证摊贩占道经营"),
    "sanitation": ("垃圾桶满溢", "道路积水有垃圾", "建筑垃圾乱堆", "公厕卫生差", "小区绿化带垃圾"),
    "city_management": ("机动车违停", "占道经营", "违章搭建", "共享单车乱停", "路灯损坏"),
    "livelihood": ("独居老人需要帮扶", "停水咨询", "低保申请咨询", "小区电梯故障"),
    "fire": ("居民楼冒烟", "电动车起火", "厨房油锅起火", "垃圾堆着火"),
    "other": ("群众求助", "流浪动物", "其他事项"),
}
DESC_TAIL = ("，请尽快处理", "，群众反映强烈", "", "，已现场拍照", "，需协调相关部门")

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍建国红梅志文斌辉鹏俊宇浩晨欣怡婷"

# Malformed-event kinds, cycled in this order, and the reason each should earn.
BAD_KINDS: tuple[tuple[str, str], ...] = (
    ("invalid_json", "malformed"),
    ("json_array", "malformed"),
    ("missing_field", "missing_field"),
    ("wrong_type", "bad_type"),
    ("out_of_range", "out_of_range"),
    ("outside_city", "outside_city"),
    ("unknown_category", "unknown_category"),
    ("future_timestamp", "future_timestamp"),
    ("too_large", "too_large"),
    ("duplicate", "duplicate"),
    ("bad_transition", "bad_transition"),
)
COORD_DECIMALS = 6  # published precision of lon/lat (~0.1 m)
OUTSIDE_LON, OUTSIDE_LAT = 116.4, 39.9  # Beijing: valid WGS-84, outside the city

# ---------------------------------------------------------------- pure helpers


def local_hour(ts_ms: np.ndarray | int) -> np.ndarray:
    """Fractional local (Asia/Shanghai) hour of day for epoch-millisecond times."""
    return (np.asarray(ts_ms, dtype=np.float64) / HOUR_MS + LOCAL_OFFSET_H) % 24.0


def hourly_rate(profile: np.ndarray, ts_ms: np.ndarray | int) -> np.ndarray:
    """Linear interpolation of a 24-value hourly profile at the given times."""
    h = local_hour(ts_ms)
    lo = np.floor(h).astype(np.int64) % 24
    frac = h - np.floor(h)
    return profile[lo] * (1 - frac) + profile[(lo + 1) % 24] * frac


def sample_in_grids(
    geoms: np.ndarray, bounds: np.ndarray, idx: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points inside ``geoms[idx]`` (vectorised rejection sampling)."""
    n = len(idx)
    x = np.empty(n)
    y = np.empty(n)
    todo = np.arange(n)
    for _ in range(60):
        if len(todo) == 0:
            break
        b = bounds[idx[todo]]
        # Rounded as published (6 decimals, ~0.1 m), so the point tested is the point sent.
        cx = np.round(b[:, 0] + rng.random(len(todo)) * (b[:, 2] - b[:, 0]), COORD_DECIMALS)
        cy = np.round(b[:, 1] + rng.random(len(todo)) * (b[:, 3] - b[:, 1]), COORD_DECIMALS)
        ok = shapely.contains_xy(geoms[idx[todo]], cx, cy)
        x[todo[ok]] = cx[ok]
        y[todo[ok]] = cy[ok]
        todo = todo[~ok]
    if len(todo):  # slivers: fall back to a guaranteed interior point
        pts = shapely.point_on_surface(geoms[idx[todo]])
        x[todo] = shapely.get_x(pts)
        y[todo] = shapely.get_y(pts)
    return x, y


def plan_lifecycle(
    rng: np.random.Generator, deadline_h: float, source: str
) -> list[tuple[int, str, str]]:
    """Plan one incident: ``[(offset_ms, step, level), ...]`` starting with "reported".

    Uses only allowed transitions; ~74% close at grid level; ~7% take longer than the
    category deadline; a few are returned after a failed verification.
    """
    level = LEVELS[int(rng.choice(len(LEVELS), p=LEVEL_P))]
    overdue = rng.random() < OVERDUE_SHARE
    if overdue:
        total_h = deadline_h * rng.uniform(1.05, 2.0)
    else:
        total_h = deadline_h * (0.02 + 0.93 * rng.beta(1.6, 4.0))
    seq: list[tuple[str, str, float]]  # (step, level, relative duration weight)
    if source == "worker" and level == "grid" and rng.random() < 0.35:
        # Found and fixed on the spot (随手办).
        seq = [("handling", "grid", 0.5), ("resolved", "grid", 3.0), ("closed", "grid", 1.0)]
    else:
        seq = [("accepted", "grid", 0.6)]
        if level != "grid":
            seq += [("escalated", level, 1.0), ("accepted", level, 0.6)]
        if level != "grid" or rng.random() < 0.6:
            seq.append(("dispatched", level, 0.8))
        seq += [("handling", level, 1.5), ("resolved", level, 6.0)]
        if rng.random() < RETURN_SHARE:
            seq += [("returned", level, 0.8), ("handling", level, 0.6), ("resolved", level, 3.0)]
        if rng.random() < 0.9:
            seq.append(("verified", level, 1.5))
        seq.append(("closed", level, 0.6))
    w = np.array([s[2] for s in seq]) * rng.gamma(2.0, 1.0, len(seq))
    gaps = np.maximum(w / w.sum() * total_h * HOUR_MS, 1000.0).astype(np.int64)
    offsets = np.cumsum(gaps)
    return [(0, "reported", "grid")] + [
        (int(o), s[0], s[1]) for o, s in zip(offsets, seq, strict=True)
    ]


def make_bad(kind: str, feed: str, event: dict[str, Any]) -> tuple[str, bytes]:
    """A deliberately bad payload of ``kind`` built from a good ``event`` of ``feed``.

    Handles the kinds a payload alone can show (not duplicate / bad_transition).
    ``event`` must already carry fresh ids so the bad event touches nothing real.
    """
    ev = dict(event)
    if kind == "invalid_json":
        raw = orjson.dumps(ev)
        return feed, raw[: len(raw) // 2] + b"\xff\xfe"  # truncated, not even UTF-8
    if kind == "json_array":
        return feed, b"[" + orjson.dumps(ev) + b"]"
    if kind == "missing_field":
        ev.pop("ts", None)
    elif kind == "wrong_type":
        ev["lat"] = "north"
    elif kind == "out_of_range":
        ev["lon"], ev["lat"] = 200.0, 95.0
    elif kind == "outside_city":
        ev["lon"], ev["lat"] = OUTSIDE_LON, OUTSIDE_LAT
    elif kind == "unknown_category":
        if feed == "reports":
            ev["category"] = "alien_invasion"
        elif feed == "video":
            ev["label"] = "ufo_sighting"
        else:
            raise ValueError("locations have no category")
    elif kind == "future_timestamp":
        ev["ts"] = int(ev["ts"]) + 100 * 365 * DAY_MS  # future whenever it is processed
    elif kind == "too_large":
        ev["description"] = "巡" * 6000  # 18,000 bytes of UTF-8
    else:
        raise ValueError(f"unknown bad kind {kind!r}")
    return feed, orjson.dumps(ev)


def _pick(rng: np.random.Generator, table: dict[str, float], n: int) -> np.ndarray:
    keys = np.array(list(table))
    p = np.array(list(table.values()))
    return keys[rng.choice(len(keys), n, p=p / p.sum())]


def _csr(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Group row numbers by integer key: (order, offsets) so rows of k are
    ``order[offsets[k]:offsets[k+1]]``."""
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n_keys)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return order, offsets


def _ndjson_lines(df: pl.DataFrame) -> list[bytes]:
    if df.height == 0:
        return []
    buf = io.BytesIO()
    df.write_ndjson(buf)
    return buf.getvalue().split(b"\n")[: df.height]


# ---------------------------------------------------------------- simulator state


@dataclass
class _Workers:
    """Mutable per-worker arrays (index = roster row)."""

    grid: np.ndarray  # home grid index
    street: np.ndarray  # street index of the home grid
    x: np.ndarray
    y: np.ndarray
    tx: np.ndarray  # current waypoint
    ty: np.ndarray
    leg_stray: np.ndarray  # current leg crosses into / out of a neighbour grid
    away: np.ndarray  # waypoint lies in a neighbour grid
    v: np.ndarray  # walking speed, m/s
    next_ping: np.ndarray  # int64 ms
    last_ping: np.ndarray  # int64 ms
    online: np.ndarray  # phone on (when on duty)
    next_switch: np.ndarray  # int64 ms: next online/offline toggle
    shift_start: np.ndarray  # local hour
    shift_len: np.ndarray  # hours
    battery0: np.ndarray
    drain: np.ndarray  # % per hour on shift


@dataclass
class _Batch:
    """Time-ordered events as parallel lists (cheap to slice, extend and zip)."""

    ts: list[int]
    feeds: list[str]
    payloads: list[bytes]
    labels: list[str | None]

    def extend(self, other: _Batch) -> None:
        self.ts.extend(other.ts)
        self.feeds.extend(other.feeds)
        self.payloads.extend(other.payloads)
        self.labels.extend(other.labels)

    def slice(self, a: int, b: int) -> _Batch:
        return _Batch(self.ts[a:b], self.feeds[a:b], self.payloads[a:b], self.labels[a:b])

    def insert(self, i: int, ts: int, feed: str, payload: bytes, label: str | None) -> None:
        self.ts.insert(i, ts)
        self.feeds.insert(i, feed)
        self.payloads.insert(i, payload)
        self.labels.insert(i, label)


@dataclass
class _Incident:
    incident_id: str
    category: str
    severity: int
    source: str
    reporter_id: str
    grid: int
    lon: float
    lat: float
    description: str
    handler_id: str


class Simulator:
    """Deterministic simulation of the three feeds for one city.

    ``location_keep`` (keyword, optional) overrides the share of location pings kept
    (the ``rate`` cap computes it otherwise); ``generate`` uses it.
    """

    def __init__(
        self,
        city: geo.City,
        cfg: SimulateSettings,
        deadlines: DeadlineSettings,
        start_ms: int,
        *,
        location_keep: float | None = None,
    ) -> None:
        self.city = city
        self.cfg = cfg
        self.deadlines = deadlines
        self.start_ms = int(start_ms)
        self.rng = np.random.default_rng([int(cfg.seed), self.start_ms])
        self._id_prefix = f"{int(cfg.seed) & 0xFFFF:x}{self.start_ms // 1000:x}"
        self._clock = self.start_ms
        self._gen_ms = self.start_ms
        self._buffer: deque[_Batch] = deque()
        self._heap: list[tuple[int, int, str, str, _Incident]] = []
        self._video_heap: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = 0
        self._n_event = 0
        self._n_incident = 0
        self._n_alert = 0
        self._bad_counter = 0
        self._recent: deque[tuple[str, bytes]] = deque(maxlen=5000)  # report/video payloads
        self._closed: deque[tuple[int, dict[str, Any]]] = deque(maxlen=5000)
        self.injected: deque[tuple[str, bytes, str]] = deque(maxlen=10_000)
        self.anomalies: list[dict[str, Any]] = []
        self._anomaly_days = 0

        self._setup_geography()
        self.roster = self._build_roster()
        self.cameras = self._build_cameras()
        self._w = self._init_workers()
        self._keep = self._location_keep() if location_keep is None else float(location_keep)
        self._choose_anomaly_streets()

    # ------------------------------------------------------------ setup

    def _setup_geography(self) -> None:
        grids = self.city.grids
        self.n_grids = grids.height
        self.grid_ids = grids["grid_id"].to_numpy().astype(object)
        self.grid_names = grids["name"].to_list() if "name" in grids.columns else None
        streets = grids["street_id"].to_numpy().astype(str)
        self.street_ids, self.grid_street = np.unique(streets, return_inverse=True)
        districts = grids["district_id"].to_numpy().astype(str)
        self.district_ids, self.grid_district = np.unique(districts, return_inverse=True)
        self.geoms = np.asarray(self.city.grid_geoms)
        self.bounds = shapely.bounds(self.geoms)
        self.index = geo.GridIndex(self.city)
        area = np.maximum(grids["area_km2"].to_numpy().astype(np.float64), 1e-3)
        dens = (1.0 / area) ** 0.8
        self.density = dens / dens.sum()
        lat0 = float(np.mean(grids["lat"].to_numpy()))
        self.m_per_deg_lon = M_PER_DEG_LON_EQ * np.cos(np.radians(lat0))
        # Patrol waypoints: POOL_K interior points per grid.
        idx = np.repeat(np.arange(self.n_grids), POOL_K)
        px, py = sample_in_grids(self.geoms, self.bounds, idx, self.rng)
        self.pool_x = px.reshape(self.n_grids, POOL_K)
        self.pool_y = py.reshape(self.n_grids, POOL_K)
        self.neighbour = self._neighbours()

    def _neighbours(self) -> np.ndarray:
        """One neighbouring grid per grid (or -1), found by probing past its edge."""
        cx = self.pool_x[:, 0]
        cy = self.pool_y[:, 0]
        w = self.bounds[:, 2] - self.bounds[:, 0]
        h = self.bounds[:, 3] - self.bounds[:, 1]
        nb = np.full(self.n_grids, -1, dtype=np.int64)
        for _ in range(6):
            todo = np.flatnonzero(nb < 0)
            if len(todo) == 0:
                break
            ang = self.rng.random(len(todo)) * 2 * np.pi
            px = cx[todo] + np.cos(ang) * w[todo] * 0.8
            py = cy[todo] + np.sin(ang) * h[todo] * 0.8
            got = np.asarray(self.index.assign(px, py), dtype=np.int64)
            ok = (got >= 0) & (got != todo)
            nb[todo[ok]] = got[ok]
        return nb

    def _build_roster(self) -> pl.DataFrame:
        n, rng = int(self.cfg.workers), self.rng
        if n >= self.n_grids:
            extra = rng.choice(self.n_grids, n - self.n_grids, p=self.density)
            grid = np.concatenate([np.arange(self.n_grids), extra])
        else:
            grid = rng.choice(self.n_grids, n, replace=False, p=self.density)
        grid = np.sort(grid)
        self.worker_grid = grid
        surname = rng.integers(0, len(SURNAMES), n)
        g1 = rng.integers(0, len(GIVEN), n)
        g2 = rng.integers(-len(GIVEN) // 2, len(GIVEN), n)  # negative → one-character name
        names = [
            SURNAMES[s] + GIVEN[a] + (GIVEN[b] if b >= 0 else "")
            for s, a, b in zip(surname.tolist(), g1.tolist(), g2.tolist(), strict=True)
        ]
        wtype = rng.choice(len(WORKER_TYPES), n, p=WORKER_TYPE_P)
        self.worker_type = wtype
        prefix = rng.choice(np.array(["138", "139", "137", "150", "151", "158", "188", "189"]), n)
        tail = rng.integers(0, 10_000, n)
        self.worker_ids = np.array([f"W{i + 1:06d}" for i in range(n)], dtype=object)
        self._wid_series = pl.Series("worker_id", self.worker_ids.tolist(), dtype=pl.String)
        return pl.DataFrame(
            {
                "worker_id": self.worker_ids.tolist(),
                "name": names,
                "type": [WORKER_TYPES[t] for t in wtype.tolist()],
                "grid_id": self.grid_ids[grid].tolist(),
                "phone_masked": [
                    f"{p}****{t:04d}" for p, t in zip(prefix.tolist(), tail.tolist(), strict=True)
                ],
            },
            schema={
                "worker_id": pl.String,
                "name": pl.String,
                "type": pl.String,
                "grid_id": pl.String,
                "phone_masked": pl.String,
            },
        )

    def _build_cameras(self) -> pl.DataFrame:
        n, rng = int(self.cfg.cameras), self.rng
        p = self.density**1.2
        grid = np.sort(rng.choice(self.n_grids, n, p=p / p.sum()))
        x, y = sample_in_grids(self.geoms, self.bounds, grid, rng)
        self.camera_grid = grid
        self.camera_x = np.round(x, 6)
        self.camera_y = np.round(y, 6)
        self.camera_ids = np.array([f"C{i + 1:05d}" for i in range(n)], dtype=object)
        self._cam_order, self._cam_off = _csr(grid, self.n_grids)
        self._wrk_order, self._wrk_off = _csr(self.worker_grid, self.n_grids)
        return pl.DataFrame(
            {
                "camera_id": self.camera_ids.tolist(),
                "lon": self.camera_x,
                "lat": self.camera_y,
                "grid_id": self.grid_ids[grid].tolist(),
            },
            schema={
                "camera_id": pl.String,
                "lon": pl.Float64,
                "lat": pl.Float64,
                "grid_id": pl.String,
            },
        )

    def _init_workers(self) -> _Workers:
        n, rng, cfg = len(self.worker_grid), self.rng, self.cfg
        g = self.worker_grid
        k = rng.integers(0, POOL_K, n)
        night = rng.random(n) < np.asarray(NIGHT_SHIFT_P)[self.worker_type]
        shift_start = np.where(night, 19.0 + rng.uniform(-1, 0.5, n), 8.0 + rng.uniform(-1, 0.5, n))
        off = float(np.clip(cfg.offline_share, 0.0, 0.99))
        online = rng.random(n) >= off
        mean_interval = (cfg.ping_min_s + cfg.ping_max_s) / 2 * 1000
        return _Workers(
            grid=g,
            street=self.grid_street[g],
            x=self.pool_x[g, k].copy(),
            y=self.pool_y[g, k].copy(),
            tx=self.pool_x[g, k].copy(),  # first ping picks a checked leg
            ty=self.pool_y[g, k].copy(),
            leg_stray=np.zeros(n, dtype=bool),
            away=np.zeros(n, dtype=bool),
            v=self._speeds(n),
            next_ping=self.start_ms + (rng.random(n) * mean_interval).astype(np.int64) + 1,
            last_ping=np.full(n, self.start_ms, dtype=np.int64),
            online=online,
            next_switch=self.start_ms + self._episode_ms(online, n),
            shift_start=shift_start,
            shift_len=np.where(night, 12.0, 10.0),
            battery0=rng.uniform(75, 100, n),
            drain=rng.uniform(4.0, 8.0, n),
        )

    def _speeds(self, n: int) -> np.ndarray:
        linger = self.rng.random(n) < 0.2
        return np.where(linger, self.rng.uniform(0.0, 0.2, n), self.rng.uniform(0.4, 1.8, n))

    def _episode_ms(self, online: np.ndarray, n: int) -> np.ndarray:
        """Length of the next online / offline episode (offline mean 30 min)."""
        off = float(np.clip(self.cfg.offline_share, 1e-6, 0.99))
        mean_off = 30 * MINUTE_MS
        mean_on = mean_off * (1 - off) / off
        mean = np.where(online, mean_on, mean_off)
        return (self.rng.exponential(1.0, n) * mean).astype(np.int64) + 1000

    def _location_keep(self) -> float:
        """Share of pings kept so total events/s stay under ``cfg.rate`` (0 = all)."""
        cfg = self.cfg
        if cfg.rate <= 0:
            return 1.0
        other = (cfg.incidents_per_day * 6.5 + cfg.video_alerts_per_day) / 86_400
        natural = len(self.worker_grid) * 2.0 / (cfg.ping_min_s + cfg.ping_max_s)
        return float(np.clip((cfg.rate - other) / max(natural, 1e-9), 1e-4, 1.0))

    def _choose_anomaly_streets(self) -> None:
        ns = len(self.street_ids)
        cams = np.bincount(self.grid_street[self.camera_grid], minlength=ns)
        wrk = np.bincount(self.grid_street[self.worker_grid], minlength=ns)
        self.fire_street = int(np.argmax(cams))
        cand = [s for s in np.argsort(-wrk, kind="stable")[:6].tolist() if s != self.fire_street]
        self.surge_street = int(cand[int(self.rng.integers(0, min(5, len(cand))))]) if cand else 0
        rest = [
            s
            for s in np.argsort(-wrk, kind="stable").tolist()
            if s not in (self.fire_street, self.surge_street) and wrk[s] >= 2
        ]
        self.gap_street = int(rest[int(self.rng.integers(0, min(8, len(rest))))]) if rest else -1
        sg = np.flatnonzero(self.grid_street == self.surge_street)
        p = self.density[sg]
        self._surge_grids, self._surge_p = sg, p / p.sum()
        self._street_share = np.bincount(self.grid_street, weights=self.density, minlength=ns)

    # ------------------------------------------------------------ ids

    def _next_event_id(self) -> str:
        self._n_event += 1
        return f"E{self._id_prefix}{self._n_event:09d}"

    def _next_incident_id(self) -> str:
        self._n_incident += 1
        return f"I{self._id_prefix}{self._n_incident:08d}"

    def _next_alert_id(self) -> str:
        self._n_alert += 1
        return f"V{self._id_prefix}{self._n_alert:08d}"

    def _push(self, ts: int, step: str, level: str, inc: _Incident) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, step, level, inc))

    # ------------------------------------------------------------ public API

    @property
    def clock_ms(self) -> int:
        return self._clock

    def advance(self, until_ms: int) -> list[tuple[str, bytes]]:
        """All events with ts in (clock, until_ms], sorted by ts; moves the clock."""
        part = self._advance(until_ms)
        return list(zip(part.feeds, part.payloads, strict=True))

    def advance_labelled(self, until_ms: int) -> list[Labelled]:
        """Like :meth:`advance`, with each event's expected dead-letter reason (or None)."""
        part = self._advance(until_ms)
        return list(zip(part.feeds, part.payloads, part.labels, strict=True))

    def _advance(self, until_ms: int) -> _Batch:
        until_ms = int(until_ms)
        while self._gen_ms < until_ms:
            t0, t1 = self._gen_ms, self._gen_ms + CHUNK_MS
            self._buffer.append(self._chunk(t0, t1))
            self._gen_ms = t1
        out = _Batch([], [], [], [])
        while self._buffer:
            head = self._buffer[0]
            if not head.ts:  # a quiet minute: nothing to hand out, never block the rest
                self._buffer.popleft()
                continue
            if head.ts[-1] <= until_ms:
                out.extend(self._buffer.popleft())
                continue
            cut = bisect.bisect_right(head.ts, until_ms)
            out.extend(head.slice(0, cut))
            self._buffer[0] = head.slice(cut, len(head.ts))
            break
        self._clock = max(self._clock, until_ms)
        return out

    # ------------------------------------------------------------ one chunk

    def _chunk(self, t0: int, t1: int) -> _Batch:
        self._schedule_anomalies(t1)
        self._incident_arrivals(t0, t1)
        rep_ts, rep_pl = self._due_reports(t1)
        vid_ts, vid_pl = self._video(t0, t1)
        loc_ts, loc_pl = self._locations(t1)
        ts = np.concatenate([np.asarray(rep_ts, np.int64), np.asarray(vid_ts, np.int64), loc_ts])
        feeds = ["reports"] * len(rep_pl) + ["video"] * len(vid_pl) + ["locations"] * len(loc_pl)
        payloads = rep_pl + vid_pl + loc_pl
        n = len(payloads)
        if n == 0:
            return _Batch([], [], [], [])
        if len(rep_pl) + len(vid_pl):
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            pick = order.tolist()
            feeds = [feeds[i] for i in pick]
            payloads = [payloads[i] for i in pick]
        batch = _Batch(ts.tolist(), feeds, payloads, [None] * n)
        share = float(self.cfg.malformed_share)
        if share > 0:
            shift = 0  # bad events already inserted before position j
            for j in np.flatnonzero(self.rng.random(n) < share).tolist():
                k = j + shift
                extra = self._live_bad(batch.ts[k], batch.feeds[k], batch.payloads[k])
                if extra is not None:
                    self.injected.append(extra)
                    batch.insert(k + 1, batch.ts[k], *extra)
                    shift += 1
        # Only now: a duplicate must copy an event that was emitted before it.
        self._recent.extend(zip(["reports"] * len(rep_pl), rep_pl, strict=True))
        self._recent.extend(zip(["video"] * len(vid_pl), vid_pl, strict=True))
        return batch

    # ------------------------------------------------------------ anomalies

    def _schedule_anomalies(self, until_ms: int) -> None:
        """Script each simulated day's anomalies once the clock reaches that day."""
        if not self.cfg.anomalies:
            return
        while self.start_ms + self._anomaly_days * DAY_MS < until_ms:
            day0 = self.start_ms + self._anomaly_days * DAY_MS
            self._anomaly_days += 1
            self.anomalies.append(
                {
                    "kind": "dispute_surge",
                    "area_id": str(self.street_ids[self.surge_street]),
                    "start_ms": day0 + HOUR_MS,
                    "end_ms": day0 + 2 * HOUR_MS,
                    "factor": 8,
                }
            )
            self._schedule_fire(day0 + 90 * MINUTE_MS)
            if self.gap_street >= 0:
                self.anomalies.append(
                    {
                        "kind": "patrol_gap",
                        "area_id": str(self.street_ids[self.gap_street]),
                        "start_ms": day0 + 2 * HOUR_MS,
                        "end_ms": day0 + 5 * HOUR_MS,
                        "workers": int(np.sum(self._w.street == self.gap_street)),
                    }
                )

    def _schedule_fire(self, t0: int) -> None:
        rng = self.rng
        cams = np.flatnonzero(self.grid_street[self.camera_grid] == self.fire_street)
        if len(cams) == 0:
            return
        chosen = np.sort(rng.choice(cams, min(len(cams), 6), replace=False))
        for c in chosen.tolist():
            for _ in range(int(rng.integers(1, 3))):
                ts = t0 + int(rng.integers(0, 9 * MINUTE_MS))
                ev = self._alert(c, "smoke_fire", float(rng.uniform(0.8, 0.99)), ts, True)
                self._seq += 1
                heapq.heappush(self._video_heap, (ts, self._seq, ev))
        c0 = int(chosen[0])
        inc = _Incident(
            incident_id=self._next_incident_id(),
            category="fire",
            severity=3,
            source="camera",
            reporter_id=str(self.camera_ids[c0]),
            grid=int(self.camera_grid[c0]),
            lon=float(self.camera_x[c0]),
            lat=float(self.camera_y[c0]),
            description="多个摄像头发现浓烟，疑似火情",
            handler_id=self._grid_handler(int(self.camera_grid[c0])),
        )
        self._plan(inc, t0 + 3 * MINUTE_MS)
        self.anomalies.append(
            {
                "kind": "fire_cluster",
                "area_id": str(self.street_ids[self.fire_street]),
                "start_ms": t0,
                "end_ms": t0 + 10 * MINUTE_MS,
                "cameras": [str(self.camera_ids[c]) for c in chosen.tolist()],
                "incident_id": inc.incident_id,
            }
        )

    def _in_window(self, kind: str, t: np.ndarray) -> np.ndarray:
        """Whether times fall in the daily window of a scripted anomaly."""
        if not self.cfg.anomalies:
            return np.zeros(np.shape(t), dtype=bool)
        lo, hi = {"dispute_surge": (1, 2), "patrol_gap": (2, 5)}[kind]
        rel = (np.asarray(t, np.int64) - self.start_ms) % DAY_MS
        return (rel >= lo * HOUR_MS) & (rel < hi * HOUR_MS)

    # ------------------------------------------------------------ incidents

    def _grid_handler(self, g: int) -> str:
        a, b = self._wrk_off[g], self._wrk_off[g + 1]
        if b > a:
            return str(self.worker_ids[self._wrk_order[a + int(self.rng.integers(0, b - a))]])
        return f"H-{self.street_ids[self.grid_street[g]]}"

    def _incident_arrivals(self, t0: int, t1: int) -> None:
        rng, cfg = self.rng, self.cfg
        mid = (t0 + t1) // 2
        lam = (
            cfg.incidents_per_day / (DAY_MS / CHUNK_MS) * float(hourly_rate(HOURLY_INCIDENTS, mid))
        )
        n = int(rng.poisson(lam)) if lam > 0 else 0
        grids = rng.choice(self.n_grids, n, p=self.density) if n else np.zeros(0, np.int64)
        cats = _pick(rng, CATEGORY_P, n)
        if self._in_window("dispute_surge", np.array([mid]))[0] and len(self._surge_grids):
            base = lam * CATEGORY_P["dispute"] * self._street_share[self.surge_street]
            extra = int(rng.poisson(max(7 * base, 20 / 60)))
            grids = np.concatenate([grids, rng.choice(self._surge_grids, extra, p=self._surge_p)])
            cats = np.concatenate([cats, np.full(extra, "dispute")])
            n += extra
        if n == 0:
            return
        ts = np.sort(t0 + 1 + rng.integers(0, CHUNK_MS, n))
        x, y = sample_in_grids(self.geoms, self.bounds, grids, rng)
        sources = _pick(rng, SOURCE_P, n)
        sev = rng.choice(4, n, p=SEVERITY_P) + 1
        desc_i = rng.integers(0, 1000, n)
        tail_i = rng.integers(0, len(DESC_TAIL), n)
        for i in range(n):
            g, cat, src = int(grids[i]), str(cats[i]), str(sources[i])
            reporter, src = self._reporter(g, src)
            phrases = DESCRIPTIONS[cat]
            severity = int(sev[i]) if cat != "fire" else max(2, int(sev[i]))
            inc = _Incident(
                incident_id=self._next_incident_id(),
                category=cat,
                severity=severity,
                source=src,
                reporter_id=reporter,
                grid=g,
                lon=round(float(x[i]), 6),
                lat=round(float(y[i]), 6),
                description=phrases[int(desc_i[i]) % len(phrases)] + DESC_TAIL[int(tail_i[i])],
                handler_id=reporter if src == "worker" else self._grid_handler(g),
            )
            self._plan(inc, int(ts[i]))

    def _reporter(self, g: int, source: str) -> tuple[str, str]:
        rng = self.rng
        if source == "worker":
            a, b = self._wrk_off[g], self._wrk_off[g + 1]
            if b > a:
                return str(
                    self.worker_ids[self._wrk_order[a + int(rng.integers(0, b - a))]]
                ), source
            source = "resident"
        if source == "camera":
            a, b = self._cam_off[g], self._cam_off[g + 1]
            if b > a:
                return str(
                    self.camera_ids[self._cam_order[a + int(rng.integers(0, b - a))]]
                ), source
            source = "hotline"
        if source == "hotline":
            return f"12345-{int(rng.integers(0, 10**6)):06d}", source
        return f"R{int(rng.integers(0, 10**8)):08d}", source

    def _plan(self, inc: _Incident, t_report: int) -> None:
        plan = plan_lifecycle(self.rng, self.deadlines.hours(inc.category), inc.source)
        for off, step, level in plan:
            self._push(t_report + off, step, level, inc)

    def _due_reports(self, t1: int) -> tuple[list[int], list[bytes]]:
        ts_out: list[int] = []
        out: list[bytes] = []
        while self._heap and self._heap[0][0] <= t1:
            ts, _, step, level, inc = heapq.heappop(self._heap)
            if level == "grid":
                handler = inc.handler_id
            elif level in ("community", "street"):
                handler = f"H-{self.street_ids[self.grid_street[inc.grid]]}-{level}"
            else:
                handler = f"H-{self.district_ids[self.grid_district[inc.grid]]}"
            ev = {
                "event_id": self._next_event_id(),
                "incident_id": inc.incident_id,
                "ts": ts,
                "step": step,
                "category": inc.category,
                "severity": inc.severity,
                "source": inc.source,
                "reporter_id": inc.reporter_id,
                "handler_id": handler,
                "lon": inc.lon,
                "lat": inc.lat,
                "description": inc.description,
                "level": level,
            }
            if step == "closed":
                self._closed.append((ts, ev))
            ts_out.append(ts)
            out.append(orjson.dumps(ev))
        return ts_out, out

    # ------------------------------------------------------------ video

    def _alert(self, cam: int, label: str, score: float, ts: int, located: bool) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "alert_id": self._next_alert_id(),
            "camera_id": str(self.camera_ids[cam]),
            "label": label,
            "score": round(score, 3),
            "ts": int(ts),
        }
        if located:
            ev["lon"] = float(self.camera_x[cam])
            ev["lat"] = float(self.camera_y[cam])
        return ev

    def _video(self, t0: int, t1: int) -> tuple[list[int], list[bytes]]:
        rng = self.rng
        n_cam = len(self.camera_ids)
        lam = self.cfg.video_alerts_per_day / (DAY_MS / CHUNK_MS)
        lam *= float(hourly_rate(HOURLY_VIDEO, (t0 + t1) // 2))
        n = int(rng.poisson(lam)) if lam > 0 and n_cam else 0
        cams = rng.integers(0, max(n_cam, 1), n)
        labels = _pick(rng, LABEL_P, n)
        scores = 0.5 + 0.49 * rng.beta(2.0, 1.5, n)
        located = rng.random(n) >= NO_LOCATION_SHARE
        ts = np.sort(t0 + 1 + rng.integers(0, CHUNK_MS, n))
        items = [
            (
                int(ts[i]),
                self._alert(
                    int(cams[i]), str(labels[i]), float(scores[i]), int(ts[i]), bool(located[i])
                ),
            )
            for i in range(n)
        ]
        while self._video_heap and self._video_heap[0][0] <= t1:
            ts_s, _, ev = heapq.heappop(self._video_heap)
            items.append((ts_s, ev))
        items.sort(key=lambda it: it[0])
        return [t for t, _ in items], [orjson.dumps(ev) for _, ev in items]

    # ------------------------------------------------------------ locations

    def _locations(self, t1: int) -> tuple[np.ndarray, list[bytes]]:
        """Emit every due ping up to t1 (vectorised over workers, a few rounds)."""
        w, cfg, rng = self._w, self.cfg, self.rng
        idx_parts: list[np.ndarray] = []
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("ts", "lon", "lat", "acc", "spd", "bat")
        }
        lo_ms, hi_ms = cfg.ping_min_s * 1000, cfg.ping_max_s * 1000
        for _ in range(1000):
            due = np.flatnonzero(w.next_ping <= t1)
            if len(due) == 0:
                break
            t = w.next_ping[due]
            self._toggle_online(due, t)
            h = local_hour(t)
            since = (h - w.shift_start[due]) % 24.0
            on_duty = since < w.shift_len[due]
            gap = (w.street[due] == self.gap_street) & self._in_window("patrol_gap", t)
            emit = on_duty & w.online[due] & ~gap
            k = len(due)
            interval = rng.uniform(lo_ms, hi_ms, k)
            if self._keep < 1.0:
                interval = interval * rng.geometric(self._keep, k)
            nxt = t + interval.astype(np.int64) + 1
            # Skip ahead while not transmitting: shift start, phone back on, gap end.
            to_shift = ((w.shift_start[due] - h) % 24.0) * HOUR_MS
            nxt = np.where(~on_duty, t + to_shift.astype(np.int64) + interval.astype(np.int64), nxt)
            off_phone = on_duty & ~w.online[due]
            nxt = np.where(off_phone, np.maximum(nxt, w.next_switch[due] + 1), nxt)
            gap_end = t - (t - self.start_ms) % DAY_MS + 5 * HOUR_MS
            nxt = np.where(gap & on_duty & w.online[due], np.maximum(nxt, gap_end + 1), nxt)
            w.next_ping[due] = nxt
            e = due[emit]
            if len(e) == 0:
                continue
            te = t[emit]
            self._move(e, te)
            w.last_ping[e] = te
            m = len(e)
            idx_parts.append(e)
            cols["ts"].append(te)
            cols["lon"].append(w.x[e])
            cols["lat"].append(w.y[e])
            cols["acc"].append(np.clip(np.exp(rng.normal(np.log(8.0), 0.6, m)), 3.0, 50.0))
            cols["spd"].append(np.clip(w.v[e] + rng.normal(0, 0.15, m), 0.0, 2.0))
            bat = w.battery0[e] - w.drain[e] * since[emit]
            cols["bat"].append(np.clip(bat, 5.0, 100.0))
        if not idx_parts:
            return np.zeros(0, np.int64), []
        idx = np.concatenate(idx_parts)
        ts = np.concatenate(cols["ts"])
        order = np.argsort(ts, kind="stable")
        df = pl.DataFrame(
            {
                "worker_id": self._wid_series.gather(idx[order]),
                "ts": ts[order],
                "lon": np.concatenate(cols["lon"])[order],  # already rounded
                "lat": np.concatenate(cols["lat"])[order],
                "accuracy": np.round(np.concatenate(cols["acc"])[order], 1),
                "speed": np.round(np.concatenate(cols["spd"])[order], 2),
                "battery": np.round(np.concatenate(cols["bat"])[order], 0),
            }
        )
        return ts[order], _ndjson_lines(df)

    def _toggle_online(self, due: np.ndarray, t: np.ndarray) -> None:
        w = self._w
        for _ in range(3):
            sw = due[w.next_switch[due] <= t]
            if len(sw) == 0:
                return
            w.online[sw] = ~w.online[sw]
            w.next_switch[sw] += self._episode_ms(w.online[sw], len(sw))
        # Long silences (thinning, nights): draw the state afresh.
        sw_mask = w.next_switch[due] <= t
        sw = due[sw_mask]
        if len(sw):
            w.online[sw] = self.rng.random(len(sw)) >= self.cfg.offline_share
            w.next_switch[sw] = t[sw_mask] + self._episode_ms(w.online[sw], len(sw))

    def _move(self, e: np.ndarray, t: np.ndarray) -> None:
        """Walk workers ``e`` towards their waypoints for the time since their last ping."""
        w, rng = self._w, self.rng
        dt = (t - w.last_ping[e]) / 1000.0
        dx = (w.tx[e] - w.x[e]) * self.m_per_deg_lon
        dy = (w.ty[e] - w.y[e]) * M_PER_DEG_LAT
        dist = np.hypot(dx, dy)
        step = w.v[e] * dt
        arrive = step >= dist
        frac = np.where(arrive, 1.0, step / np.maximum(dist, 1e-9))
        old_x, old_y = w.x[e].copy(), w.y[e].copy()
        nx = np.round(old_x + (w.tx[e] - old_x) * frac, COORD_DECIMALS)
        ny = np.round(old_y + (w.ty[e] - old_y) * frac, COORD_DECIMALS)
        # Never leave the city: stray legs cross grid edges, and rounding a point on the
        # city's outer edge to the published precision can push it just outside.
        outside = np.asarray(self.index.assign(nx, ny)) < 0
        nx[outside], ny[outside] = old_x[outside], old_y[outside]
        arrive[outside] = True
        w.x[e], w.y[e] = nx, ny
        a = e[arrive]
        if len(a):
            home = w.grid[a]
            nb = self.neighbour[home]
            go = (~w.away[a]) & (nb >= 0) & (rng.random(len(a)) < STRAY_SHARE)
            tg = np.where(go, nb, home)
            k = rng.integers(0, POOL_K, len(a))
            tx, ty = self.pool_x[tg, k], self.pool_y[tg, k]
            stray_leg = go | w.away[a]
            # Legs inside the home grid must stay inside it (grids need not be convex).
            for attempt in range(4):
                bad = ~stray_leg & ~self._leg_inside(home, w.x[a], w.y[a], tx, ty)
                if not bad.any():
                    break
                if attempt == 3:  # stay put; the next ping tries again
                    tx[bad], ty[bad] = w.x[a][bad], w.y[a][bad]
                    break
                k2 = rng.integers(0, POOL_K, int(bad.sum()))
                tx[bad], ty[bad] = self.pool_x[home[bad], k2], self.pool_y[home[bad], k2]
            w.leg_stray[a] = stray_leg
            w.away[a] = go
            w.tx[a], w.ty[a] = tx, ty
            w.v[a] = self._speeds(len(a))

    def _leg_inside(
        self, g: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
    ) -> np.ndarray:
        """Whether each straight leg (x0, y0) → (x1, y1) lies inside grid ``g``."""
        same = (x0 == x1) & (y0 == y1)
        out = np.ones(len(g), dtype=bool)
        m = ~same
        if m.any():
            start = np.column_stack([x0[m], y0[m]])
            end = np.column_stack([x1[m], y1[m]])
            lines = shapely.linestrings(np.stack([start, end], axis=1))
            out[m] = shapely.covers(self.geoms[g[m]], lines)
        return out

    # ------------------------------------------------------------ malformed events

    def _template(self, feed: str, payload: bytes, ts: int) -> tuple[str, dict[str, Any]]:
        """A fresh good event (new ids) to derive a bad one from."""
        ev = orjson.loads(payload)
        if feed == "reports":
            ev.update(
                event_id=self._next_event_id(),
                incident_id=self._next_incident_id(),
                step="reported",
                level="grid",
            )
        elif feed == "video":
            ev["alert_id"] = self._next_alert_id()
        ev["ts"] = ts
        return feed, ev

    def _bad_from(
        self, kind: str, feed: str, payload: bytes, ts: int, min_age_ms: int
    ) -> tuple[str, bytes, str] | None:
        reason = dict(BAD_KINDS)[kind]
        if kind == "duplicate":
            if not self._recent:
                return None
            f, p = self._recent[int(self.rng.integers(0, len(self._recent)))]
            return f, p, reason
        if kind == "bad_transition":
            old = [ev for c, ev in self._closed if c <= ts - min_age_ms]
            if not old:
                return None
            ev = dict(old[int(self.rng.integers(0, len(old)))])
            ev["event_id"] = self._next_event_id()
            ev["step"] = ("dispatched", "reported", "handling")[int(self.rng.integers(0, 3))]
            ev["ts"] = max(ts, int(ev["ts"]) + 1)
            return "reports", orjson.dumps(ev), reason
        if kind == "unknown_category" and feed == "locations":
            if not len(self.camera_ids):
                return None
            feed, ev = "video", self._alert(0, "smoke_fire", 0.9, ts, True)
        else:
            feed, ev = self._template(feed, payload, ts)
        f, p = make_bad(kind, feed, ev)
        return f, p, reason

    def _live_bad(self, ts: int, feed: str, payload: bytes) -> tuple[str, bytes, str] | None:
        """The next bad event in the kind cycle (skipping kinds not possible yet)."""
        for _ in range(len(BAD_KINDS)):
            kind = BAD_KINDS[self._bad_counter % len(BAD_KINDS)][0]
            self._bad_counter += 1
            got = self._bad_from(kind, feed, payload, ts, HOUR_MS)
            if got is not None:
                return got
        return None


# ---------------------------------------------------------------- batch generation

DEFAULT_MIX = {"locations": 0.8, "reports": 0.15, "video": 0.05}


def generate(
    city: geo.City,
    cfg: SimulateSettings,
    deadlines: DeadlineSettings,
    start_ms: int,
    n_events: int,
    mix: dict[str, float] | None = None,
    malformed_share: float | None = None,
    *,
    min_gap: int = 20_000,
) -> list[Labelled]:
    """A finite deterministic batch of ``n_events`` (feed, payload, expected reason).

    ``mix`` sets the feed proportions (default :data:`DEFAULT_MIX`). Incident, video and
    ping rates are rescaled so about a simulated day yields the batch. Bad events are
    inserted at random positions; duplicates and bad lifecycle transitions refer to
    events at least ``min_gap`` positions earlier (kinds that cannot meet that yet are
    replaced by the next kind in the cycle).
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    total = sum(mix.get(f, 0.0) for f in FEEDS)
    share = cfg.malformed_share if malformed_share is None else malformed_share
    n_bad = round(n_events * share)
    n_good = max(n_events - n_bad, 0)
    target = {f: round(n_good * mix.get(f, 0.0) / total) for f in FEEDS}
    target["locations"] += n_good - sum(target.values())
    span_days = 1.0
    workers = max(int(cfg.workers), 1)
    natural_pings = 0.45 * workers * span_days * 86_400 * 2 / (cfg.ping_min_s + cfg.ping_max_s)
    sim_cfg = replace(
        cfg,
        incidents_per_day=int(np.ceil(target["reports"] / 4.5 / span_days)),
        video_alerts_per_day=int(np.ceil(target["video"] * 1.4 / span_days)),
        malformed_share=0.0,
        rate=0.0,
    )
    keep = float(np.clip(1.4 * target["locations"] / max(natural_pings, 1.0), 1e-5, 1.0))
    sim = Simulator(city, sim_cfg, deadlines, start_ms, location_keep=keep)
    got: dict[str, list[tuple[int, bytes]]] = {f: [] for f in FEEDS}
    t = start_ms
    while any(len(got[f]) < target[f] for f in FEEDS) and t < start_ms + 30 * DAY_MS:
        t += 30 * MINUTE_MS
        part = sim._advance(t)
        for ts, feed, payload in zip(part.ts, part.feeds, part.payloads, strict=True):
            got[feed].append((ts, payload))
    rng = np.random.default_rng([int(cfg.seed), int(start_ms), n_events, 99])
    chosen: list[tuple[int, int, str, bytes]] = []
    for code, feed in enumerate(FEEDS):
        rows = got[feed]
        if feed == "reports":
            keep_idx = np.arange(min(target[feed], len(rows)))  # lifecycles stay whole
        else:
            keep_idx = np.sort(rng.choice(len(rows), min(target[feed], len(rows)), replace=False))
        chosen.extend((rows[i][0], code, feed, rows[i][1]) for i in keep_idx.tolist())
    chosen.sort(key=lambda r: (r[0], r[1]))
    good: list[Labelled] = [(f, p, None) for _, _, f, p in chosen]
    times = [ts for ts, _, _, _ in chosen]
    return _insert_bad(sim, good, times, n_bad, rng, min_gap)


def _insert_bad(
    sim: Simulator,
    good: list[Labelled],
    times: list[int],
    n_bad: int,
    rng: np.random.Generator,
    min_gap: int,
) -> list[Labelled]:
    """Insert ``n_bad`` bad events into ``good`` (positions refer to the good list)."""
    if n_bad <= 0 or not good:
        return good
    closed_pos: list[int] = []
    closed_ev: list[dict[str, Any]] = []
    dup_pos: list[int] = []
    for i, (feed, payload, _) in enumerate(good):
        if feed == "reports":
            dup_pos.append(i)
            if b'"step":"closed"' in payload:
                closed_pos.append(i)
                closed_ev.append(orjson.loads(payload))
        elif feed == "video":
            dup_pos.append(i)
    closed_arr = np.asarray(closed_pos, np.int64)
    dup_arr = np.asarray(dup_pos, np.int64)
    positions = np.sort(rng.integers(0, len(good), n_bad))
    inserts: list[tuple[int, Labelled]] = []
    counter = 0
    for p in positions.tolist():
        feed, payload, _ = good[p]
        for _ in range(len(BAD_KINDS)):
            kind, reason = BAD_KINDS[counter % len(BAD_KINDS)]
            counter += 1
            made: tuple[str, bytes] | None = None
            if kind == "duplicate":
                n_ok = int(np.searchsorted(dup_arr, p - min_gap, side="right"))
                if n_ok:
                    j = int(dup_arr[int(rng.integers(0, n_ok))])
                    made = (good[j][0], good[j][1])
            elif kind == "bad_transition":
                n_ok = int(np.searchsorted(closed_arr, p - min_gap, side="right"))
                if n_ok:
                    ev = dict(closed_ev[int(rng.integers(0, n_ok))])
                    ev["event_id"] = sim._next_event_id()
                    ev["step"] = ("dispatched", "reported", "handling")[int(rng.integers(0, 3))]
                    ev["ts"] = max(times[p], int(ev["ts"]) + 1)
                    made = ("reports", orjson.dumps(ev))
            else:
                bad = sim._bad_from(kind, feed, payload, times[p], 0)
                made = None if bad is None else (bad[0], bad[1])
            if made is not None:
                inserts.append((p, (made[0], made[1], reason)))
                break
    out: list[Labelled] = []
    k = 0
    for i, item in enumerate(good):
        while k < len(inserts) and inserts[k][0] == i:
            out.append(inserts[k][1])
            k += 1
        out.append(item)
    return out


def location_events(
    city: geo.City, n_workers: int, n_events: int, start_ms: int, seed: int
) -> list[bytes]:
    """Fast valid location payloads for throughput benchmarks (round-robin workers)."""
    rng = np.random.default_rng([int(seed), int(start_ms), 7])
    geoms = np.asarray(city.grid_geoms)
    bounds = shapely.bounds(geoms)
    n_grids = len(geoms)
    grid = rng.integers(0, n_grids, n_workers)
    idx = np.repeat(grid, 2)
    px, py = sample_in_grids(geoms, bounds, idx, rng)
    ax, bx = px[0::2], px[1::2]
    ay, by = py[0::2], py[1::2]
    k = np.arange(n_events)
    wi = k % n_workers
    rnd = k // n_workers
    offset = rng.integers(0, 15_000, n_workers)
    ts = start_ms + rnd * 15_000 + offset[wi]
    u = rng.random(n_events)
    ids = pl.Series([f"W{i + 1:06d}" for i in range(n_workers)], dtype=pl.String)
    df = pl.DataFrame(
        {
            "worker_id": ids.gather(wi),
            "ts": ts.astype(np.int64),
            "lon": np.round(ax[wi] + (bx[wi] - ax[wi]) * u, 6),
            "lat": np.round(ay[wi] + (by[wi] - ay[wi]) * u, 6),
            "accuracy": np.round(rng.uniform(3, 50, n_events), 1),
            "speed": np.round(rng.uniform(0, 2, n_events), 2),
            "battery": np.round(np.clip(95 - rnd * 0.05, 5, 100), 0).astype(np.float64),
        }
    )
    return _ndjson_lines(df)


# ---------------------------------------------------------------- JSONL


def write_jsonl(path: str | Path, events: Iterable[tuple[str, bytes]]) -> int:
    """Write (feed, payload) pairs, one JSON object per line; returns the count.

    The payload is stored as a JSON string; payloads that are not valid UTF-8 are
    stored base64-encoded with ``"b64": true``.
    """
    n = 0
    with open(path, "wb") as fh:
        for feed, payload in events:
            try:
                line = orjson.dumps({"feed": feed, "payload": payload.decode("utf-8")})
            except UnicodeDecodeError:
                text = base64.b64encode(payload).decode("ascii")
                line = orjson.dumps({"feed": feed, "payload": text, "b64": True})
            fh.write(line + b"\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Read back what :func:`write_jsonl` wrote, byte-exact."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            text = obj["payload"]
            if obj.get("b64"):
                yield obj["feed"], base64.b64decode(text)
            else:
                yield obj["feed"], text.encode("utf-8")


# ---------------------------------------------------------------- live loop


def run_live(
    sim: Simulator,
    sink: Callable[[str, list[bytes]], None],
    speed: float,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    tick_s: float = 1.0,
) -> None:
    """Feed ``sink(feed, payloads)`` every tick until ``stop`` is set.

    Simulated time runs at ``speed`` × the given clock from the simulator's current
    time. With ``speed`` > 1, start the simulator in the past so events never carry
    future timestamps.
    """
    t0 = clock()
    base = sim.clock_ms
    while not stop.is_set():
        until = base + int((clock() - t0) * speed * 1000)
        batch: dict[str, list[bytes]] = {}
        for feed, payload in sim.advance(until):
            batch.setdefault(feed, []).append(payload)
        for feed in FEEDS:
            if batch.get(feed):
                sink(feed, batch[feed])
        stop.wait(tick_s)
