"""A child of `wangge run` ends when `wangge run` is gone.

`wangge run` starts its children (feed workers, the gateway, the dashboard's gunicorn
master, the push server) in sessions of their own, so a Ctrl-C in its terminal reaches
it alone and it stops them in order. A `kill -9` of it (or its crash) stops nothing:
before this, every child went on, orphaned, holding its port against the next start and
serving from a Redis that was gone. Each child told its parent's pid in
``SUPERVISOR_ENV`` (``child_environ``) watches it and, once it has another parent, sends
itself SIGTERM: the same graceful stop a Ctrl-C of `wangge run` would have given it.
Processes started otherwise (docker compose, systemd, a shell) are not told, and do not
watch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("wangge.lifeline")

SUPERVISOR_ENV = "WANGGE_SUPERVISOR_PID"


def orphaned(environ: Mapping[str, str], parent_pid: int) -> bool:
    """Whether a process told its supervisor's pid in ``environ`` now has another parent
    (the supervisor is gone: the orphan was handed to init or a subreaper)."""
    want = environ.get(SUPERVISOR_ENV, "")
    return want.isdigit() and int(want) != parent_pid


def watch_supervisor(
    every_s: float = 1.0,
    environ: Mapping[str, str] | None = None,
    getppid: Callable[[], int] = os.getppid,
    end: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM),
) -> threading.Thread | None:
    """In a process `wangge run` started: a daemon thread that ends it (``end``: SIGTERM to
    itself) once `wangge run` is gone. Call it in that process only, never in its own
    children (a gunicorn or uvicorn worker has another parent from the start)."""
    env = os.environ if environ is None else environ
    if SUPERVISOR_ENV not in env or orphaned(env, getppid()):
        return None  # not started by `wangge run` (or already orphaned at start: no watch)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            if orphaned(env, getppid()):
                log.warning("wangge run (pid %s) is gone: stopping", env[SUPERVISOR_ENV])
                end()
                return

    t = threading.Thread(target=watch, name="wangge-lifeline", daemon=True)
    t.start()
    return t
