"""A synthetic stretch of SQL history for assessment tests and benchmarks (vectorised).

Incidents follow the real lifecycle (上报→受理→派遣→处置→办结→核查→结案, with returns,
escalations, on-the-spot handling and some still open), workers send downsampled track
points during shifts, patrols and warnings are derived. Rows go to SQL in bulk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import Engine

from pipelines.city.geography import City
from pipelines.spine import store
from pipelines.spine.store.incidents import incident_frame, with_action_columns

H = 3_600_000
CATS = ("dispute", "safety_hazard", "public_order", "sanitation", "city_management", "fire")
DEADLINE_H = {"dispute": 72, "safety_hazard": 24, "public_order": 12, "sanitation": 24}
DEADLINE_H |= {"city_management": 48, "fire": 2}
SOURCES = ("worker", "hotline", "camera", "resident")
# (steps, level, share): each step's gap is exponential, scaled by the category deadline
TEMPLATES: list[tuple[tuple[str, ...], str, float]] = [
    (("handling", "resolved", "closed"), "grid", 0.25),
    (("accepted", "dispatched", "handling", "resolved", "verified", "closed"), "grid", 0.35),
    (("accepted", "handling", "resolved", "closed"), "grid", 0.1),
    (
        ("accepted", "dispatched", "handling", "resolved", "returned", "handling", "resolved",
         "verified", "closed"),
        "grid",
        0.05,
    ),
    (
        ("accepted", "escalated", "accepted", "dispatched", "handling", "resolved", "verified",
         "closed"),
        "street",
        0.1,
    ),
    (("accepted", "escalated", "accepted", "handling", "resolved", "closed"), "community", 0.05),
    (
        ("accepted", "escalated", "accepted", "dispatched", "handling", "resolved", "closed"),
        "district",
        0.05,
    ),
    (("accepted", "handling"), "grid", 0.05),  # still open
]  # fmt: skip


@dataclass
class History:
    incidents: pl.DataFrame
    events: pl.DataFrame
    workers: pl.DataFrame
    tracks: pl.DataFrame
    patrols: pl.DataFrame
    warnings: pl.DataFrame


def make_history(
    city: City,
    start_ms: int,
    days: int,
    incidents: int,
    workers: int,
    seed: int = 1,
    shift: tuple[int, int] = (8, 18),
    track_every_min: int = 60,
    online_p: float = 0.9,
    tz_offset_ms: int = 8 * H,
    prefix: str = "I",
    tz: str = "Asia/Shanghai",
) -> History:
    rng = np.random.default_rng(seed)
    grids = city.grids.select("grid_id", "street_id", "district_id")
    gid = grids["grid_id"].to_numpy().astype(object)
    n_g = len(gid)
    # roster: every grid gets workers round-robin, then at random
    w_grid = np.concatenate(
        [np.arange(min(workers, n_g)), rng.integers(0, n_g, max(0, workers - n_g))]
    )
    w_ids = np.array([f"W{i + 1:06d}" for i in range(workers)], dtype=object)
    roster = pl.DataFrame(
        {
            "worker_id": w_ids,
            "name": [f"网格员{i + 1:05d}" for i in range(workers)],
            "type": "full_time",
            "grid_id": gid[w_grid],
            "phone_masked": "138****0000",
        }
    )
    by_grid: dict[int, list[int]] = {}
    for wi, g in enumerate(w_grid.tolist()):
        by_grid.setdefault(g, []).append(wi)
    first_worker = np.array([by_grid.get(g, [0])[0] for g in range(n_g)])

    # ---- incidents
    n = incidents
    g = rng.integers(0, n_g, n)
    cat = np.array(CATS, dtype=object)[
        rng.choice(len(CATS), n, p=[0.2, 0.15, 0.1, 0.25, 0.25, 0.05])
    ]
    src = np.array(SOURCES, dtype=object)[rng.choice(4, n, p=[0.45, 0.3, 0.1, 0.15])]
    reported = start_ms + rng.integers(0, days * 86_400_000, n)
    dl = np.array([DEADLINE_H[c] for c in cat], dtype=float)
    tpl = rng.choice(len(TEMPLATES), n, p=[t[2] for t in TEMPLATES])
    ids = np.array([f"{prefix}{i:08d}" for i in range(n)], dtype=object)
    handler = w_ids[first_worker[g]]
    slow = rng.random(n) < 0.08  # some take longer than their deadline
    ev_cols: dict[str, list[Any]] = {k: [] for k in ("incident_id", "step", "ts_ms", "level")}
    ev_cols["handler_id"] = []
    ev_cols["i"] = []
    ev_cols["reported"] = [
        ids,
        np.full(n, "reported", dtype=object),
        reported,
        np.full(n, "grid", dtype=object),
        handler,
        np.arange(n),
    ]  # type: ignore[assignment]
    parts = [ev_cols.pop("reported")]
    closed_ms = np.full(n, -1, dtype=np.int64)
    closed_lvl = np.full(n, None, dtype=object)
    last_ms = reported.copy()
    status = np.full(n, "reported", dtype=object)
    for k, (steps, level, _share) in enumerate(TEMPLATES):
        sel = np.flatnonzero(tpl == k)
        if not len(sel):
            continue
        total = dl[sel] * np.where(
            slow[sel], rng.uniform(1.1, 2.0, len(sel)), rng.beta(1.6, 4, len(sel))
        )
        w = rng.gamma(2.0, 1.0, (len(sel), len(steps)))
        w[:, 0] *= 0.05  # the first action comes quickly
        gaps = w / w.sum(axis=1, keepdims=True) * total[:, None] * H
        ts = reported[sel, None] + np.maximum(np.cumsum(gaps, axis=1), 1000).astype(np.int64)
        for j, step in enumerate(steps):
            lv = (
                "grid"
                if (j == 0 or level == "grid" or steps[:j].count("escalated") == 0)
                else level
            )
            parts.append(
                [
                    ids[sel],
                    np.full(len(sel), step, dtype=object),
                    ts[:, j],
                    np.full(len(sel), lv, dtype=object),
                    handler[sel],
                    sel,
                ]
            )
        last_ms[sel] = ts[:, -1]
        status[sel] = steps[-1]
        if steps[-1] == "closed":
            closed_ms[sel] = ts[:, -1]
            closed_lvl[sel] = level
    cols = ["incident_id", "step", "ts_ms", "level", "handler_id", "i"]
    ev = pl.DataFrame({c: np.concatenate([p[i] for p in parts]) for i, c in enumerate(cols)})
    ev = ev.with_columns(pl.col("ts_ms").cast(pl.Int64), pl.col("i").cast(pl.Int64))
    inc = pl.DataFrame(
        {
            "incident_id": ids,
            "status": status,
            "category": cat,
            "severity": rng.integers(1, 5, n),
            "source": src,
            "grid_id": gid[g],
            "street_id": grids["street_id"].to_numpy().astype(object)[g],
            "district_id": grids["district_id"].to_numpy().astype(object)[g],
            "lon": 118.8,
            "lat": 32.0,
            "reported_ms": reported,
            "last_ms": last_ms,
            "closed_ms": closed_ms,
            "resolution_level": closed_lvl.tolist(),
            "reporter_id": np.where(src == "worker", handler, "R00000001"),
            "handler_id": handler,
            "description": "",
            "n_events": ev.group_by("i").len().sort("i")["len"].to_numpy(),
        }
    ).with_columns(
        closed_ms=pl.when(pl.col("closed_ms") >= 0).then(pl.col("closed_ms")),
        severity=pl.col("severity").cast(pl.Int64),
    )
    per = inc.with_row_index("i").select(
        pl.col("i").cast(pl.Int64),
        "category",
        "severity",
        "source",
        "grid_id",
        "street_id",
        "district_id",
    )
    ev = (
        ev.join(per, on="i", how="left")
        .with_columns(
            event_id=pl.col("incident_id")
            + ":"
            + pl.col("step")
            + ":"
            + pl.col("ts_ms").cast(pl.String),
            reporter_id=pl.lit("R00000001"),
            lon=pl.lit(118.8),
            lat=pl.lit(32.0),
            description=pl.lit(None, pl.String),
            # a stream entry of its own (its time, then its place), as the pipeline keeps
            entry_id=pl.col("ts_ms").cast(pl.String) + "-" + pl.int_range(pl.len()).cast(pl.String),
        )
        .unique("event_id")
        .pipe(with_action_columns)
        .select(store.EVENT_COLUMNS)
    )
    # the lifecycle summary the pipeline keeps on each incident (store.incident_rows)
    inc = inc.join(store.lifecycle_summary(ev).collect(), on="incident_id", how="left")
    # and the fold it keeps with every change (the live state's acc, days in ``tz``)
    fold = incident_frame(ev, tz=tz).select("incident_id", "acc", "acc_tz")
    inc = inc.join(fold, on="incident_id", how="left")

    # ---- tracks: one point per worker per shift slot (when online), mostly in their grid
    slots_per_day = (shift[1] - shift[0]) * 60 // track_every_min
    day0 = start_ms  # local midnight
    w_idx, d_idx, s_idx = np.meshgrid(
        np.arange(workers), np.arange(days), np.arange(slots_per_day), indexing="ij"
    )
    w_idx, d_idx, s_idx = w_idx.ravel(), d_idx.ravel(), s_idx.ravel()
    keep = rng.random(len(w_idx)) < online_p
    w_idx, d_idx, s_idx = w_idx[keep], d_idx[keep], s_idx[keep]
    slot_ms = track_every_min * 60_000
    ts = (
        day0
        + d_idx * 86_400_000
        + shift[0] * H
        + s_idx * slot_ms
        + rng.integers(0, slot_ms, len(w_idx))
    )
    home = rng.random(len(w_idx)) < 0.85
    tg = np.where(home, w_grid[w_idx], rng.integers(0, n_g, len(w_idx)))
    tracks = pl.DataFrame(
        {
            "worker_id": w_ids[w_idx],
            "slot": ts // 60_000,
            "ts_ms": ts,
            "lon": 118.8,
            "lat": 32.0,
            "grid_id": gid[tg],
            "accuracy": 10.0,
            "speed": 1.0,
            "battery": 0.8,
        }
    )
    patrols = (
        tracks.select(
            day=pl.from_epoch(pl.col("ts_ms") + tz_offset_ms, "ms").dt.strftime("%Y%m%d"),
            grid_id="grid_id",
            first_ms="ts_ms",
        )
        .group_by("day", "grid_id")
        .agg(pl.col("first_ms").min())
    )

    # ---- warnings on streets: some acknowledged in time, some late, some never
    streets = city.ids("street")
    n_w = max(4, incidents // 200)
    first_seen = start_ms + rng.integers(0, days * 86_400_000, n_w)
    delay = rng.choice([2, 8, 25, -1], n_w, p=[0.5, 0.25, 0.15, 0.1]) * 60_000
    warns = pl.DataFrame(
        {
            "warning_id": [f"WW{i:07d}" for i in range(n_w)],
            "key": [f"surge:{i}" for i in range(n_w)],
            "rule": "surge",
            "area_id": np.array(streets, dtype=object)[rng.integers(0, len(streets), n_w)],
            "level": "yellow",
            "status": np.where(delay > 0, "acknowledged", "new"),
            "first_seen_ms": first_seen,
            "last_seen_ms": first_seen,
            "acked_by": ["cmd" if d > 0 else None for d in delay.tolist()],
            "acked_ms": first_seen + delay,
            "evidence": "[]",
            "summary": "{}",
            "aliases": "[]",
        }
    ).with_columns(acked_ms=pl.when(pl.col("acked_ms") > pl.col("first_seen_ms")).then("acked_ms"))
    return History(inc, ev, roster, tracks, patrols, warns)


def load(engine: Engine, h: History, chunk: int = 200_000) -> None:
    """Bulk insert (SQLite: raw executemany; PostgreSQL: COPY)."""
    pairs = [
        (store.workers, h.workers),
        (store.incidents, h.incidents),
        (store.incident_events, h.events),
        (store.track_points, h.tracks),
        (store.patrols, h.patrols),
        (store.warnings, h.warnings),
    ]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, frame in pairs:
            cols = [c.name for c in table.columns if c.name in frame.columns]
            keys = [c.name for c in table.primary_key.columns]
            f = frame.select(cols).sort(keys)  # B-tree friendly: in primary-key order
            if engine.dialect.name == "postgresql":
                with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as cp:  # type: ignore[attr-defined]
                    for row in f.iter_rows():
                        cp.write_row(row)
            else:
                marks = ", ".join("?" for _ in cols)
                sql = f"INSERT OR IGNORE INTO {table.name} ({', '.join(cols)}) VALUES ({marks})"
                for i in range(0, f.height, chunk):
                    cur.executemany(sql, f.slice(i, chunk).iter_rows())
        raw.commit()
        if engine.dialect.name == "sqlite":  # a database at rest: WAL folded back in
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cur.execute("ANALYZE")
        else:
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
