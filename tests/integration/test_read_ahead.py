"""Read ahead: a worker's loop (``FeedWorker.step_ahead`` / ``run``) reads and prepares the
next batch while it writes the current one. Judged by the crash test's oracle (computed
from the input and the rules alone) on the crash test's adversarial input, for every feed:
each entry is acknowledged exactly once and processed once, when a worker dies holding a
batch read ahead (and one more in flight) and comes back under its own name, and when
batches and reads fail on Redis and SQL and are retried."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pipelines.spine.events import SCHEMAS
from pipelines.spine.runner import BatchResult, FeedWorker, make_worker
from tests.conftest import settings_for
from tests.integration.oracle import expected
from tests.integration.test_crash import _drained, check, crash_input, publish_entries

pytestmark = pytest.mark.integration

FEEDS = tuple(SCHEMAS)  # every feed the pipelines read
BATCH = 97  # small: many batches, many read ahead
N_EVENTS = 6_000


@pytest.fixture(params=[600_000, 1], ids=["own pending", "claimed at once"])
def world(
    request: pytest.FixtureRequest,
    redis_url: str,
    prefix: str,
    db_url: Any,
    engine: Engine,
    rclient: redis.Redis,
    tmp_path: Path,
) -> tuple[Any, ...]:
    """The adversarial input published, and its oracle. Pending entries are claimed after
    10 min (a name's own pending list brings them back), or after 1 ms: every read then
    also claims the batch its worker still holds, which it must not hand out again."""
    s = settings_for(
        redis_url,
        prefix,
        db_url,
        tmp_path,
        streams={
            "batch_size": BATCH,
            "block_ms": 50,
            "claim_idle_ms": request.param,
            "max_age_days": 60,
            "max_deliveries": 1000,  # retries here must never make poison
        },
    )
    city, index, streams, cams = crash_input(s, engine, tmp_path, N_EVENTS, seed=7)
    streams, ids = publish_entries(rclient, s, streams)
    exp = expected(
        streams, ids, city, index, cams, s.live.timezone, s.pipelines.persist_tracks_every_s
    )
    return s, city, index, streams, exp


def _until_empty(w: FeedWorker) -> list[BatchResult]:
    """Step ahead until a read finds nothing (one consumer name: the stream is drained)."""
    out = []
    while (res := w.step_ahead()).acked:
        out.append(res)
    w.drop_ahead()
    return out


def test_a_worker_dying_with_a_batch_read_ahead_loses_nothing_and_repeats_nothing(
    world: tuple[Any, ...], rclient: redis.Redis, prefix: str, engine: Engine
) -> None:
    s, city, index, streams, exp = world
    for feed in FEEDS:
        first = make_worker(feed, s, city, index, rclient, engine, f"{feed}-1")
        results = [first.step_ahead() for _ in range(5)]
        first.drop_ahead()  # it dies holding the batch read ahead (delivered, pending) …
        assert len(first.consumer.read())  # … and one more it had read
        again = make_worker(feed, s, city, index, rclient, engine, f"{feed}-1")
        results += _until_empty(again)
        # every entry acknowledged once; none processed twice (an entry processed again
        # finds its effects in SQL and is counted as redelivered)
        assert sum(r.acked for r in results) == len(streams[feed]), feed
        assert sum(r.redelivered for r in results) == 0, feed
    assert _drained(rclient, s, s.streams.group)
    check(rclient, prefix, s, engine, exp)


def _faulty(w: FeedWorker, acked: dict[str, int], failed: dict[str, int]) -> None:
    """Make ``w`` fail now and then where a real Redis or database can: a read (on the
    reader thread), its SQL transaction (rolled back), and the Redis write after the
    commit, before the XACK; count what it acknowledges."""
    feed, calls = w.feed, {"read": 0, "meta": 0, "sql": 0}
    real_ack, real_read = w.consumer.ack, w.consumer.read
    real_meta, real_sql = w.state.set_meta, w._dead_letter_sql

    def fail_every(what: str, k: int, exc: Exception) -> None:
        calls[what] += 1
        if calls[what] % k == 0:
            failed[feed] += 1
            raise exc

    def ack(ids: Any) -> None:
        real_ack(ids)
        acked[feed] += len(ids)

    def read(held: Any = frozenset()) -> Any:
        fail_every("read", 5, redis.ConnectionError("read failed"))
        return real_read(held)

    def meta(**marks: Any) -> None:
        fail_every("meta", 7, redis.TimeoutError("meta timed out"))
        real_meta(**marks)

    def dead_letter_sql(conn: Any, dead: Any, now_ms: int) -> None:
        fail_every("sql", 6, OperationalError("write", {}, Exception("database is locked")))
        real_sql(conn, dead, now_ms)

    w.consumer.ack = ack  # type: ignore[method-assign]
    w.consumer.read = read  # type: ignore[method-assign]
    w.state.set_meta = meta  # type: ignore[method-assign]
    w._dead_letter_sql = dead_letter_sql  # type: ignore[method-assign]


def test_failing_batches_and_reads_are_retried_and_nothing_is_lost_or_repeated(
    world: tuple[Any, ...], rclient: redis.Redis, prefix: str, engine: Engine
) -> None:
    s, city, index, streams, exp = world
    stop = threading.Event()
    acked = dict.fromkeys(FEEDS, 0)
    failed = dict.fromkeys(FEEDS, 0)
    threads = []
    for feed in FEEDS:
        w = make_worker(feed, s, city, index, rclient, engine, f"{feed}-1")
        _faulty(w, acked, failed)
        t = threading.Thread(target=w.run, args=(stop, 0.0), daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + 240
    while not _drained(rclient, s, s.streams.group):
        assert time.monotonic() < deadline, "the workers did not drain"
        assert all(t.is_alive() for t in threads)
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    assert all(n >= 3 for n in failed.values()), failed
    assert acked == {f: len(streams[f]) for f in FEEDS}  # each entry acknowledged once
    check(rclient, prefix, s, engine, exp)
