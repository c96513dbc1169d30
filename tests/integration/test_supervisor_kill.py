"""`kill -9` of `wangge run` (or its crash) ends every process it started: its children
run in sessions of their own (a Ctrl-C reaches `wangge run` alone, which stops them in
order), so nothing else would stop them. Before, the feed workers, the gateway, the
dashboard's gunicorn and the push server went on as orphans, holding their ports against
the next start and serving from a Redis that was gone."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from pipelines.ops.lifeline import SUPERVISOR_ENV
from tests.integration.test_cli import cli_env
from tests.integration.test_console import start_run

pytestmark = [pytest.mark.integration, pytest.mark.system]


def started_by(pid: int) -> list[psutil.Process]:
    """The processes told ``pid`` is their supervisor (its children, and theirs: the
    gunicorn and uvicorn workers inherit the environment)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(SUPERVISOR_ENV) == str(pid):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def refused(url: str) -> bool:
    m = re.match(r"\w+://([\d.]+):(\d+)", url)
    assert m, url
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=2).close()
    except OSError:
        return True
    return False


def test_a_kill_9_of_wangge_run_ends_every_process_it_started(tmp_path: Path) -> None:
    env = cli_env(tmp_path, WANGGE_SIMULATE_WORKERS="300", WANGGE_SIMULATE_CAMERAS="30")
    proc, con = start_run(env)
    kids: list[psutil.Process] = []
    try:
        text = con.wait_for(lambda s: "press Enter" in s)
        urls = [
            m.group(1)
            for pat in (r"Dashboard: (http://\S+)", r"Gateway:\s+(http://\S+)", r"(redis://\S+)")
            if (m := re.search(pat, text))
        ]
        assert len(urls) == 3, text
        assert not any(refused(u) for u in urls)
        kids = started_by(proc.pid)
        names = " ".join(" ".join(k.cmdline()) for k in kids)
        for what in ("--feed reports", "--feed locations", "--feed video", "gateway"):
            assert what in names, names
        assert "gunicorn" in names and "dashboard.push" in names, names
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(k) for k in kids):
            time.sleep(0.2)
        left = [" ".join(k.cmdline()) for k in kids if alive(k)]
        assert not left, left
        # their ports are free for the next start (the embedded Redis ends with it too)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(refused(u) for u in urls):
            time.sleep(0.2)
        assert all(refused(u) for u in urls), urls
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for k in kids:
            if alive(k):
                k.kill()
