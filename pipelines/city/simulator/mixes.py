"""The simulator's vocabulary and mixes (worker types, categories, labels, hourly
profiles, names) and its pure helpers."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import polars as pl
import shapely

from pipelines.dispatch.flows import STAGE_OF_STEP, Flow
from pipelines.spine.events import LEVELS

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


def plan_lifecycle(rng: np.random.Generator, flow: Flow, source: str) -> list[tuple[int, str, str]]:
    """Plan one incident by its standard flow: ``[(offset_ms, step, level), ...]``
    starting with "reported".

    Uses only allowed transitions; ~74% close at grid level; ~7% take longer than the
    flow's closure deadline (its stages' hours); a few are returned after a failed
    verification. The time is shared out over the stages in proportion to their hours,
    so each stage mostly keeps its own deadline too.
    """
    level = LEVELS[int(rng.choice(len(LEVELS), p=LEVEL_P))]
    overdue = rng.random() < OVERDUE_SHARE
    deadline_h = flow.total_hours
    if overdue:
        total_h = deadline_h * rng.uniform(1.05, 2.0)
    else:
        total_h = deadline_h * (0.02 + 0.93 * rng.beta(1.6, 4.0))
    seq: list[tuple[str, str, float]]  # (step, level, relative weight within its stage)
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
    # the stage each gap is spent in: the one of the status before the step
    before = ["reported", *(s[0] for s in seq[:-1])]
    stages = [STAGE_OF_STEP[b] or "close" for b in before]
    in_stage = {st: sum(s[2] for s, g in zip(seq, stages, strict=True) if g == st) for st in stages}
    share = np.array(
        [flow.stage(g).hours * s[2] / in_stage[g] for s, g in zip(seq, stages, strict=True)]
    )
    w = share * rng.gamma(2.0, 1.0, len(seq))
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
