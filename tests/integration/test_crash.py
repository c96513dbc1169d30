"""Crash test: ≥100,000 mixed events, with what broke the pipelines before mixed in,
through two worker processes per stream, kill -9 at random points, restart; afterwards
Redis, SQL and an oracle computed from the input and the README's rules alone agree —
every counter, every incident row by row, every dead letter with its reason, the owner
of every event and alert id, the latest positions: nothing lost, nothing double-counted,
nothing pending, whatever the crash schedule."""

from __future__ import annotations

import dataclasses
import functools
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city import simulator as simulate
from pipelines.city.geography import GridIndex, load_city
from pipelines.dispatch.flows import flows_for
from pipelines.redis_client import connect
from pipelines.settings import GeoSettings, child_environ, load_settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.partitions import entity_of, feed_stream_keys, partition_of
from pipelines.spine.runner import live_state
from pipelines.spine.streams import ensure_group
from tests.conftest import stop_processes
from tests.integration.badgen import Entry, Gen
from tests.integration.oracle import Expected, expected

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.system]

N_EVENTS = 100_000
KILLS = 6
TIME_LIMIT_S = 420
BATCH = 500  # WANGGE_STREAMS_BATCH_SIZE below


def _env(
    redis_url: str, prefix: str, db: tuple[str, str | None], geo_dir: Path, partitions: int = 1
) -> dict[str, str]:
    url, schema = db
    return child_environ(
        WANGGE_STREAMS_PARTITIONS=str(partitions),
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_GRIDS="400",
        WANGGE_GEO_CACHE_DIR=str(geo_dir),
        WANGGE_STREAMS_BATCH_SIZE=str(BATCH),
        WANGGE_STREAMS_CLAIM_IDLE_MS="1500",
        WANGGE_STREAMS_BLOCK_MS="200",
        WANGGE_STREAMS_MAX_AGE_DAYS="60",
        # kills must never turn a valid entry into poison (max_deliveries has its own tests)
        WANGGE_STREAMS_MAX_DELIVERIES="1000",
    )


