"""Prometheus metrics of every process: what each records, and the ``/metrics`` page.

Two sources, never mixed up:

* **Recorded in the process** (counters and histograms): batch latency, events applied and
  dead letters per feed (stream workers), the warnings tick, dashboard callback latency
  per page, gateway requests per protocol and status, the push server's open streams,
  ticks sent and the time of a tick's build, session re-check and fan-out, the Frigate
  subscriber's subscription and messages by outcome. Created on first use.
* **Read from Redis at scrape time** (gauges that are the same whichever process is
  asked): each stream's consumer-group lag and pending entries, viewers seen in the last
  minute. These are correct with any number of workers, processes or hosts.

Several processes of one service share their counters through prometheus-client's
multiprocess mode, which is chosen by ``PROMETHEUS_MULTIPROC_DIR`` in a process's
environment when it starts: ``wangge run`` / ``wangge pipelines`` give their stream workers
an emptied ``<var_dir>/metrics/pipelines`` and serve, on ``metrics.pipelines_port``, the
parent's own metrics plus those files. Under gunicorn (or uvicorn with several workers) set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory of that service's own before it starts
and call :func:`process_exited` from gunicorn's ``child_exit`` hook; its ``/metrics`` then
sums every worker. Without the variable a process serves its own values.

Labels are bounded codes (feed, reason, page, protocol, status): never a user, a session,
a token or an id.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FEEDS = ("reports", "locations", "video")
# Seconds: batch and callback latencies from a few ms to a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds: the push server's steps, from a fraction of a millisecond (a fan-out) up.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def fresh_dir(directory: str | Path) -> Path:
    """An empty directory for the multiprocess files of a service's child processes (a
    service's start: counters of a previous run are not carried over)."""
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    return d


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def share_between_workers(enabled: bool, directory: str | Path) -> None:
    """A service about to start several worker processes (uvicorn ``--workers``): their
    /metrics sum them all, through prometheus multiprocess files in ``directory`` (emptied
    now; the workers inherit the variable). Nothing when metrics are off or already shared."""
    if enabled and not multiprocess_dir():
        os.environ[MULTIPROC_ENV] = str(fresh_dir(directory))


