"""``rebuild-live`` on a database larger than one chunk: bounded script calls, progress,
and a concurrent reader that only ever sees the old complete state or the new one; the
rebuilt state equals what the pipelines built live."""

from __future__ import annotations

import dataclasses
import io
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from pipelines.city.geography import City, GridIndex
from pipelines.cli.run import restore_live_state
from pipelines.settings import Settings, child_environ
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, rebuild_live
from pipelines.spine.state import LiveState
from tests.conftest import private_prefix, settings_for
from tests.integration.test_pipeline import (
    FULL,
    NOW,
    drain,
    grid_point,
    lifecycle,
    publish_events,
    snapshot,
    workers,
)

pytestmark = pytest.mark.integration

CHUNK = 40
N_INCIDENTS = 150  # almost four chunks


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    return settings_for(redis_url, prefix, db_url, tmp_path)


def clock() -> float:
    return NOW / 1000


def build_live(settings: Settings, city: City, index: GridIndex, r: redis.Redis, engine: Engine):
    """The pipelines build a live state from a mixed input; returns the workers."""
    with engine.begin() as c:
        store.insert_ignore(c, store.cameras, [dict(camera_id="C9", lon=0, lat=0, grid_id="")])
    ws = workers(settings, city, index, r, engine)
    rnd = random.Random(5)
    reports, locs, vids = [], [], []
    for k in range(N_INCIDENTS):
        _, lon, lat = grid_point(city, rnd.randrange(city.grids.height))
        steps = FULL[: rnd.randint(1, len(FULL))]
        t0 = NOW - rnd.randrange(1, 40) * 3_600_000  # over two local days
        cat = rnd.choice(["fire", "dispute", "sanitation"])
        reports += lifecycle(f"R{k}", lon, lat, t0, steps, cat=cat)
        locs.append(dict(worker_id=f"W{k % 23}", ts=NOW - k * 1000, lon=lon, lat=lat))
        vids.append(
            dict(alert_id=f"V{k}", camera_id="C9", label="fall", score=0.7, ts=t0, lon=lon, lat=lat)
        )
    rnd.shuffle(reports)  # arrival order is not time order
    publish_events(r, settings, "reports", [*reports, b"bad", *reports[:5]])
    publish_events(r, settings, "locations", locs)
    publish_events(r, settings, "video", vids)
    drain(ws)
    ClockJob(settings, city, ws["reports"].state, r, clock=clock).tick()
    return ws


