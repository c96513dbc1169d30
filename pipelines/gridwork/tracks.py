"""Grid work (网格工作, "iron feet"): pure track maths, the roster import, track retention.

* Track maths are pure Polars over hand-checkable frames: distance walked (haversine
  between consecutive points of one worker; gaps longer than ``max_gap_ms`` and GPS jumps
  faster than ``max_speed_mps`` are not walked), time inside the worker's own grid
  (consecutive points within ``max_gap_ms``: a segment counts in full when both ends are
  inside, half when one is), patrol coverage per child area, unpatrolled grids, and the
  live position frame with online / offline status.
* Track replay (pure): one or more workers on one time axis, each track downsampled to its
  share of the points sent, reports placed where the worker stood (:func:`replay_payload`).
* The roster (``store.workers``) is filled by the simulator or imported from CSV:
  :func:`parse_roster_csv` reports every bad row by its line number and
  :func:`import_roster` writes all rows in one transaction or none.
* Track points are personal information: :func:`purge_tracks` deletes points (and stale
  position snapshots) older than ``privacy.track_retention_days``; the clock job runs it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import polars as pl
from sqlalchemy import Engine, delete, func, select

from pipelines.access.text import clean_name
from pipelines.spine import store
from pipelines.spine.csvimport import RowError, read_rows, write_register

WORKER_TYPES = ("full_time", "part_time", "political_legal", "emergency", "safety_supervision")
# Chinese labels accepted in an imported roster (what a district office's sheet says).
TYPE_ALIASES = {
    "专职": "full_time",
    "专职网格员": "full_time",
    "兼职": "part_time",
    "兼职网格员": "part_time",
    "政法网格员": "political_legal",
    "政法": "political_legal",
    "应急格": "emergency",
    "应急": "emergency",
    "安监格": "safety_supervision",
    "安监": "safety_supervision",
}
EARTH_R_M = 6_371_008.8
DAY_MS = 86_400_000

POINTS_SCHEMA = {
    "worker_id": pl.String,
    "ts_ms": pl.Int64,
    "lon": pl.Float64,
    "lat": pl.Float64,
    "grid_id": pl.String,
}
OWN_SCHEMA = {"worker_id": pl.String, "grid_id": pl.String}
STATS_SCHEMA = {
    "worker_id": pl.String,
    "n_points": pl.UInt32,
    "distance_m": pl.Float64,
    "own_grid_ms": pl.Int64,
    "first_ms": pl.Int64,
    "last_ms": pl.Int64,
}


# ------------------------------------------------------------------ track maths (pure)


def haversine_m(lon1: pl.Expr, lat1: pl.Expr, lon2: pl.Expr, lat2: pl.Expr) -> pl.Expr:
    """Great-circle distance in metres between two WGS-84 points (expressions)."""
    p1, p2 = lat1.radians(), lat2.radians()
    dphi = p2 - p1
    dlmb = (lon2 - lon1).radians()
    a = (dphi / 2).sin().pow(2) + p1.cos() * p2.cos() * (dlmb / 2).sin().pow(2)
    return 2 * EARTH_R_M * a.sqrt().arcsin()


def track_stats(
    points: pl.DataFrame,
    own: pl.DataFrame,
    *,
    max_gap_ms: int = 5 * 60_000,
    max_speed_mps: float = 15.0,
) -> pl.DataFrame:
    """Per worker: points, distance walked (m), time inside the own grid (ms), first/last.

    ``points``: worker_id, ts_ms, lon, lat, grid_id (any order, duplicates allowed).
    ``own``: worker_id, grid_id (the assigned grid). Workers without points are absent.
    """
    if points.is_empty():
        return pl.DataFrame(schema=STATS_SCHEMA)
    p = (
        points.select(list(POINTS_SCHEMA))
        .unique(["worker_id", "ts_ms"], keep="first")
        .sort("worker_id", "ts_ms")
        .join(own.select("worker_id", pl.col("grid_id").alias("own_grid")), "worker_id", "left")
        .with_columns(inside=(pl.col("grid_id") == pl.col("own_grid")).fill_null(False))
    )
    prev = {c: pl.col(c).shift().over("worker_id") for c in ("ts_ms", "lon", "lat", "inside")}
    p = p.with_columns(
        dt=pl.col("ts_ms") - prev["ts_ms"],
        d=haversine_m(prev["lon"], prev["lat"], pl.col("lon"), pl.col("lat")),
        halves=pl.col("inside").cast(pl.Int64) + prev["inside"].cast(pl.Int64),
    )
    joined = pl.col("dt").is_not_null() & (pl.col("dt") <= max_gap_ms)
    walked = joined & (pl.col("d") <= max_speed_mps * pl.col("dt") / 1000 + 25.0)
    return (
        p.group_by("worker_id")
        .agg(
            n_points=pl.len(),
            distance_m=pl.when(walked).then(pl.col("d")).otherwise(0.0).sum(),
            own_grid_ms=pl.when(joined)
            .then(pl.col("dt") * pl.col("halves") // 2)
            .otherwise(0)
            .sum(),
            first_ms=pl.col("ts_ms").min(),
            last_ms=pl.col("ts_ms").max(),
        )
        .select([pl.col(c).cast(t) for c, t in STATS_SCHEMA.items()])
        .sort("worker_id")
    )


def coverage(grids: pl.DataFrame, child_col: str, patrolled: Collection[str]) -> pl.DataFrame:
    """Patrol coverage per child area: grids, patrolled grids, share (0–1).

    ``grids`` are the grids of the area (with ``grid_id`` and ``child_col``).
    """
    seen = pl.Series("p", list(patrolled), dtype=pl.String)
    return (
        grids.with_columns(p=pl.col("grid_id").is_in(seen.implode()))
        .group_by(child_col)
        .agg(grids=pl.len(), patrolled=pl.col("p").sum())
        .with_columns(share=pl.col("patrolled") / pl.col("grids"))
        .rename({child_col: "area_id"})
        .sort("area_id")
    )


def unpatrolled(grids: pl.DataFrame, patrolled: Collection[str]) -> list[str]:
    """Grid ids of ``grids`` nobody has walked (sorted)."""
    seen = pl.Series("p", list(patrolled), dtype=pl.String)
    return grids.filter(~pl.col("grid_id").is_in(seen.implode()))["grid_id"].sort().to_list()


POSITIONS_SCHEMA = {
    "worker_id": pl.String,
    "lon": pl.Float64,
    "lat": pl.Float64,
    "ts_ms": pl.Int64,
    "grid_id": pl.String,
    "mock": pl.Boolean,
}


def positions_frame(packed: Mapping[str, str] | Mapping[bytes, bytes]) -> pl.DataFrame:
    """``state.py``'s packed positions (worker → "lon,lat,ts,grid,…") as a frame; the
    mapping may be raw bytes (``LiveState.positions_raw``), decoded here in bulk."""
    if not packed:
        return pl.DataFrame(schema=POSITIONS_SCHEMA)
    raw = pl.DataFrame({"worker_id": list(packed), "p": list(packed.values())})
    if raw.schema["p"] == pl.Binary:
        raw = raw.cast(pl.String)
    parts = pl.col("p").str.split(",")
    return raw.select(
        "worker_id",
        lon=parts.list.get(0).cast(pl.Float64),
        lat=parts.list.get(1).cast(pl.Float64),
        ts_ms=parts.list.get(2).cast(pl.Int64),
        grid_id=parts.list.get(3),
        mock=(parts.list.get(7, null_on_oob=True) == "1").fill_null(False),
    )


def live_workers(
    positions: pl.DataFrame, roster: pl.DataFrame, chain: pl.DataFrame, now_ms: int, online_ms: int
) -> pl.DataFrame:
    """Every known position with where it is (grid ▸ street ▸ district) and who it is.

    Columns: worker_id, lon, lat, ts_ms, grid_id, street_id, district_id (of the position),
    own_grid, type, name, online (seen within ``online_ms``), in_own (inside own grid).
    """
    r = roster.select(
        "worker_id",
        pl.col("grid_id").alias("own_grid"),
        "type",
        "name",
    )
    return (
        positions.join(chain.select("grid_id", "street_id", "district_id"), "grid_id", "left")
        .join(r, "worker_id", "left")
        .with_columns(
            online=pl.col("ts_ms") >= now_ms - online_ms,
            in_own=pl.col("grid_id") == pl.col("own_grid"),
        )
        .with_columns(in_own=pl.col("in_own").fill_null(False))
    )


def status_counts(
    roster_here: pl.DataFrame, live: pl.DataFrame, now_ms: int, online_ms: int
) -> dict[str, int]:
    """On duty (rostered here), online, offline and in own grid, for the area's roster."""
    mine = live.join(roster_here.select("worker_id"), "worker_id", "semi")
    online = int(mine.filter(pl.col("ts_ms") >= now_ms - online_ms).height)
    in_own = int(mine.filter(pl.col("ts_ms") >= now_ms - online_ms, pl.col("in_own")).height)
    on_duty = int(roster_here.height)
    return {"on_duty": on_duty, "online": online, "offline": on_duty - online, "in_own": in_own}


