"""Shared pieces of the gateway tests: a small city with a roster and cameras, the app
on the test's own Redis prefix and database, credentials, and stream reads."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from pipelines.city.geography import City
from pipelines.gateway import credentials as cr
from pipelines.gateway.app import create_app
from pipelines.settings import Settings
from pipelines.spine import store
from tests.conftest import settings_for
from tests.netproxy import Proxy

NOW = int(time.time() * 1000)


def grid(city: City, i: int) -> tuple[str, float, float]:
    g = city.grids.row(i, named=True)
    return g["grid_id"], float(g["lon"]), float(g["lat"])


def seed_registries(engine: Engine, city: City) -> dict[str, Any]:
    """Workers W1..W4 in grids 0..3, cameras C1 (grid 0) and C2 (grid 150)."""
    workers = []
    for i in range(4):
        gid, _, _ = grid(city, i)
        workers.append(
            {
                "worker_id": f"W{i + 1}",
                "name": f"网格员{i + 1}",
                "type": "full_time",
                "grid_id": gid,
            }
        )
    cams = []
    for cid, i in (("C1", 0), ("C2", 150)):
        gid, lon, lat = grid(city, i)
        cams.append({"camera_id": cid, "lon": lon, "lat": lat, "grid_id": gid})
    store.replace_table(engine, store.workers, workers)
    store.replace_table(engine, store.cameras, cams)
    return {"workers": workers, "cameras": cams}


def gateway_settings(redis_url: str, prefix: str, db: Any, tmp: Path, **gateway: Any) -> Settings:
    s = settings_for(redis_url, prefix, db, tmp)
    return dataclasses.replace(s, gateway=dataclasses.replace(s.gateway, **gateway))


def mqtt_gateway_settings(
    redis_url: str, prefix: str, db: Any, tmp: Path, mqtt_url: str, **gateway: Any
) -> Settings:
    """Gateway settings subscribed to ``mqtt_url`` under a topic prefix and client id of the
    test's own (``settings.gateway.frigate_topic_prefix`` is where to publish)."""
    tag = uuid.uuid4().hex[:8]
    return gateway_settings(
        redis_url,
        prefix,
        db,
        tmp,
        mqtt_url=mqtt_url,
        mqtt_client_id=f"wgtest-{tag}",
        frigate_topic_prefix=f"wgtest-{tag}/frigate",
        **gateway,
    )


@contextmanager
def client_for(
    settings: Settings, city: City, engine: Engine, now_ms: int = NOW
) -> Iterator[TestClient]:
    app = create_app(settings, clock=lambda: now_ms / 1000, city=city, engine=engine)
    with TestClient(app, client=("10.1.2.3", 5000)) as c:
        yield c


def credential(engine: Engine, city: City, kind: str, **kw: Any) -> str:
    _, secret = cr.create(engine, city, kind, f"test {kind}", now_ms=NOW, actor="test", **kw)
    return secret


def stream(r: redis.Redis, settings: Settings, feed: str) -> list[dict[str, Any]]:
    key = f"{settings.redis.prefix}:{getattr(settings.streams, feed)}"
    return [orjson.loads(f[b"data"]) for _, f in r.xrange(key)]


def mqtt_broker_url(tmp_factory: Any) -> Iterator[str]:
    """The broker at MQTT_URL when set, else an embedded one (mosquitto, or amqtt)."""
    import os

    from pipelines.gateway.broker import EmbeddedBroker

    url = os.environ.get("MQTT_URL")
    if url:
        yield url
        return
    broker = EmbeddedBroker(tmp_factory.mktemp("mqtt")).start()
    try:
        yield broker.url
    finally:
        broker.stop()


def wait_for(predicate: Any, timeout_s: float = 30.0) -> Any:
    """Poll a condition (never a fixed sleep); returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@contextmanager
def slow_uplink(upstream: str, delay_s: float) -> Iterator[str]:
    """The ``mqtt://`` url of a proxy to ``upstream`` (``mqtt://host:port``) that holds
    every chunk a client sends for ``delay_s`` (``tests.netproxy.Proxy``)."""
    host, port = upstream.rsplit("//", 1)[-1].rsplit(":", 1)
    proxy = Proxy((host, int(port)), uplink_delay_s=delay_s)
    try:
        yield f"mqtt://127.0.0.1:{proxy.port}"
    finally:
        proxy.close()
