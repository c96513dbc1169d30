"""Serving an ASGI service (the ingest gateway, the push server) with uvicorn, one way."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pipelines.ops.metrics import share_between_workers
from pipelines.settings import Settings


def share_metrics(settings: Settings, name: str) -> None:
    """Metrics of the service ``name``'s processes summed on each one's /metrics
    (multiprocess files in ``<var_dir>/metrics/<name>``; see ``share_between_workers``)."""
    share_between_workers(
        settings.metrics.enabled, settings.path(settings.run.var_dir) / "metrics" / name
    )


def serve_asgi(
    settings: Settings,
    name: str,
    *,
    host: str,
    port: int,
    workers: int,
    factory: str,
    make_app: Callable[[], Any],
    **extra: Any,
) -> None:
    """Serve until SIGINT / SIGTERM (uvicorn's own handling): httptools on uvloop, keep-alive
    on, no access log. Several ``workers`` each build the app from the environment
    (``factory``, "module:function") and their /metrics sum them all (multiprocess files in
    ``<var_dir>/metrics/<name>``); one worker serves ``make_app()`` in this process."""
    import uvicorn

    opts: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "http": "httptools",
        "loop": "uvloop" if os.name == "posix" else "auto",
        "proxy_headers": True,
        "lifespan": "on",
        "timeout_keep_alive": 30,
        **extra,
    }
    if workers > 1:
        share_metrics(settings, name)
        uvicorn.run(factory, factory=True, workers=workers, **opts)
    else:
        uvicorn.Server(uvicorn.Config(make_app(), **opts)).run()
