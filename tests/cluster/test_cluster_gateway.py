"""The senders' own protocols on the cluster: a Traccar Client-style phone (OsmAnd), an
Open311 client and a Frigate publisher over a real MQTT broker → gateway → partitioned
streams on a real three-node Redis Cluster → a worker per feed partition → live state and
SQL → what the panorama shows (the same proof as ``test_gateway_e2e`` on one Redis)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from sqlalchemy import Engine

from pipelines.city.geography import demo_city
from pipelines.spine.partitions import keys_of
from tests.gateway_support import mqtt_broker_url, mqtt_gateway_settings
from tests.integration.test_gateway_e2e import through_the_gateway

pytestmark = [pytest.mark.cluster, pytest.mark.integration]


@pytest.fixture(scope="module")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from mqtt_broker_url(tmp_path_factory)


def test_phone_hotline_and_camera_reach_the_panorama_on_cluster(
    cluster: Any,
    cluster_url: str,
    cprefix: str,
    db_url: Any,
    engine: Engine,
    tmp_path: Path,
    mqtt_url: str,
) -> None:
    assert isinstance(cluster, RedisCluster)
    s = mqtt_gateway_settings(
        cluster_url, cprefix, db_url, tmp_path, mqtt_url, frigate_cameras="front_door:C1"
    )
    s = dataclasses.replace(s, streams=dataclasses.replace(s.streams, partitions=3))
    through_the_gateway(s, cluster, engine, demo_city(2026, n_grids=300), mqtt_url)
    # the feeds' partitions sit in several slots (each script still in one)
    keys = keys_of(s)
    slots = {cluster.keyslot(keys.stream(s.streams.reports, p)) for p in range(3)}
    assert len(slots) == 3
