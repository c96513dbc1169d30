"""A Redis that stops answering without closing the connection (a cut cable, a host gone
without a word): a pipeline's read gives up after ``redis.socket_timeout_s`` and raises
(its process exits and the supervisor restarts it) instead of hanging for ever."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from pipelines.cli.runtime import pipeline_client
from pipelines.settings import load_settings


@contextmanager
def silent_peer() -> Iterator[int]:
    """A TCP server that takes every connection and reads what it is sent, never replying."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)  # open, read by nobody: the peer is there and says nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for c in held:
            c.close()
        server.close()


def test_a_pipeline_read_from_a_silent_peer_raises() -> None:
    base = load_settings(environ={})
    with silent_peer() as port:
        settings = dataclasses.replace(
            base,
            redis=dataclasses.replace(
                base.redis, url=f"redis://127.0.0.1:{port}/0", socket_timeout_s=1.0
            ),
            streams=dataclasses.replace(base.streams, block_ms=200),
        )
        r = pipeline_client(settings)
        # the read the pipelines block on; without a socket timeout this never returns
        with pytest.raises(redis.TimeoutError):
            r.xreadgroup("pipelines", "w1", {"wg:reports": ">"}, count=10, block=200)
        r.close()