def process_exited(pid: int) -> None:
    """gunicorn's ``child_exit`` hook: drop a dead worker's live gauges (counters stay)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@dataclass(frozen=True)
class Metrics:
    batch_seconds: Any
    events_applied: Any
    dead_letters: Any
    warnings_tick_seconds: Any
    callback_seconds: Any
    gateway_requests: Any
    gateway_seconds: Any
    push_viewers: Any
    push_ticks: Any
    push_build_seconds: Any
    push_recheck_seconds: Any
    push_fanout_seconds: Any
    mqtt_subscribed: Any
    mqtt_messages: Any


_METRICS_LOCK = threading.Lock()


def _metrics() -> Metrics:
    """The process's metrics, registered once: the first requests of a fresh gunicorn
    worker arrive on several threads at once, and a second registration of the same
    names raises (a killed worker's replacement answered 500s until this lock)."""
    with _METRICS_LOCK:
        return _registered()


@functools.cache
def _registered() -> Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    b = LATENCY_BUCKETS
    return Metrics(
        batch_seconds=Histogram(
            "wangge_batch_seconds", "Time to process one stream batch", ["feed"], buckets=b
        ),
        events_applied=Counter(
            "wangge_events_applied", "Entries applied (new effects) per feed", ["feed"]
        ),
        dead_letters=Counter(
            "wangge_dead_letters", "Entries dead-lettered, by feed and reason", ["feed", "reason"]
        ),
        warnings_tick_seconds=Histogram(
            "wangge_warnings_tick_seconds", "Time of one early-warning evaluation", buckets=b
        ),
        callback_seconds=Histogram(
            "wangge_dashboard_callback_seconds",
            "Dashboard callback latency by page",
            ["page"],
            buckets=b,
        ),
        gateway_requests=Counter(
            "wangge_gateway_requests",
            "Gateway requests by protocol and status",
            ["protocol", "status"],
        ),
        gateway_seconds=Histogram(
            "wangge_gateway_request_seconds",
            "Gateway request latency by protocol",
            ["protocol"],
            buckets=b,
        ),
        push_viewers=Gauge(
            "wangge_push_viewers",
            "Event streams open on the push server, by page",
            ["page"],
            multiprocess_mode="livesum",
        ),
        push_ticks=Counter(
            "wangge_push_ticks_sent", "Ticks forwarded to a stream's viewers, by page", ["page"]
        ),
        push_build_seconds=Histogram(
            "wangge_push_tick_build_seconds",
            "Push: one stream's tick taken (source cache) or asked of the web server (web)"
            " and published",
            ["source"],
            buckets=PUSH_BUCKETS,
        ),
        push_recheck_seconds=Histogram(
            "wangge_push_recheck_seconds",
            "Push: the per-tick re-check of every session the process holds",
            buckets=PUSH_BUCKETS,
        ),
        push_fanout_seconds=Histogram(
            "wangge_push_fanout_seconds",
            "Push: a published tick handed to every local viewer's connection",
            buckets=PUSH_BUCKETS,
        ),
        mqtt_subscribed=Gauge(
            "wangge_mqtt_subscribed",
            "The Frigate subscriber holds its MQTT subscription (1) or not (0)",
            multiprocess_mode="livemax",
        ),
        mqtt_messages=Counter(
            "wangge_mqtt_messages",
            "Frigate MQTT messages by outcome (written, duplicate, dead:<reason>,"
            " ignored:<reason>)",
            ["outcome"],
        ),
    )


def metrics() -> Metrics:
    return _metrics()


# ------------------------------------------------------------------ recording


def observe_batch(feed: str, seconds: float, applied: int, reasons: dict[str, int]) -> None:
    m = _metrics()
    m.batch_seconds.labels(feed).observe(seconds)
    if applied:
        m.events_applied.labels(feed).inc(applied)
    for reason, n in reasons.items():
        m.dead_letters.labels(feed, reason).inc(n)


def observe_tick(seconds: float) -> None:
    _metrics().warnings_tick_seconds.observe(seconds)


def observe_callback(page: str, seconds: float) -> None:
    _metrics().callback_seconds.labels(page).observe(seconds)


def observe_request(protocol: str, status: int, seconds: float) -> None:
    m = _metrics()
    m.gateway_requests.labels(protocol, str(status)).inc()
    m.gateway_seconds.labels(protocol).observe(seconds)


def mqtt_subscribed(yes: bool) -> None:
    _metrics().mqtt_subscribed.set(1 if yes else 0)


def observe_mqtt(outcome: str) -> None:
    _metrics().mqtt_messages.labels(outcome).inc()


def push_viewers(page: str, delta: int) -> None:
    _metrics().push_viewers.labels(page).inc(delta)


def push_tick_sent(page: str) -> None:
    _metrics().push_ticks.labels(page).inc()


def observe_push_build(source: str, seconds: float) -> None:
    """``source``: ``cache`` (the web server's finished answer) or ``web`` (asked for it)."""
    _metrics().push_build_seconds.labels(source).observe(seconds)


def observe_push_recheck(seconds: float) -> None:
    _metrics().push_recheck_seconds.observe(seconds)


def observe_push_fanout(seconds: float) -> None:
    _metrics().push_fanout_seconds.observe(seconds)


# ------------------------------------------------------------------ viewers


def viewers_key(prefix: str) -> str:
    return f"{prefix}:metrics:viewers"


@dataclass
class ViewerSeen:
    """Notes a session as seen (a sorted set of hashed session ids → last seen ms), at most
    once per ``every_s`` per session and process. The hash is of the session id, which
    the session store already keys by; no user name is written."""

    r: redis.Redis
    prefix: str
    every_s: float = 15.0
    _last: dict[str, float] | None = None

    def __call__(self, sid: str, now_ms: int) -> None:
        if not sid:
            return
        last = self._last if self._last is not None else {}
        self._last = last
        h = hashlib.sha256(sid.encode()).hexdigest()[:24]
        if now_ms / 1000 - last.get(h, -1e18) < self.every_s:
            return
        if len(last) > 50_000:
            last.clear()
        last[h] = now_ms / 1000
        key = viewers_key(self.prefix)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(key, {h: now_ms})
        pipe.pexpire(key, 3_600_000)
        pipe.execute()


def viewers(r: redis.Redis, prefix: str, now_ms: int, window_s: int = 60) -> int:
    """Distinct sessions seen within the last ``window_s`` (old ones are dropped)."""
    key = viewers_key(prefix)
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", f"({now_ms - 3_600_000}")
    pipe.zcount(key, now_ms - window_s * 1000, "+inf")
    return int(pipe.execute()[1])


# ------------------------------------------------------------------ scrape-time collectors


@dataclass
class StreamCollector:
    """Per stream: the consumer group's lag and pending entries, read from Redis."""

    r: redis.Redis
    settings: Any

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from pipelines.spine.health import feed_state

        lag = GaugeMetricFamily(
            "wangge_stream_lag", "Entries the group has not read", labels=["feed"]
        )
        pend = GaugeMetricFamily(
            "wangge_stream_pending", "Entries read but not acknowledged", labels=["feed"]
        )
        up = GaugeMetricFamily("wangge_redis_up", "Redis answered this scrape")
        s = self.settings
        try:
            for feed in FEEDS:
                lg, pending, _, _ = feed_state(self.r, s, feed)
                lag.add_metric([feed], lg)
                pend.add_metric([feed], pending)
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (lag, pend, up)


@dataclass
class ViewersCollector:
    r: redis.Redis
    prefix: str
    window_s: int = 60
    clock: Callable[[], float] = time.time

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily(
            "wangge_viewers", f"Distinct dashboard sessions seen in the last {self.window_s} s"
        )
        try:
            g.add_metric([], viewers(self.r, self.prefix, int(self.clock() * 1000), self.window_s))
        except (redis.RedisError, OSError):
            return
        yield g


class _Many:
    """Several sources as one collector; families of one name are merged (a parent's own
    metrics and its children's files)."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Any]:
        merged: dict[str, Any] = {}
        for source in self.sources:
            for fam in source.collect():
                have = merged.get(fam.name)
                if have is None:
                    merged[fam.name] = fam
                else:
                    have.samples[:] = _summed([*have.samples, *fam.samples], fam.type)
        yield from merged.values()


def _summed(samples: list[Any], kind: str) -> list[Any]:
    """Samples of one family from several sources: counts of the same series add up (a
    parent's and its children's); other kinds keep every sample."""
    if kind not in ("counter", "histogram", "summary"):
        return samples
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
    for s in samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        have = out.get(key)
        out[key] = s if have is None else have._replace(value=have.value + s.value)
    return list(out.values())


def exposition(extra: Iterable[Any] = (), children_dir: str | Path | None = None) -> bytes:
    """The text page. A process in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, e.g.
    every gunicorn worker) serves the sum over its service's directory; any other its own
    metrics plus, when given, those its child processes write to ``children_dir`` (the
    pipelines' stream workers); then the scrape-time collectors ``extra``."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    own = multiprocess_dir()
    sources: list[Any] = []
    if own:
        sources.append(MultiProcessCollector(None, path=own))
    else:
        sources.append(REGISTRY)
        if children_dir is not None and Path(children_dir).is_dir():
            sources.append(MultiProcessCollector(None, path=str(children_dir)))
    sources.extend(extra)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Many(sources))
    return bytes(generate_latest(reg))


# ------------------------------------------------------------------ who may read it


def allowed(peer: str | None, authorization: str | None, allow: str, token: str) -> bool:
    """May a request read ``/metrics`` (pure)? With ``token`` set, a request carrying
    ``Authorization: Bearer <token>`` may, from anywhere; otherwise only a peer inside one
    of the comma-separated networks of ``allow`` (loopback and the trusted proxies)."""
    if token and authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), token):
            return True
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for net in (n.strip() for n in allow.split(",")):
        if not net:
            continue
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())
