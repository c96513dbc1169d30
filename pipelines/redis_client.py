"""The one place Redis clients are made: a single server or a Redis Cluster by URL.

``redis://host:port/db`` (or ``rediss://``, ``unix://``) gives a ``redis.Redis``;
``redis+cluster://host:port`` (or ``rediss+cluster://``) a ``redis.cluster.RedisCluster``
that discovers the other nodes from that one. On a cluster every multi-key command, Lua
script and MULTI/EXEC of Wangge touches one hash slot (``spine.state.Keys``), scripts get
a key of their slot so EVALSHA is routed to its node, and SCAN visits every primary.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def _plain(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES[scheme]}://{rest}"


def connect(url: str, **kwargs: Any) -> Any:
    """A client for ``url`` (``redis.Redis`` or ``RedisCluster``)."""
    if is_cluster(url):
        return RedisCluster.from_url(_plain(url), **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def connect_async(url: str, **kwargs: Any) -> Any:
    """An asyncio client for ``url``."""
    if is_cluster(url):
        return AsyncRedisCluster.from_url(_plain(url), **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


def raw_twin(r: Any) -> Any:
    """Another client on the same server(s) (a cluster: a new client of its nodes; else
    the same connection pool), for per-client response callbacks."""
    if isinstance(r, RedisCluster):
        node = r.get_default_node()
        kw = {
            k: v
            for k, v in r.nodes_manager.connection_kwargs.items()
            if k in ("username", "password", "socket_timeout", "socket_connect_timeout", "ssl")
        }
        return RedisCluster(host=node.host, port=node.port, **kw)
    return redis.Redis(connection_pool=r.connection_pool)


def connect_pubsub_async(url: str, **kwargs: Any) -> Any:
    """An asyncio client for PUBLISH / SUBSCRIBE. On a cluster, a plain client of the URL's
    node: classic pub/sub messages reach every node of a cluster, so one node serves."""
    if is_cluster(url):
        return aioredis.Redis.from_url(_plain(url), **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)
