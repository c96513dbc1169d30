"""The dashboard's web server as a child of ``wangge run``: gunicorn with the production
configuration (``dashboard/gunicorn_conf.py``), in its own processes, beside (not inside)
the simulator and the warnings thread; restarted if it dies, stopped with the run."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import DashboardSettings, Settings, child_environ

log = logging.getLogger("wangge")

CONFIG = "python:dashboard.gunicorn_conf"


def shape(d: DashboardSettings) -> tuple[int, int]:
    """(worker processes, threads per worker) of ``[dashboard]``: 0 workers → the CPUs."""
    return (d.workers if d.workers > 0 else max(2, os.cpu_count() or 1)), max(1, d.threads)


def gunicorn_command(host: str, port: int) -> list[str]:
    """The one serving command (the Dockerfile's, with the address ``wangge run`` chose)."""
    return [sys.executable, "-m", "gunicorn", "-c", CONFIG, "-b", f"{host}:{port}"]


@dataclass
class ChildServer:
    """An HTTP server ``wangge run`` starts as a child process in its own session (Ctrl-C
    reaches ``wangge run`` only), restarts if it dies and stops with the run. Subclasses
    give the command, the host, the readiness path and its name."""

    settings: Settings
    env: dict[str, str]
    port: int
    host: str  # the address it listens on
    command: list[str]  # how it is started
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    name = "server"
    ready_path = "readyz"
    any_status_ready = False  # True: any HTTP answer means it is up (e.g. 503 for a down Redis)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.port}/"

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """True once it answers its readiness path; False if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=5) as resp:
                    if resp.status == 200:
                        return True
            except urllib.error.HTTPError:
                if self.any_status_ready:
                    return True
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def poll(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log.warning("%s exited with %s; restarting", self.name, self.proc.returncode)
            self.restarts += 1
            self._spawn()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL to its whole process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class DashboardProcess(ChildServer):
    """``gunicorn -c python:dashboard.gunicorn_conf`` on the run's Redis and database."""

    name = "dashboard server"
    ready_path = "healthz"
    any_status_ready = True

    @classmethod
    def start(
        cls,
        settings: Settings,
        port: int | None,
        access_log: Path,
        verbose: bool,
        push_url: str = "",
    ) -> DashboardProcess:
        from pipelines.gateway.server import free_port, port_free

        d = settings.dashboard
        want = d.port if port is None else port
        if want == 0 or not port_free(d.host, want):
            want = free_port(d.host)
        s = dataclasses.replace(settings, dashboard=dataclasses.replace(d, port=want))
        # the workers read the same settings (as environment): the embedded Redis and the
        # SQLite file of this run, the run's var dir (secret and audit keys), the log
        env = child_environ(
            REDIS_URL=s.redis.url,
            DATABASE_URL=s.database_url,
            WANGGE_DASHBOARD_HOST=d.host,
            WANGGE_DASHBOARD_PORT=str(want),
            WANGGE_DASHBOARD_ACCESS_LOG=f"{access_log},-" if verbose else str(access_log),
        )
        if push_url:  # where the pages open their push streams (PushProcess)
            env["WANGGE_PUSH_URL"] = push_url
        if s.metrics.enabled:  # the workers' /metrics sum them all (multiprocess files)
            from pipelines.ops.metrics import MULTIPROC_ENV, fresh_dir

            env[MULTIPROC_ENV] = str(fresh_dir(s.path(s.run.var_dir) / "metrics" / "dashboard"))
        dp = cls(s, env, want, d.host, gunicorn_command(d.host, want))
        dp._spawn()
        return dp


@dataclass
class PushProcess(ChildServer):
    """``python -m dashboard.push``: the live-push server (SSE, dashboard/push/) on the
    run's Redis, database and var dir (the session cookie's key), asking the dashboard
    server at ``dashboard_url`` to build ticks."""

    name = "push server"
    ready_path = "push/readyz"

    @staticmethod
    def choose_port(settings: Settings, port: int | None = None) -> int:
        from pipelines.gateway.server import free_port, port_free

        p = settings.push
        want = p.port if port is None else port
        if want == 0 or not port_free(p.host, want):
            want = free_port(p.host)
        return want

    @classmethod
    def start(cls, settings: Settings, port: int, dashboard_url: str) -> PushProcess:
        p = settings.push
        s = dataclasses.replace(settings, push=dataclasses.replace(p, port=port))
        env = child_environ(
            REDIS_URL=s.redis.url,
            DATABASE_URL=s.database_url,
            WANGGE_PUSH_HOST=p.host,
            WANGGE_PUSH_PORT=str(port),
            WANGGE_PUSH_DASHBOARD_URL=p.dashboard_url or dashboard_url.rstrip("/"),
        )
        cmd = [sys.executable, "-m", "dashboard.push", "--port", str(port)]
        pp = cls(s, env, port, p.host, cmd)
        pp._spawn()
        return pp
