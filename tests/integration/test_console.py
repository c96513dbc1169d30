"""`wangge run` in a terminal, as a user meets it: the console shows the demo accounts and
URLs and not a line per request (those go to var/log/requests.log); Enter prints the
accounts again, `wangge status` prints them too; Ctrl-C (SIGINT to the whole foreground
process group, as a terminal sends it) stops everything cleanly, without a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.integration.test_cli import cli_env, wangge

pytestmark = [pytest.mark.integration, pytest.mark.system]


class Console:
    """The process's output, read continuously (the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, ok: Callable[[str], bool], timeout_s: float = 150) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok(self.text):
                return self.text
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(self.text)


def start_run(env: dict[str, str]) -> tuple[subprocess.Popen[str], Console]:
    """`wangge run` on its embedded defaults (REDIS_URL and DATABASE_URL taken out of
    ``env``, so the commands given it after reach the same instance), in a process group
    of its own (the "terminal"), its output read continuously."""
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--port", "0"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, Console(proc)


@contextmanager
def running(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Console]]:
    """``start_run``, and the whole process group killed at the end if it still runs."""
    proc, con = start_run(env)
    try:
        yield proc, con
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ctrl_c(proc: subprocess.Popen[str], con: Console) -> str:
    """Ctrl-C in the terminal; the whole output once every process has ended."""
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=90)
    return con.wait_for(lambda s: "stopped." in s, timeout_s=10)


def accounts_in(text: str) -> list[str]:
    """The account lines (role · scope · sign in) of every block printed."""
    return re.findall(r"^    (?:city_leader|street_operator|wall)\s.*$", text, re.M)


def test_console_is_quiet_reprints_accounts_and_ctrl_c_is_clean(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        WANGGE_PIPELINES_TICK_S="1",
        WANGGE_SIMULATE_WORKERS="300",
        WANGGE_SIMULATE_CAMERAS="30",
        WANGGE_SIMULATE_ANOMALY_START_MIN="5",
        WANGGE_SIMULATE_BACKFILL_DAYS="0.02",  # a first start: half an hour of history
    )
    with running(env) as (proc, con):
        # the URL first; the first start's backfill then runs while the dashboard serves
        text = con.wait_for(lambda s: "press Enter" in s and "past moments evaluated" in s)
        url = re.search(r"Dashboard: (http://\S+)", text)
        assert url, text
        first = accounts_in(text)
        assert len(first) == 3 and "after 5 min" in text  # the anomalies, brought forward
        # the backfill ran before the live feed, with its figures (the anomalies come after)
        assert re.search(r"backfill\s+28m of history: [\d,]+ events .* events/s", text), text
        # then the past's warnings (every 15 min of it), before the live warnings start
        assert re.search(r"warnings\s+2 past moments evaluated: \d+ warnings opened", text), text
        # the dashboard's address came first: nobody waits for the history to see the city
        assert text.index("Dashboard:") < text.index("of history:"), text
        for _ in range(5):
            assert requests.get(url.group(1) + "login", timeout=10).status_code == 200
        log = tmp_path / "var" / "log" / "requests.log"
        assert "GET /login" in log.read_text()
        assert "GET /login" not in con.text  # not on the console

        status = wangge("status", env=env)
        assert status.returncode == 0, status.stderr
        assert accounts_in(status.stdout) == first and url.group(1) in status.stdout
        assert re.search(r"^reports\s+length=", status.stdout, re.M), status.stdout

        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        again = con.wait_for(lambda s: len(accounts_in(s)) == 6)
        assert accounts_in(again)[3:] == first  # the same passwords and token

        out = _ctrl_c(proc, con)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert not (tmp_path / "var" / "run.json").exists()
    assert wangge("status", env=env).returncode != 0  # nothing running, no Redis set


def test_ctrl_c_during_a_first_backfill_says_so_and_the_next_start_resumes_it(
    tmp_path: Path,
) -> None:
    """A user Ctrl-Cs their first `make run` while its history is still being simulated
    (likely: it takes minutes), then starts it again. The first run says the backfill
    stopped and will be resumed, not that it is done nor with a traceback; the second
    resumes it, finishes it and evaluates the past's warnings."""
    env = cli_env(
        tmp_path,
        WANGGE_SIMULATE_WORKERS="300",
        WANGGE_SIMULATE_CAMERAS="30",
        WANGGE_SIMULATE_BACKFILL_DAYS="0.5",  # long enough to be cut at its first tenth
    )
    progress = re.compile(r"backfill\s+[█░]+\s+[\d.]+%")
    with running(env) as (proc, con):
        con.wait_for(lambda s: progress.search(s) is not None)
        out = _ctrl_c(proc, con)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert re.search(r"backfill  stopped at \d+%; the next start resumes it", out), out
    assert "of history:" not in out, out  # (the line of a backfill that ended)
    assert "past moments evaluated" not in out, out

    with running(env) as (proc, con):
        text = con.wait_for(
            lambda s: "past moments evaluated" in s or "stays partial" in s, timeout_s=300
        )
        assert "resuming the one cut short" in text, text
        assert re.search(r"backfill\s+\d+h( \d+m)? of history: [\d,]+ events", text), text
        assert "stays partial" not in text, text
        out = _ctrl_c(proc, con)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
