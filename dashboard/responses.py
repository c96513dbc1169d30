"""Per-tick callback responses built once: a shared panel's serialised (and compressed)
answer is reused by every viewer of the same data in the same tick.

A panel is computed once per tick (``Backend.cached``), but Dash serialises a callback's
outputs on every request (component conversion, Plotly JSON, then compression: most of a
warm refresh's cost). :func:`shared_response` is ``Backend.cached`` for a callback whose
whole answer is that shared value: after the callback decided the viewer's permission
(``auth.authorize``, always first), it looks up this tick's finished response for the
callback's outputs and the value's key (the data's identity and data class, never the
viewer). A hit ends the callback with :class:`Served`, and the dispatch wrapper
(:func:`install`) answers with the stored bytes in the encoding the client accepts; a
miss returns the value to Dash, and the wrapper stores the JSON Dash made (its gzip and
brotli encodings are made on first demand). A refusal never reaches the cache: it is
returned by the callback before any lookup, and only 200 responses of a granted,
same-tick lookup are stored.

Every web worker keeps the responses in memory for the tick, and the JSON goes to Redis
(``<prefix>:dash:resp:*``, expiring with the tick) for the other workers: a tick's panel
is serialised once whatever the number of viewers and workers (two workers missing it at
the same moment may both build it), and compressed once per worker and encoding.

Live push (``dashboard/push/``) sends the same bytes: a shared answer carries the header
``X-Wangge-Slot: <stream>:<tick>`` (:func:`stream_of`, the hash of outputs + value key),
and each stream is published on the Redis channel :func:`push_channel` (one per
permission-free key, beside the response keys), so a tick's panel is serialised once for
the pollers and the push viewers together.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

import brotli
import redis
from flask import Flask, Response, current_app, g, request

from dashboard.auth import Decision
from dashboard.backend import Backend

T = TypeVar("T")
EXTENSION = "wangge.responses"
DISPATCH_RULE = "/_dash-update-component"
MIN_COMPRESS = 500  # bytes: smaller answers go out as they are
_G_KEY = "wg_response_key"
SLOT_HEADER = "X-Wangge-Slot"


def slot_of(output: str, key: str, tick: int) -> str:
    """The cache slot of a callback's answer: its outputs, the value's key, the tick."""
    return f"{output}|{key}|{tick}"


def response_key(prefix: str, slot: str) -> str:
    """The Redis key holding a slot's finished JSON (for every web worker)."""
    return f"{prefix}:dash:resp:{hashlib.sha256(slot.encode()).hexdigest()[:32]}"


def stream_of(output: str, key: str) -> str:
    """What a stream of ticks is (the outputs and the value key, never a viewer)."""
    return hashlib.sha256(f"{output}|{key}".encode()).hexdigest()[:32]


def push_channel(prefix: str, stream: str) -> str:
    """The Redis pub/sub channel on which each tick's answer of a stream is published."""
    return f"{prefix}:dash:push:{stream}"


def push_lease(prefix: str, stream: str, tick: int) -> str:
    """Who builds and publishes a stream's tick (one push process per tick)."""
    return f"{prefix}:dash:push:lease:{stream}:{tick}"


def slot_label(slot: str) -> str:
    """``<stream>:<tick>`` of a slot, the header a shared answer carries."""
    rest, tick = slot.rsplit("|", 1)
    output, key = rest.split("|", 1)
    return f"{stream_of(output, key)}:{tick}"


@dataclass
class Entry:
    """One finished callback response: the JSON body and its encodings, made on demand."""

    raw: bytes
    encoded: dict[str, bytes] = field(default_factory=dict)

    def body(self, encoding: str) -> bytes:
        got = self.encoded.get(encoding)
        if got is None:  # two threads may both compress once: same bytes, no harm
            if encoding == "br":
                got = brotli.compress(self.raw, quality=5)
            else:
                got = gzip.compress(self.raw, compresslevel=6, mtime=0)
            self.encoded[encoding] = got
        return got


def choose_encoding(accept: str, size: int) -> str:
    """``br``, ``gzip`` or ``""`` (identity) for an ``Accept-Encoding`` header (pure)."""
    if size < MIN_COMPRESS:
        return ""
    offered = {p.split(";")[0].strip().lower() for p in accept.split(",")}
    refused = {
        p.split(";")[0].strip().lower()
        for p in accept.split(",")
        if p.replace(" ", "").endswith(";q=0")
    }
    for enc in ("br", "gzip"):
        if enc in offered and enc not in refused:
            return enc
    return ""