def clusters(live: pl.DataFrame, by: str) -> list[dict[str, Any]]:
    """Server-side clusters: one point per ``by`` value (street or grid) at the members'
    mean position, with online / offline counts (no names, no ids of people)."""
    if live.is_empty():
        return []
    g = (
        live.drop_nulls(by)
        .group_by(by)
        .agg(
            lon=pl.col("lon").mean(),
            lat=pl.col("lat").mean(),
            on=pl.col("online").sum(),
            off=(~pl.col("online")).sum(),
        )
        .sort(by)
    )
    return [
        {"area": a, "lon": round(lo, 5), "lat": round(la, 5), "on": int(n1), "off": int(n0)}
        for a, lo, la, n1, n0 in g.iter_rows()
    ]


REPLAY_POINTS = 8000  # track points sent to the browser per replay, shared by its workers
REPLAY_MIN_POINTS = 200  # …but never fewer than this per worker
NEAR_MS = 5 * 60_000  # a report is placed on the track when a point is this close in time


def downsample(points: pl.DataFrame, max_points: int) -> pl.DataFrame:
    """At most ``max_points`` points per worker, evenly spread over each worker's points in
    time order; the first and the last point are always kept (pure).

    ``points``: worker_id, ts_ms, … (sorted or not). Returns them sorted by worker, time.
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2 (the first and the last point)")
    p = points.sort("worker_id", "ts_ms")
    i = pl.int_range(pl.len()).over("worker_id")
    m = pl.len().over("worker_id") - 1  # the last index
    k = max_points - 1
    # keep the first index of each of k + 1 equal buckets: i = 0 and every i where
    # floor(i·k/m) steps up (which includes i = m)
    keep = (m <= k) | ((i * k) // m != ((i - 1) * k) // m)
    return p.filter(keep)


def place_reports(
    track: pl.DataFrame, reports: pl.DataFrame, near_ms: int = NEAR_MS
) -> pl.DataFrame:
    """Where each worker stood when reporting (pure).

    The track position at the report's time, interpolated between the points just before and
    just after when both are within ``near_ms``; the one close point when only one is; the
    incident's own location when the track has no point near that time.

    ``track``: worker_id, ts_ms, lon, lat. ``reports``: worker_id, ts_ms, lon, lat, category,
    incident_id. Returns the reports (sorted by time) with lon / lat where the worker stood
    and ``on_track`` (False: the incident location was used).
    """
    cols = ["worker_id", "ts_ms", "lon", "lat", "category", "incident_id"]
    if reports.is_empty():
        return pl.DataFrame(schema={**dict(reports.select(cols).schema), "on_track": pl.Boolean})
    r = reports.select(cols).sort("ts_ms")
    tr = track.select("worker_id", "ts_ms", "lon", "lat").sort("ts_ms")
    sides: tuple[tuple[str, Literal["backward", "forward"]], ...] = (
        ("a", "backward"),
        ("b", "forward"),
    )
    for side, strategy in sides:
        named = tr.select(
            "worker_id",
            "ts_ms",
            pl.col("ts_ms").alias(f"t_{side}"),
            pl.col("lon").alias(f"lon_{side}"),
            pl.col("lat").alias(f"lat_{side}"),
        )
        r = r.join_asof(
            named,
            on="ts_ms",
            by="worker_id",
            strategy=strategy,
            tolerance=near_ms,
            check_sortedness=False,  # both sides are sorted by time above
        )
    has_a, has_b = pl.col("t_a").is_not_null(), pl.col("t_b").is_not_null()
    span = (pl.col("t_b") - pl.col("t_a")).cast(pl.Float64)
    f = pl.when(span > 0).then((pl.col("ts_ms") - pl.col("t_a")) / span).otherwise(0.0)

    def at(c: str) -> pl.Expr:
        a, b = pl.col(f"{c}_a"), pl.col(f"{c}_b")
        return (
            pl.when(has_a & has_b)
            .then(a + (b - a) * f)
            .when(has_a)
            .then(a)
            .when(has_b)
            .then(b)
            .otherwise(pl.col(c))
            .alias(c)
        )

    return r.select(
        "worker_id",
        "ts_ms",
        at("lon"),
        at("lat"),
        "category",
        "incident_id",
        on_track=has_a | has_b,
    )


def replay_payload(
    points: pl.DataFrame,
    reports: pl.DataFrame,
    workers: Sequence[str],
    *,
    max_points: int = REPLAY_POINTS,
    near_ms: int = NEAR_MS,
) -> dict[str, Any]:
    """What the browser replays for one or more workers on one shared time axis (pure).

    ``points``: worker_id, ts_ms, lon, lat (any order, duplicates allowed); ``reports``:
    worker_id, ts_ms, lon, lat, category, incident_id; ``workers``: whose tracks, in the
    order shown (others are dropped). Each worker's track is downsampled to its share of
    ``max_points``; reports are placed where the worker stood (:func:`place_reports`, on the
    full track). Returns ``t0`` / ``t1`` (the shared axis), ``workers`` (``id``, ``t``, ``ll``
    as [lat, lon]; workers without points are left out), ``reports`` (``t``, ``ll``,
    ``cat``, ``id``, ``w``: the worker's index in ``workers``, ``on_track``) and ``points``
    (how many points the window held before downsampling).
    """
    order = list(dict.fromkeys(workers))
    p = (
        points.select("worker_id", "ts_ms", "lon", "lat")
        .filter(pl.col("worker_id").is_in(order))
        .unique(["worker_id", "ts_ms"], keep="first")
    )
    present = [w for w in order if w in set(p["worker_id"].to_list())]
    out: dict[str, Any] = {"t0": None, "t1": None, "workers": [], "reports": [], "points": p.height}
    if not present:
        return out
    share = max(REPLAY_MIN_POINTS, max_points // len(present))
    small = downsample(p, share)
    index = {w: i for i, w in enumerate(present)}
    for w in present:
        mine = small.filter(pl.col("worker_id") == w)
        out["workers"].append(
            {
                "id": w,
                "t": mine["ts_ms"].to_list(),
                "ll": [
                    [round(la, 6), round(lo, 6)]
                    for lo, la in zip(mine["lon"], mine["lat"], strict=True)
                ],
            }
        )
    out["t0"] = int(small["ts_ms"].min())  # type: ignore[arg-type]
    out["t1"] = int(small["ts_ms"].max())  # type: ignore[arg-type]
    if not reports.is_empty():
        mine_r = reports.filter(pl.col("worker_id").is_in(present))
        placed = place_reports(p, mine_r, near_ms).drop_nulls(["lon", "lat"])
        for row in placed.iter_rows(named=True):
            out["reports"].append(
                {
                    "t": int(row["ts_ms"]),
                    "ll": [round(row["lat"], 6), round(row["lon"], 6)],
                    "cat": row["category"],
                    "id": row["incident_id"],
                    "w": index[row["worker_id"]],
                    "on_track": bool(row["on_track"]),
                }
            )
    return out


# ------------------------------------------------------------------ roster import

PHONE_RAW = re.compile(r"^1\d{10}$")
PHONE_MASKED = re.compile(r"^1\d{2}\*{4}\d{4}$")
WORKER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROSTER_COLUMNS = ("worker_id", "name", "type", "grid_id", "phone")


def mask_phone(phone: str) -> str:
    """138 1234 5678 → 138****5678 (the only form ever stored or shown)."""
    digits = re.sub(r"[\s-]", "", phone)
    if PHONE_MASKED.match(digits):
        return digits
    if not PHONE_RAW.match(digits):
        raise ValueError("phone must be an 11-digit mobile number")
    return f"{digits[:3]}****{digits[-4:]}"


def parse_roster_csv(
    text: str, grid_ids: Collection[str]
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Rows ready for ``store.workers`` and every problem found, by line number.

    Columns (header required, any order): worker_id, name, type, grid_id, phone (optional;
    raw numbers are masked on the way in). Types are the codes in ``WORKER_TYPES`` or
    their Chinese names (专职, 兼职, 政法网格员, 应急格, 安监格).
    """
    lines, errors = read_rows(text, ROSTER_COLUMNS, ROSTER_COLUMNS[:4])
    grids = grid_ids if isinstance(grid_ids, set | frozenset) else set(grid_ids)
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line, get in lines:
        bad = len(errors)
        wid, name, wtype, grid = get["worker_id"], get["name"], get["type"], get["grid_id"]
        name = clean_name(name)  # no bidi or control characters on screen
        if not WORKER_ID.match(wid):
            errors.append(RowError(line, "worker_id", "letters, digits, _ . - (1–64)"))
        elif wid in first_line:
            errors.append(RowError(line, "worker_id", f"duplicate of line {first_line[wid]}"))
        else:
            first_line[wid] = line
        if not name or len(name) > 64:
            errors.append(RowError(line, "name", "required, at most 64 characters"))
        code = TYPE_ALIASES.get(wtype, wtype.lower())
        if code not in WORKER_TYPES:
            errors.append(RowError(line, "type", f"unknown type {wtype!r}"))
        if grid not in grids:
            errors.append(RowError(line, "grid_id", f"unknown grid {grid!r}"))
        phone = None
        if get.get("phone"):
            try:
                phone = mask_phone(get["phone"])
            except ValueError as exc:
                errors.append(RowError(line, "phone", str(exc)))
        if len(errors) == bad:
            rows.append(
                {
                    "worker_id": wid,
                    "name": name,
                    "type": code,
                    "grid_id": grid,
                    "phone_masked": phone,
                }
            )
    return rows, sorted(errors, key=lambda e: e.line)  # file order (stable per line)


def import_roster(
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    *,
    replace: bool,
    actor: str,
    now_ms: int,
) -> int:
    """Write the rows in one transaction (all or nothing) and audit the import.

    ``replace``: the file is the whole roster (workers not in it are removed);
    otherwise rows are added or updated by worker_id.
    """
    return write_register(
        engine,
        store.workers,
        rows,
        key="worker_id",
        replace=replace,
        actor=actor,
        action="workers_import",
        now_ms=now_ms,
    )


# ------------------------------------------------------------------ retention


def purge_tracks(engine: Engine, retention_days: int, now_ms: int) -> dict[str, int]:
    """Delete track points and position snapshots older than the retention (idempotent).

    A partitioned ``track_points`` (PostgreSQL) loses whole partitions older than the
    retention; only the boundary partition's rows are deleted one by one."""
    from pipelines.spine.store.partitions import drop_before, is_partitioned

    cutoff = int(now_ms) - int(retention_days) * DAY_MS
    out = {}
    with engine.begin() as conn:
        for name, table in (
            ("track_points", store.track_points),
            ("positions", store.worker_positions),
        ):
            if is_partitioned(conn, table.name):
                out[name] = drop_before(conn, table.name, cutoff)
                continue
            res = conn.execute(delete(table).where(table.c.ts_ms < cutoff))
            out[name] = int(res.rowcount or 0)
    return out


def oldest_track_ms(engine: Engine) -> int | None:
    with engine.connect() as conn:
        v = conn.execute(select(func.min(store.track_points.c.ts_ms))).scalar()
    return None if v is None else int(v)
