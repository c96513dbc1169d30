"""The embedded Redis of `wangge run` keeps its data (``redis.embedded_persist``): an
entry it acknowledged is there after its server is killed (-9) and started again on the
same directory, and so are the consumer groups with their pending entries. Without
persistence the same kill loses them (the control: the check can fail)."""

from __future__ import annotations

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