def respond(entry: Entry, slot: str = "") -> Response:
    """The stored answer in the encoding this request accepts."""
    enc = choose_encoding(request.headers.get("Accept-Encoding", ""), len(entry.raw))
    resp = Response(entry.body(enc) if enc else entry.raw, mimetype="application/json")
    if enc:
        resp.headers["Content-Encoding"] = enc  # Flask-Compress leaves it as it is
    resp.headers["Vary"] = "Accept-Encoding"
    if slot:
        resp.headers[SLOT_HEADER] = slot_label(slot)
    return resp


class Served(Exception):
    """Raised by a callback whose answer for this tick is already built; the dispatch
    wrapper turns it into the response (Dash never serialises it again)."""

    def __init__(self, entry: Entry, slot: str = "") -> None:
        super().__init__("served from the per-tick response cache")
        self.entry = entry
        self.slot = slot


@dataclass
class ResponseCache:
    """Finished responses by callback outputs + value key + tick: in this process first,
    then in Redis (the JSON only), so every web worker serves the one serialisation."""

    ttl_s: float
    r: redis.Redis | None = None
    prefix: str = ""
    entries: dict[str, tuple[float, Entry]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    built: int = 0  # responses Dash serialised for a shared key (the instrumented count)
    served: int = 0  # responses answered from here
    shared: int = 0  # responses another worker built, taken from Redis

    def _rkey(self, key: str) -> str:
        return response_key(self.prefix, key)

    def get(self, key: str) -> Entry | None:
        with self.lock:
            hit = self.entries.get(key)
        if hit is not None and hit[0] >= time.monotonic():
            return hit[1]
        if self.r is None:
            return None
        try:
            raw = self.r.get(self._rkey(key))
        except redis.RedisError:  # this worker builds its own
            return None
        if not isinstance(raw, bytes):
            return None
        entry = self._keep(key, raw)
        with self.lock:
            self.shared += 1
        return entry

    def store(self, key: str, raw: bytes) -> Entry:
        entry = self._keep(key, raw)
        with self.lock:
            self.built += 1
        if self.r is not None:
            with contextlib.suppress(redis.RedisError):
                self.r.set(self._rkey(key), raw, px=max(1, int(self.ttl_s * 1000)))
        return entry

    def _keep(self, key: str, raw: bytes) -> Entry:
        now = time.monotonic()
        entry = Entry(raw)
        with self.lock:
            if len(self.entries) > 256:
                self.entries = {k: v for k, v in self.entries.items() if v[0] >= now}
            self.entries[key] = (now + self.ttl_s, entry)
        return entry


def cache_of(app: Flask) -> ResponseCache:
    rc: ResponseCache = app.extensions[EXTENSION]
    return rc


def shared_response(
    b: Backend, grant: Decision, name: str, compute: Callable[[], T], *parts: object, **kw: Any
) -> T:
    """``b.cached(grant, name, compute, *parts, **kw)`` for a callback whose whole answer is
    that value: this tick's finished response when there is one (raises :class:`Served`),
    else the value, with the request marked so its response is stored for the tick.

    ``grant`` must be granted (the caller decided the permission first): a refusal is never
    looked up nor stored."""
    key = b.cache_key(grant, name, *parts)  # raises for a refusal
    body = request.get_json(silent=True)
    output = body.get("output") if isinstance(body, dict) else None
    tick = b.tick()
    slot = slot_of(output, key, tick) if isinstance(output, str) else None
    if slot is not None:
        hit = cache_of(current_app).get(slot)
        if hit is not None:
            raise Served(hit, slot)
    value = b.cached(grant, name, compute, *parts, **kw)
    if slot is not None and b.tick() == tick:  # the value is this tick's
        setattr(g, _G_KEY, slot)
    return value


def install(
    server: Flask, ttl_s: float, r: redis.Redis | None = None, prefix: str = ""
) -> ResponseCache:
    """Wrap Dash's callback dispatch: answer :class:`Served`, store marked responses."""
    cache = ResponseCache(ttl_s, r, prefix)
    server.extensions[EXTENSION] = cache
    endpoint = next(r.endpoint for r in server.url_map.iter_rules() if r.rule == DISPATCH_RULE)
    view = server.view_functions[endpoint]

    @wraps(view)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        try:
            resp = view(*args, **kwargs)
        except Served as hit:
            with cache.lock:
                cache.served += 1
            return respond(hit.entry, hit.slot)
        slot = g.pop(_G_KEY, None)
        if slot is None or not isinstance(resp, Response) or resp.status_code != 200:
            return resp
        return respond(cache.store(slot, resp.get_data()), slot)

    server.view_functions[endpoint] = dispatch
    return cache