def live_state_of(r: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every live-state key (incident hashes included) but tickers and meta."""
    snap = snapshot(r, prefix)
    families = tuple(f"{prefix}:{f}" for f in LiveState.FAMILIES)
    return {
        k: v
        for k, v in snap.items()
        if k.startswith(families) and ":live:ticker:" not in k and not k.endswith(":live:meta")
    }


def observe(r: redis.Redis, prefix: str, day: str, incidents: list[str]) -> tuple[Any, ...]:
    """One atomic look at what a dashboard reads."""
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(f"{prefix}:live:open")
    pipe.hgetall(f"{prefix}:d:{day}:reports")
    pipe.hgetall(f"{prefix}:d:{day}:video")
    pipe.hgetall(f"{prefix}:live:pos")
    pipe.hgetall(f"{prefix}:live:dl_count")
    pipe.smembers(f"{prefix}:d:{day}:patrolled")
    for i in incidents:
        pipe.hget(f"{prefix}:inc:{i}", "status")
    return tuple(
        tuple(sorted(x.items())) if isinstance(x, dict) else tuple(sorted(x)) if isinstance(x, set)
        else x
        for x in pipe.execute()
    )  # fmt: skip


def test_rebuild_in_chunks_switches_atomically_and_equals_live(
    settings: Settings,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = settings.redis.prefix
    build_live(settings, city, index, rclient, engine)
    built = live_state_of(rclient, prefix)
    assert sum(1 for k in built if ":inc:" in k) > 3 * CHUNK
    # Redis lost part of its state and holds stale values: the "old" state readers see
    day = agg.local_day(NOW, settings.live.timezone)
    rclient.delete(f"{prefix}:d:{day}:reports")
    rclient.hset(f"{prefix}:live:open", "stale-area", 7)
    lost = sorted(k.decode() for k in rclient.scan_iter(match=f"{prefix}:inc:*"))[:10]
    rclient.delete(*lost)
    rclient.set(f"{prefix}:dash:cached-panel", b"kept")  # not live state: never touched
    rclient.hset(f"{prefix}:live:meta", "applied:reports-t", "1-1")
    incidents = [k.split(":inc:")[1] for k in lost[:3]] + ["R1", "R2", "R3"]
    old = observe(rclient, prefix, day, incidents)

    # every script call of the rebuild is bounded
    calls: list[tuple[str, int]] = []
    for name in ("push_incidents", "set_alerts", "apply_locations"):
        original = getattr(LiveState, name)

        def counted(self: LiveState, *a: Any, _f: Any = original, _n: str = name) -> Any:
            calls.append((_n, max(len(x) for x in a)))
            return _f(self, *a)

        monkeypatch.setattr(LiveState, name, counted)

    seen: set[tuple[Any, ...]] = set()
    stop = threading.Event()
    reader = redis.Redis.from_url(settings.redis.url)

    reads = [0]

    def read() -> None:
        while not stop.is_set():
            seen.add(observe(reader, prefix, day, incidents))
            reads[0] += 1

    def reads_after(n: int) -> None:  # the reader has read again (it runs on its own)
        for _ in range(10_000):
            if reads[0] > n:
                return
            time.sleep(0.001)
        raise AssertionError("the reader stopped reading")

    t = threading.Thread(target=read)
    t.start()
    steps: list[tuple[str, int, int]] = []
    try:
        reads_after(0)  # it saw the state before the rebuild
        counts = rebuild_live(
            settings,
            city,
            rclient,
            engine,
            clock=clock,
            chunk=CHUNK,
            progress=lambda s, d, n: steps.append((s, d, n)),
        )
        reads_after(reads[0] + 1)  # … and, a whole read later, the state after it
    finally:
        stop.set()
        t.join()
        reader.close()
    new = observe(rclient, prefix, day, incidents)
    assert new != old
    assert len(seen) >= 2 and seen <= {old, new}, "a reader saw a half-built state"
    assert live_state_of(rclient, prefix) == built  # equal to what the pipelines built
    assert rclient.get(f"{prefix}:dash:cached-panel") == b"kept"
    assert rclient.hget(f"{prefix}:live:meta", "applied:reports-t") == b"1-1"
    assert not list(rclient.scan_iter(match=f"{prefix}:rebuild:*"))
    # bounded calls, and progress in steps up to the totals
    assert counts["incidents"] == N_INCIDENTS and counts["video"] == N_INCIDENTS
    assert calls and max(n for name, n in calls if name != "apply_locations") <= CHUNK
    inc_steps = [(d, n) for s, d, n in steps if s == "incidents"]
    assert len(inc_steps) == -(-N_INCIDENTS // CHUNK) and inc_steps[-1] == (150, 150)
    assert [s for s, _, _ in steps][-1] == "switch"


def test_a_failed_rebuild_leaves_the_old_state(
    settings: Settings,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = settings.redis.prefix
    build_live(settings, city, index, rclient, engine)
    before = live_state_of(rclient, prefix)
    original = LiveState.set_alerts

    def failing(self: LiveState, rows: Any) -> Any:
        original(self, rows)
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(LiveState, "set_alerts", failing)
    with pytest.raises(redis.TimeoutError):
        rebuild_live(settings, city, rclient, engine, clock=clock, chunk=CHUNK)
    assert live_state_of(rclient, prefix) == before
    assert not list(rclient.scan_iter(match=f"{prefix}:rebuild:*"))


def test_cli_shows_progress(
    settings: Settings,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
    db_url: Any,
    tmp_path: Path,
) -> None:
    build_live(settings, city, index, rclient, engine)
    url, schema = db_url
    env = child_environ(
        REDIS_URL=settings.redis.url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=settings.redis.prefix,
        WANGGE_GEO_GRIDS="300",
        WANGGE_GEO_CACHE_DIR=str(tmp_path / "geo"),
        WANGGE_RUN_VAR_DIR=str(tmp_path / "var"),
    )
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "rebuild-live"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert re.search(rf"rebuild-live: incidents {N_INCIDENTS}/{N_INCIDENTS} \(100%\)", res.stderr)
    assert "rebuild-live: switch 1/1" in res.stderr and "rebuilt live state" in res.stdout


@pytest.fixture
def new_server(
    settings: Settings,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
    redis_url: str,
) -> Iterator[Settings]:
    """The pipelines' live state built (on ``settings``), then the settings of a restart
    on a new, empty embedded Redis (a prefix of its own stands for the new server)."""
    build_live(settings, city, index, rclient, engine)
    with private_prefix(redis_url) as fresh:
        yield dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, prefix=fresh))


def test_a_restart_on_a_new_embedded_redis_shows_the_city_again(
    settings: Settings, new_server: Settings, city: City, rclient: redis.Redis, engine: Engine
) -> None:
    """`wangge run` starts a new, empty embedded Redis each time: on a database with
    history it rebuilds the live state first, which then equals what the pipelines had
    built before the restart."""
    old, fresh = settings.redis.prefix, new_server.redis.prefix
    before = {k[len(old) :]: v for k, v in live_state_of(rclient, old).items()}
    assert before
    out = io.StringIO()
    counts = restore_live_state(new_server, city, rclient, engine, clock=clock, out=out)
    assert counts is not None and counts["incidents"] == N_INCIDENTS
    after = {k[len(fresh) :]: v for k, v in live_state_of(rclient, fresh).items()}
    assert after == before
    assert "rebuilding the live state" in out.getvalue()
    assert f"{N_INCIDENTS:,} incidents" in out.getvalue()


def test_a_first_start_has_nothing_to_restore(
    settings: Settings, city: City, rclient: redis.Redis, engine: Engine
) -> None:
    assert restore_live_state(settings, city, rclient, engine, clock=clock) is None
    assert not live_state_of(rclient, settings.redis.prefix)


def test_ctrl_c_while_restoring_drops_the_half_built_state(
    new_server: Settings, city: City, rclient: redis.Redis, engine: Engine
) -> None:
    """Stopped during the rebuild (after its first step): nothing is switched in and
    nothing staged is left behind."""
    stop = threading.Event()
    out = io.StringIO()

    class Said(io.StringIO):
        def write(self, text: str) -> int:  # the first step's progress line: Ctrl-C
            stop.set()
            return out.write(text)

    got = restore_live_state(new_server, city, rclient, engine, clock=clock, out=Said(), stop=stop)
    assert got is None
    assert stop.is_set() and "rebuilding" in out.getvalue()
    assert not list(rclient.scan_iter(f"{new_server.redis.prefix}:*"))


def test_a_restart_on_the_kept_embedded_redis_leaves_its_live_state(
    settings: Settings, city: City, index: GridIndex, rclient: redis.Redis, engine: Engine
) -> None:
    """The embedded Redis keeps its data across restarts (append-only file): the live
    state it kept is the pipelines' own, so nothing is rebuilt and nothing changes."""
    build_live(settings, city, index, rclient, engine)
    before = live_state_of(rclient, settings.redis.prefix)
    out = io.StringIO()
    assert restore_live_state(settings, city, rclient, engine, clock=clock, out=out) is None
    assert "kept the live state" in out.getvalue() and "rebuilding" not in out.getvalue()
    assert live_state_of(rclient, settings.redis.prefix) == before


def test_a_kept_state_without_its_history_is_dropped(
    settings: Settings, city: City, index: GridIndex, rclient: redis.Redis, engine: Engine
) -> None:
    """The database removed, the embedded Redis's files kept: its live state was derived
    from a history that is gone, and a first start's backfill would count on top of it.
    It is dropped; the rest stays (the streams: what they hold unapplied is applied to
    the new database; the city stamp; other prefixes)."""
    build_live(settings, city, index, rclient, engine)
    prefix = settings.redis.prefix
    assert live_state_of(rclient, prefix)
    streams = {k for k in rclient.scan_iter(f"{prefix}:*") if rclient.type(k) == b"stream"}
    assert streams
    rclient.set(f"{prefix}:city", "stamp")
    fresh = f"sqlite:///{Path(settings.run.var_dir) / 'new.db'}"
    new_db = store.make_engine(fresh)
    store.create_schema(new_db)
    out = io.StringIO()
    try:
        assert restore_live_state(settings, city, rclient, new_db, clock=clock, out=out) is None
    finally:
        new_db.dispose()
    left = set(rclient.scan_iter(f"{prefix}:*"))
    assert not [k for k in left if b":live:" in k or b":inc:" in k]  # no live state
    assert streams | {f"{prefix}:city".encode()} <= left
    assert "without its history in the database was dropped" in out.getvalue()


def test_a_state_kept_from_during_a_backfill_is_rebuilt(
    settings: Settings, city: City, index: GridIndex, rclient: redis.Redis, engine: Engine
) -> None:
    """A first start's backfill runs without the append-only file, which says so
    (``live:backfilling``): a crash then restarts on the state from before the backfill,
    not the database's. It is rebuilt from SQL, and the mark goes with the old state."""
    from pipelines.cli.run import BACKFILLING
    from pipelines.spine.partitions import keys_of

    build_live(settings, city, index, rclient, engine)
    before = live_state_of(rclient, settings.redis.prefix)
    marker = keys_of(settings).live(BACKFILLING)
    rclient.set(marker, "1")
    out = io.StringIO()
    counts = restore_live_state(settings, city, rclient, engine, clock=clock, out=out)
    assert counts is not None and counts["incidents"] == N_INCIDENTS
    assert "rebuilding the live state" in out.getvalue()
    assert not rclient.exists(marker)
    assert live_state_of(rclient, settings.redis.prefix) == before