def _spawn(
    env: dict[str, str], feed: str, name: str, partition: int = 0
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed, "--name", name]
    cmd += ["--partition", str(partition)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _drained(r: redis.Redis, where: Any, group: str) -> bool:
    """Every feed stream (of a prefix's one-partition layout, or of settings) read and
    acknowledged to its end."""
    feeds = ("reports", "locations", "video")
    if isinstance(where, str):
        keys = [f"{where}:{feed}" for feed in feeds]
    else:
        keys = [k for feed in feeds for k in feed_stream_keys(where, feed)]
    for key in keys:
        info = {g["name"].decode(): g for g in r.xinfo_groups(key)}
        g = info.get(group)
        if g is None or g["pending"] > 0:
            return False
        last = g["last-delivered-id"].decode()
        tail = r.xrevrange(key, count=1)
        if tail and tail[0][0].decode() != last:
            return False
    return True


# ------------------------------------------------------------------ the input


def adversarial(
    events: list[tuple[str, bytes, str | None]],
    city: Any,
    now_ms: int,
    seed: int,
    garbage_run: int,
) -> dict[str, list[Entry]]:
    """The simulator's feeds (with its own bad events) per stream, plus what broke the
    pipelines before: runs of only bad entries (longer than two batches, so some
    batches hold nothing valid), strictly mistyped events, event ids reused in other
    incidents and alert ids on other days (before and after their first use), replays
    racing their original, second ``reported`` steps, and steps after ``closed``
    placed before the ``closed`` in the stream. Labels are payload-level reasons; the
    oracle decides duplicates and transitions itself."""
    rnd = random.Random(seed)
    base: dict[str, list[Entry]] = {"reports": [], "locations": [], "video": []}
    for feed, payload, reason in events:
        base[feed].append(({b"data": payload}, reason))
    adds: dict[str, list[tuple[int, Entry]]] = {f: [] for f in base}
    n = 0

    def new_id(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{kind}-adv{n}"

    def near(i: int, before: bool = False) -> int:
        d = rnd.choice([1, 2, 60, 250, 499, 500, 501, 800, 3000])
        return i - d - 1 if before else i + d

    def valid(feed: str, step: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for i, (f, reason) in enumerate(base[feed]):
            if reason is None:
                ev = orjson.loads(f[b"data"])
                if step is None or ev.get("step") == step:
                    out.append((i, ev))
        return out

    def put(feed: str, at: int, ev: dict[str, Any] | bytes, label: str | None = None) -> None:
        data = ev if isinstance(ev, bytes) else orjson.dumps(ev)
        adds[feed].append((at, ({b"data": data}, label)))

    reports, closed, reported = (
        valid("reports"),
        valid("reports", "closed"),
        valid("reports", "reported"),
    )
    for _ in range(150):  # an event id reused under another incident, before or after
        (i, x), (_, y) = rnd.choice(reports), rnd.choice(reports)
        if x["incident_id"] != y["incident_id"]:
            z = {**y, "event_id": x["event_id"], "step": "handling", "ts": y["ts"] + 1}
            put("reports", near(i, before=rnd.random() < 0.3), z)
    for _ in range(100):  # a second reported, earlier, as early or later in time
        i, r = rnd.choice(reported)
        w = {**r, "event_id": new_id("E"), "ts": r["ts"] + rnd.choice([-2000, 0, 0, 2000])}
        put("reports", near(i, before=rnd.random() < 0.3), {**w, "severity": 4})
    for _ in range(60):  # a step after closed, placed before the closed in the stream
        i, c = rnd.choice(closed)
        s = {**c, "event_id": new_id("E"), "ts": c["ts"] + rnd.randrange(1, 600_000)}
        put("reports", near(i, before=True), {**s, "step": rnd.choice(["returned", "handling"])})
    for feed, k in (("reports", 150), ("video", 80)):  # replays racing their original
        for i, _ in rnd.sample(valid(feed), k):
            put(feed, near(i), base[feed][i][0][b"data"])
    alerts = valid("video")
    for _ in range(60):  # an alert id reused on another local day
        i, a = rnd.choice(alerts)
        later = {**a, "ts": a["ts"] + rnd.randint(1, 3) * 86_400_000, "label": "intrusion"}
        put("video", near(i, before=rnd.random() < 0.3), later)
    for feed in base:
        gen = Gen(feed, seed, city, now_ms)
        for _ in range(80):  # strictly mistyped
            put(feed, rnd.randrange(len(base[feed])), *_flip(gen.wrong_type()))
        for _ in range(150):  # bad entries of every kind, scattered
            put(feed, rnd.randrange(len(base[feed])), *_flip(gen.bad(self_contained=True)))
        # runs of only bad entries: of every kind, and of entries that are no event at all
        runs = {0.4: functools.partial(gen.bad, self_contained=True), 0.7: gen.garbage}
        for share, draw in runs.items():
            at = int(len(base[feed]) * share)
            for _ in range(garbage_run):
                adds[feed].append((at, draw()))
    out: dict[str, list[Entry]] = {}
    for feed, entries in base.items():
        keyed = [((i, 0, 0), e) for i, e in enumerate(entries)]
        keyed += [((max(at, -1), 1, k), e) for k, (at, e) in enumerate(adds[feed])]
        keyed.sort(key=lambda x: x[0])
        out[feed] = [e for _, e in keyed]
    return out


def _flip(entry: Entry) -> tuple[bytes, str | None]:
    fields, label = entry
    return fields.get(b"data", b""), label


# ------------------------------------------------------------------ the run


def crash_input(
    settings: Any, engine: Engine, tmp_path: Path, n_events: int, seed: int, garbage_run: int = 0
) -> tuple[Any, GridIndex, dict[str, list[Entry]], dict[str, tuple[float, float]]]:
    """The city (400 grids), the simulator's events made adversarial per feed, and the
    camera registry (stored in SQL)."""
    city = load_city(dataclasses.replace(GeoSettings(), grids=400, cache_dir=str(tmp_path / "geo")))
    index = GridIndex(city)
    cfg = dataclasses.replace(
        settings.simulate, workers=800, cameras=120, seed=11, malformed_share=0.01
    )
    probe = simulate.Simulator(city, cfg, flows_for(settings), start_ms=0)
    now_ms = int(time.time() * 1000)
    start = now_ms - 20 * 86_400_000
    events = simulate.generate(
        city,
        cfg,
        flows_for(settings),
        start,
        n_events,
        mix={"locations": 0.6, "reports": 0.3, "video": 0.1},
    )
    assert len(events) >= n_events
    assert max(orjson_ts(p) for _, p, r in events if r is None) < now_ms
    streams = adversarial(events, city, now_ms, seed, garbage_run=garbage_run or 2 * BATCH + 100)
    cams = {
        c: (lon, lat) for c, lon, lat in probe.cameras.select("camera_id", "lon", "lat").iter_rows()
    }
    with engine.begin() as c:
        rows = [{"camera_id": k, "lon": v[0], "lat": v[1], "grid_id": ""} for k, v in cams.items()]
        store.insert_ignore(c, store.cameras, rows)
    return city, index, streams, cams


def run_crash(
    redis_url: str,
    prefix: str,
    db_url: Any,
    engine: Engine,
    tmp_path: Path,
    artifacts: Path,
    *,
    n_events: int = N_EVENTS,
    kills: int = KILLS,
    time_limit_s: float = TIME_LIMIT_S,
    seed: int = 2026,
    partitions: int = 1,
    per_partition: int = 2,
) -> dict[str, Any]:
    """``partitions`` > 1: each entry goes to the stream of its entity's partition
    (``spine.partitions``) and ``per_partition`` workers read each (feed, partition)."""
    env = _env(redis_url, prefix, db_url, tmp_path / "geo", partitions)
    settings = load_settings(environ=env)
    city, index, streams, cams = crash_input(settings, engine, tmp_path, n_events, seed)
    r = connect(redis_url)
    group = settings.streams.group
    streams, ids = publish_entries(r, settings, streams)

    names = {
        f"{feed}-p{p}-{k}": (feed, p)
        for feed in streams
        for p in range(partitions)
        for k in range(1, per_partition + 1)
    }
    procs = {n: _spawn(env, f, n, p) for n, (f, p) in names.items()}
    rnd = random.Random(seed)
    done = mid_stream = 0
    t0 = time.monotonic()
    try:
        while done < kills and time.monotonic() - t0 < time_limit_s / 2:
            time.sleep(rnd.uniform(0.4, 1.5))
            victim = rnd.choice(sorted(names))
            mid_stream += not _drained(r, settings, group)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            done += 1
            # Half the time the worker comes back under its own name (re-reads its pending
            # entries); otherwise under a new name, and XAUTOCLAIM rescues the orphans.
            new_name = victim if done % 2 else f"{victim}-r{done}"
            procs[new_name] = _spawn(env, names[victim][0], new_name, names[victim][1])
            if new_name != victim:
                del procs[victim]
                names[new_name] = names.pop(victim)
        while not _drained(r, settings, group):
            assert time.monotonic() - t0 < time_limit_s, "pipelines did not drain in time"
            for n, p in procs.items():
                assert p.poll() is None, (
                    f"{n} died: {p.stderr.read().decode()[-2000:] if p.stderr else ''}"
                )
            time.sleep(0.5)
    finally:
        stop_processes(procs.values())
    assert done >= min(kills, 5)
    assert mid_stream >= min(kills, 5) - 2, "the kills must land while entries are unprocessed"
    elapsed = time.monotonic() - t0

    exp = expected(
        streams, ids, city, index, cams, settings.live.timezone,
        settings.pipelines.persist_tracks_every_s,
    )  # fmt: skip
    summary = {
        "entries": {f: len(e) for f, e in streams.items()},
        "kills": done,
        "mid_stream": mid_stream,
        "drain_s": round(elapsed, 1),
        "incidents": len(exp.incidents),
        "dead": exp.dead_by_reason,
        "ambiguous": sum(1 for v in exp.dead.values() if len(v) > 1),
    }
    (artifacts / "summary.txt").write_text(f"{summary}\n")
    check(r, prefix, settings, engine, exp)
    r.close()
    return summary


def check(r: redis.Redis, prefix: str, settings: Any, engine: Engine, exp: Expected) -> None:
    """Redis live state, SQL and the oracle agree: counters, every incident row by row,
    every dead letter (with its reason, in both stores), owners of ids, positions."""
    st = live_state(r, settings)
    # dead letters: exactly the expected entries, each once, with its reason, in both stores
    dl = r.xrange(st.deadletter_key)
    got_dead = {(f[b"stream"].decode(), f[b"entry_id"].decode()): f[b"reason"].decode()
                for _, f in dl}  # fmt: skip
    assert len(got_dead) == len(dl)
    assert set(got_dead) == set(exp.dead)
    wrong = {k: (v, exp.dead[k]) for k, v in got_dead.items() if v not in exp.dead[k]}
    assert not wrong, list(wrong.items())[:10]
    sql_dead = store.read_frame(engine, select(store.dead_letters))
    sql_keys = zip(sql_dead["stream"], sql_dead["entry_id"], strict=True)
    assert dict(zip(sql_keys, sql_dead["reason"], strict=True)) == got_dead
    # every incident: its Redis hash == its SQL row == the oracle
    want = {i: asdict(v) for i, v in exp.incidents.items()}
    rows = store.read_frame(engine, select(store.incidents))
    sql = {
        row["incident_id"]: dict(
            status=row["status"], last_ms=row["last_ms"], category=row["category"],
            severity=row["severity"], grid_id=row["grid_id"], open=row["closed_ms"] is None,
        )
        for row in rows.iter_rows(named=True)
    }  # fmt: skip
    live: dict[str, Any] = {}
    inc_keys = [
        k for base in st.keys.bases() for k in r.scan_iter(match=f"{base}:inc:*", count=5000)
    ]
    for k in inc_keys:
        h = {a.decode(): b.decode() for a, b in r.hgetall(k).items()}
        live[k.decode().split(":inc:")[1]] = dict(
            status=h["status"], last_ms=int(h["ts"]), category=h["cat"], severity=int(h["sev"]),
            grid_id=h["grid"], open=h["open"] == "1",
        )  # fmt: skip
    assert sql == want
    assert live == want
    ev = store.read_frame(engine, select(store.incident_events.c.entry_id))
    assert set(ev["entry_id"]) == exp.accepted_reports and ev.height == len(exp.accepted_reports)
    # live counters, every level
    assert _day_hash(r, st, "reports", exp.reports_by_day) == exp.reports_by_day
    assert _day_hash(r, st, "closed", exp.closed_by_day) == exp.closed_by_day
    assert _day_hash(r, st, "video", exp.video_by_day) == exp.video_by_day
    assert {k: v for k, v in st.counts_all("open").items() if v} == exp.open_by_area
    for day, grids in exp.patrolled.items():
        assert st.patrolled(day) == grids
    # alert ids: the first entry in stream order owns each
    va = store.read_frame(
        engine, select(store.video_alerts.c.alert_id, store.video_alerts.c.entry_id)
    )
    assert dict(va.iter_rows()) == exp.alert_owner
    # positions: live, and the SQL snapshot (written before XACK, whatever was killed)
    pos = {w: agg.unpack_position(p) for w, p in st.positions().items()}
    assert {w: (p["ts"], p["grid_id"]) for w, p in pos.items()} == exp.positions
    snap = store.read_frame(engine, select(store.worker_positions))
    got_pos = {w: (t, agg.unpack_position(p)["grid_id"]) for w, t, p in snap.iter_rows()}
    assert got_pos == exp.positions
    assert store.table_count(engine, store.track_points) == exp.n_track_slots
    # every incident's row, its lifecycle summary included, is that of its full history
    cols = ["incident_id", "status", "last_ms", "closed_ms", *store.SUMMARY_COLUMNS]
    got = store.read_frame(engine, select(*[store.incidents.c[c] for c in cols]))
    hist = store.read_frame(engine, select(store.incident_events))
    rows_want = [{c: x[c] for c in cols} for x in store.incident_rows(hist)]
    assert sorted(got.rows()) == sorted(tuple(x.values()) for x in rows_want)


def test_kill_9_loses_nothing_and_double_counts_nothing(
    redis_url: str, prefix: str, db_url: Any, engine: Engine, tmp_path: Path, artifacts: Path
) -> None:
    summary = run_crash(redis_url, prefix, db_url, engine, tmp_path, artifacts)
    assert summary["dead"].get("duplicate", 0) > 200 and summary["dead"].get("bad_transition")


def orjson_ts(payload: bytes) -> int:
    return int(orjson.loads(payload)["ts"])


def _day_hash(
    r: redis.Redis, st: Any, metric: str, like: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """A per-day metric, summed over the partitions, for every day it exists (or is
    expected)."""
    days = {d for d, _ in like}
    for base in st.keys.bases():
        for k in r.scan_iter(match=f"{base}:d:*:{metric}"):
            days.add(k.decode().split(":")[-2])
    out: dict[tuple[str, str], int] = {}
    for day in days:
        for area, n in st.counts_all(metric, day).items():
            if int(n):
                out[(day, area)] = int(n)
    return out


def publish_entries(
    r: Any, settings: Any, streams: dict[str, list[Entry]]
) -> tuple[dict[str, list[Entry]], dict[str, list[str]]]:
    """XADD every feed's entries, each into the stream of its entity's partition; the
    entries per feed in the order the pipelines see them (their feed-wide ids: entry id
    ``<ms>-<seq>`` of partition p of N is ``<ms>-<seq × N + p>``, ``streams.Consumer``)
    and those ids."""
    keys = live_state(r, settings).keys
    n = keys.partitions
    out: dict[str, list[Entry]] = {}
    ids: dict[str, list[str]] = {}
    for feed, entries in streams.items():
        name = getattr(settings.streams, feed)
        for key in keys.feed_streams(name):
            ensure_group(r, key, settings.streams.group)
        got: list[tuple[tuple[int, int], str, Entry]] = []
        for i in range(0, len(entries), 2000):
            pipe = r.pipeline(transaction=False)
            parts = []
            for e in entries[i : i + 2000]:
                p = partition_of(entity_of(feed, e[0].get(b"data", b"")), n)
                parts.append(p)
                pipe.xadd(keys.stream(name, p), e[0])  # type: ignore[arg-type]
            for e, p, x in zip(entries[i : i + 2000], parts, pipe.execute(), strict=True):
                ms, _, seq = x.decode().partition("-")
                vid = (int(ms), int(seq) * n + p)
                got.append((vid, f"{vid[0]}-{vid[1]}", e))
        got.sort(key=lambda g: g[0])
        out[feed] = [e for _, _, e in got]
        ids[feed] = [v for _, v, _ in got]
    return out, ids
