"""The embedded Redis of `wangge run` keeps its data (``redis.embedded_persist``): an
entry it acknowledged is there after its server is killed (-9) and started again on the
same directory, and so are the consumer groups with their pending entries. Without
persistence the same kill loses them (the control: the check can fail)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from pipelines.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

N = 2000


def kill_9(server: EmbeddedRedis) -> None:
    """SIGKILL to the redis-server process itself (not its supervisor), then reap."""
    r = redis.Redis.from_url(server.url)
    pid = int(r.info("server")["process_id"])
    r.close()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    server.wait()


def write_then_kill(where: Path, persist: bool) -> tuple[list[bytes], EmbeddedRedis]:
    server = EmbeddedRedis(where, persist=persist).start()
    r = redis.Redis.from_url(server.url)
    r.xgroup_create("s", "g", id="0", mkstream=True)
    ids = [r.xadd("s", {"n": str(i)}) for i in range(N)]  # each one acknowledged
    r.xreadgroup("g", "c", {"s": ">"}, count=100)  # 100 delivered, not acknowledged
    r.close()
    kill_9(server)
    return ids, EmbeddedRedis(where, port=server.port, persist=persist).start()


def test_what_it_acknowledged_survives_a_kill_9(tmp_path: Path) -> None:
    ids, again = write_then_kill(tmp_path / "kept", persist=True)
    try:
        r = redis.Redis.from_url(again.url)
        got = r.xrange("s")
        assert [i for i, _ in got] == ids
        assert [f[b"n"] for _, f in got] == [str(i).encode() for i in range(N)]
        pending = r.xpending("s", "g")
        assert pending["pending"] == 100 and pending["min"] == ids[0]
        r.close()
    finally:
        again.stop()


def test_without_persistence_the_same_kill_loses_it(tmp_path: Path) -> None:
    _ids, again = write_then_kill(tmp_path / "lost", persist=False)
    try:
        r = redis.Redis.from_url(again.url)
        assert r.xlen("s") == 0
        r.close()
    finally:
        again.stop()


def test_a_backfill_writes_no_file_and_the_file_says_so_until_the_rewrite(
    tmp_path: Path,
) -> None:
    """``run._unlogged``: the file is off while a backfill writes; killed then, the
    server restarts on the state from before, marked ``live:backfilling`` (so the live
    state is rebuilt). After it, one rewrite holds everything and the mark is gone."""
    from types import SimpleNamespace

    from pipelines.cli.run import BACKFILLING, _unlogged
    from pipelines.settings import load_settings
    from pipelines.spine.partitions import keys_of

    s = load_settings(environ={})
    marker = keys_of(s).live(BACKFILLING).encode()
    where = tmp_path / "bf"

    def crash_during(finish: bool) -> set[bytes]:
        server = EmbeddedRedis(where, persist=True).start()
        r = redis.Redis.from_url(server.url)
        r.set("before", "1")
        backfill = _unlogged(SimpleNamespace(embedded=server, r=r, settings=s))  # type: ignore[arg-type]
        backfill.__enter__()
        r.set("during", "1")
        if not finish:  # killed while it runs
            kill_9(server)
            got = held(EmbeddedRedis(where, port=server.port, persist=True).start())
            with contextlib.suppress(redis.ConnectionError):  # its server is gone
                backfill.__exit__(None, None, None)
            return got
        backfill.__exit__(None, None, None)
        r.set("after", "1")
        deadline = time.monotonic() + 30
        while int(r.info("persistence")["aof_rewrite_in_progress"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the file is synced once a second
        kill_9(server)
        return held(EmbeddedRedis(where, port=server.port, persist=True).start())

    def held(server: EmbeddedRedis) -> set[bytes]:
        r = redis.Redis.from_url(server.url)
        keys = set(r.keys("*"))
        r.close()
        server.stop()
        return keys

    assert crash_during(finish=False) == {b"before", marker}
    for p in where.glob("appendonly*"):  # a new start
        p.unlink() if p.is_file() else None
    assert crash_during(finish=True) == {b"before", b"during", b"after"}


def test_two_servers_never_share_a_data_directory(tmp_path: Path) -> None:
    """A second persistent server on a directory in use is refused (two servers would
    write one append-only file); once the first is gone, even by kill -9, it starts."""
    from pipelines.embedded import DirectoryInUse

    where = tmp_path / "one"
    first = EmbeddedRedis(where, persist=True).start()
    try:
        with pytest.raises(DirectoryInUse, match="in use by another process"):
            EmbeddedRedis(where, persist=True).start()
        EmbeddedRedis(tmp_path / "other", persist=True).start().stop()  # another: fine
    finally:
        kill_9(first)
    second = EmbeddedRedis(where, persist=True).start()
    second.stop()
