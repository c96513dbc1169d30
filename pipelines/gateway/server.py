"""``wangge gateway``: uvicorn serving the app, and the Frigate MQTT subscriber.

The subscriber runs once, in this (parent) process, whatever the number of uvicorn
worker processes (each of which builds its own app from the environment).
"""

from __future__ import annotations

import logging
import socket

from pipelines.gateway import credentials as _credentials  # noqa: F401 (its table)
from pipelines.gateway import open311 as _open311  # noqa: F401 (its table)
from pipelines.gateway.app import create_app
from pipelines.gateway.mqtt import FrigateSubscriber
from pipelines.ops.asgi import serve_asgi, share_metrics
from pipelines.redis_client import connect
from pipelines.settings import Settings
from pipelines.spine import store

log = logging.getLogger("wangge.gateway")


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_subscriber(settings: Settings) -> FrigateSubscriber | None:
    if not settings.gateway.mqtt_url:
        return None
    engine = store.make_engine(settings.database_url, settings.database.schema or None)
    store.create_schema(engine)
    sub = FrigateSubscriber(settings, connect(settings.redis.url), engine)
    sub.start()
    log.info("frigate subscriber: %s", settings.gateway.mqtt_url)
    return sub


def serve(settings: Settings, port: int | None = None) -> int:
    """Serve until SIGINT / SIGTERM (uvicorn's own handling); returns an exit code."""
    gs = settings.gateway
    if not settings.redis.url:
        raise SystemExit("redis.url is empty: set REDIS_URL (or run `wangge run`)")
    if gs.workers > 1:  # the workers' /metrics include the subscriber's (this process)
        share_metrics(settings, "gateway")
    sub = start_subscriber(settings)
    try:
        serve_asgi(
            settings,
            "gateway",
            host=gs.host,
            port=gs.port if port is None else port,
            workers=gs.workers,
            factory="pipelines.gateway.app:app_from_env",
            make_app=lambda: create_app(settings),
        )
    finally:
        if sub is not None:
            sub.stop()
    return 0
