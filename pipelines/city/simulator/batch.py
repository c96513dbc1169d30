"""Batch generation (load tests, benches), JSONL files and the live loop."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import shapely

from pipelines.city import geography as geo
from pipelines.city.simulator.core import Simulator
from pipelines.city.simulator.mixes import (
    BAD_KINDS,
    DAY_MS,
    MINUTE_MS,
    Labelled,
    _ndjson_lines,
    sample_in_grids,
)
from pipelines.dispatch.flows import Flows
from pipelines.settings import SimulateSettings
from pipelines.spine.events import FEEDS

# ---------------------------------------------------------------- batch generation

DEFAULT_MIX = {"locations": 0.8, "reports": 0.15, "video": 0.05}


def generate(
    city: geo.City,
    cfg: SimulateSettings,
    flows: Flows,
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
        command_share=0.0,
    )
    keep = float(np.clip(1.4 * target["locations"] / max(natural_pings, 1.0), 1e-5, 1.0))
    sim = Simulator(city, sim_cfg, flows, start_ms, location_keep=keep)
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
    after: Callable[[int], None] | None = None,
) -> None:
    """Feed ``sink(feed, payloads)`` every tick until ``stop`` is set.

    Simulated time runs at ``speed`` × the given clock from the simulator's current
    time. With ``speed`` > 1, start the simulator in the past so events never carry
    future timestamps. ``after(sim_ms)`` runs after each tick's events were sent (the
    simulated command centre).
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
        if after is not None:
            after(until)
        stop.wait(tick_s)
