"""gunicorn's configuration: the one way the dashboard is served (``wangge run``, the
Dockerfile, docker-compose), ``gunicorn -c python:dashboard.gunicorn_conf``.

Threaded workers (``gthread``): a dashboard request mostly waits on Redis and the
network, and a viewer polling every few seconds keeps its connection alive (sync workers
close every connection). Workers and threads come from ``[dashboard]`` (``workers = 0``:
the CPU count, at least 2); the address from ``dashboard.host``/``port`` (``-b`` on the
command line wins, as ``wangge run`` does for a free port). Every worker builds the app
itself after the fork (``preload_app`` off: no Redis connection or thread crosses a fork).

The access log (``dashboard.access_log``): off by default; ``-`` the console; a path a
rotating file, in the product's style (``<time> <request line>``); both as ``PATH,-``
(``wangge -v run``). Tokens in URLs are redacted
(``dashboard.guard.install_log_redaction``, installed by every worker's app).
"""

from __future__ import annotations

import os
from typing import Any

from pipelines.cli.web import shape
from pipelines.settings import load_settings

_s = load_settings().dashboard

wsgi_app = "dashboard.app:server"
bind = [f"{_s.host}:{_s.port}"]
worker_class = "gthread"
workers, threads = shape(_s)
keepalive = 30  # seconds: longer than a refresh interval, so a viewer keeps its connection
timeout = 60  # a worker silent this long is killed and replaced by the master
graceful_timeout = 10  # SIGTERM: requests in flight get this long to finish
backlog = 2048
preload_app = False
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat off disk
loglevel = "warning"  # gunicorn's own lines only when something is wrong
proc_name = "wangge-dashboard"

_FMT = "%(asctime)s %(message)s"


def _access_logging(spec: str) -> dict[str, Any] | None:
    """A ``logconfig_dict`` for the access log, or None when it is off."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    files = [p for p in parts if p != "-"]
    handlers: dict[str, Any] = {}
    if files:
        target = files[0]
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        handlers["access_file"] = {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": target,
            "maxBytes": 10_000_000,
            "backupCount": 3,
            "encoding": "utf-8",
            "formatter": "wangge",
        }
    if "-" in parts:
        handlers["access_console"] = {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "wangge",
        }
    if not handlers:
        return None
    # gunicorn merges this over its defaults one key deep: every key is complete here
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "wangge": {"format": _FMT},
            "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
        },
        "handlers": {
            **handlers,
            "error_console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "generic",
            },
        },
        "root": {"level": "WARNING", "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {
                "level": "WARNING",
                "handlers": [],
                "propagate": True,
                "qualname": "gunicorn.error",
            },
            "gunicorn.access": {
                "level": "INFO",
                "handlers": list(handlers),
                "propagate": False,
                "qualname": "gunicorn.access",
            },
        },
    }


_logging = _access_logging(_s.access_log)
if _logging is not None:
    logconfig_dict = _logging
    # the request line, status and size (no referer: a wall URL's token stays out)
    access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def when_ready(_server: Any) -> None:
    """The master (not its workers): started by `wangge run`, it ends with it."""
    from pipelines.ops.lifeline import watch_supervisor

    watch_supervisor()


def child_exit(_server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges leave the summed /metrics (multiprocess mode)."""
    from pipelines.ops.metrics import process_exited

    process_exited(worker.pid)
