"""The push server's state: the streams it holds, the per-tick session re-check, the
lease that makes one process build and publish each stream's tick, and the fan-out of
the published bytes to this process's viewers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import redis
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature

from dashboard.auth import Decision, decision_for, safe_text
from dashboard.guard import Guard, account_grants, secret_key
from dashboard.push.spec import KIND, Query, refresh_callback, request_body, tick_of
from dashboard.responses import (
    SLOT_HEADER,
    push_channel,
    push_lease,
    response_key,
    slot_of,
    stream_of,
)
from pipelines.access import audit, policy
from pipelines.access import sessions as S
from pipelines.city.geography import City
from pipelines.ops import metrics as M
from pipelines.redis_client import connect, connect_async, connect_pubsub_async
from pipelines.settings import Settings
from pipelines.spine.partitions import global_prefix

log = logging.getLogger("wangge.push")
COOKIE = "wg_session"
QUEUE = 4  # frames waiting per viewer; a slower one loses the oldest (the newest wins)
CLOSE = b"event: close\ndata: ended\n\n"
KEEPALIVE = b": keep-alive\n\n"
SLOW = 256 * 1024  # bytes unsent on a connection: past this its frames wait in the queue


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (an event stream's body is chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


KEEPALIVE_CHUNK = chunk(KEEPALIVE)


@dataclass(eq=False)
class Viewer:
    """One open stream: whose session, what it watches, its outgoing frames.

    :meth:`send` is the fan-out's whole per-viewer work (no await, no lock, no task
    switch): the tick's frame, one bytes object for every viewer, already framed as a
    chunk, goes straight to the connection's transport (``direct``, when the HTTP server
    lets the stream write there and the connection keeps up). Otherwise, and for a
    connection with more than ``SLOW`` bytes unsent, it is appended to a short deque (the
    oldest goes when full) and the stream's writer (``server.EventStream``) is woken: it
    takes every waiting frame at once and writes them in one piece."""

    sid: str
    cookie: str  # the Cookie header (for asking the web server to build a tick)
    query: Query
    grant: Decision
    frames: deque[bytes | None] = field(default_factory=lambda: deque(maxlen=QUEUE))
    waiter: asyncio.Future[None] | None = None
    open: bool = True
    idle: bool = True  # nothing sent since the last keep-alive pass
    direct: asyncio.WriteTransport | None = None  # the connection, for framed chunks
    busy: bool = False  # the writer is sending taken frames (later ones must follow them)
    tick: int = -1  # the newest tick sent (its first, from the cache, may precede the publish)

    def send(self, frame: bytes | None, framed: bytes | None = None) -> None:
        """Send a frame (``framed``: the same as a chunk); None: close the stream after
        what is queued."""
        if not self.open:
            return
        self.idle = False
        t = self.direct
        if (
            frame is not None
            and framed is not None
            and t is not None
            and not self.frames
            and not self.busy
            and t.get_write_buffer_size() <= SLOW
        ):
            if not t.is_closing():
                t.write(framed)
            return
        if frame is None:
            self.open = False
        self.frames.append(frame)  # full: the oldest goes
        self._wake()

    def gone(self) -> None:
        """The client went: the writer ends (whatever is queued goes nowhere)."""
        self.open = False
        self.frames.append(None)
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def take(self) -> list[bytes | None]:
        """Every frame waiting, oldest first (waits for one); a None ends the list."""
        while not self.frames:
            w = self.waiter = asyncio.get_running_loop().create_future()
            try:
                await w
            finally:
                self.waiter = None
        out = list(self.frames)
        self.frames.clear()
        return out


@dataclass(eq=False)
class Stream:
    """Every local viewer of one stream (same outputs and value key)."""

    name: str  # stream_of(output, key)
    channel: str
    output: str
    key: str
    query: Query
    viewers: set[Viewer] = field(default_factory=set)
    sent_tick: int = -1  # the newest tick forwarded to the viewers


@dataclass
class Refusal:
    status: int
    why: str


def _account(s: S.Session) -> tuple[str, ...]:
    """What a session's re-check reads in SQL: its wall token, or its account as it was."""
    return ("wall", s.token_id) if s.wall else ("user", s.username, s.role, s.scope, s.stamp)


def frame(tick: int, raw: bytes) -> bytes:
    """One SSE event carrying a tick's response (Dash's JSON is one line)."""
    return b"id: %d\nevent: tick\ndata: " % tick + raw.replace(b"\n", b" ") + b"\n\n"


class Hub:
    """One push process's streams. ``clock`` is passed in (tests move it)."""

    def __init__(
        self,
        settings: Settings,
        city: City,
        engine: Any,
        clock: Callable[[], float] = time.time,
        r_sync: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.city = city
        self.engine = engine
        self.clock = clock
        self.refresh_s = settings.dashboard.refresh_s
        self.prefix = settings.redis.prefix
        url = settings.redis.url or "redis://127.0.0.1:6379/0"
        self.r = connect_async(url, socket_connect_timeout=2, health_check_interval=30)
        # pub/sub: on a cluster one node's plain connection (messages reach every node)
        self.rp = connect_pubsub_async(url, socket_connect_timeout=2, health_check_interval=30)
        self.rs = r_sync or connect(url, socket_timeout=3, socket_connect_timeout=2)
        a = settings.auth
        self.sessions = S.Sessions(
            self.rs,
            global_prefix(settings),
            idle_ms=int(a.idle_minutes * 60_000),
            max_ms=int(a.session_max_hours * 3_600_000),
        )
        flask = Flask("wangge-push")
        flask.secret_key = secret_key(settings)
        signer = SecureCookieSessionInterface().get_signing_serializer(flask)
        assert signer is not None  # a secret key is set
        self.cookies = signer
        # the dashboard's rate limit of denial audits (one window per user, shared)
        self.guard = Guard(settings, city, self.rs, engine, csp_hashes=list, clock=clock)
        self.cookie_age = int(flask.permanent_session_lifetime.total_seconds())
        d = settings.dashboard
        host = "127.0.0.1" if d.host in ("0.0.0.0", "::", "") else d.host
        self.dashboard = (settings.push.dashboard_url or f"http://{host}:{d.port}").rstrip("/")
        self.origins = {o.strip().rstrip("/") for o in settings.push.allow_origins.split(",")}
        self.origins.discard("")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.streams: dict[str, Stream] = {}
        self.deps: dict[str, dict[str, Any]] = {}  # page → its refresh callback's spec
        self.deps_lock = asyncio.Lock()  # viewers connecting at once ask for it once
        self.checked_tick = -1
        self.check_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[Any]] = []
        self.pending: set[asyncio.Task[Any]] = set()
        self.pubsub: Any = None
        self.published = 0  # ticks this process published (built or taken from the cache)
        self.asked = 0  # ticks this process asked the web server to build
        self.metered = settings.metrics.enabled
        self.heartbeat_s = max(1.0, settings.push.heartbeat_s)

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        self.pubsub = self.rp.pubsub()
        await self.pubsub.subscribe(push_channel(self.prefix, "hello"))
        self.tasks = [
            asyncio.create_task(self._ticks(), name="push-ticks"),
            asyncio.create_task(self._listen(), name="push-listen"),
            asyncio.create_task(self._keep_alive(), name="push-keepalive"),
        ]

    async def stop(self) -> None:
        for stream in list(self.streams.values()):
            for v in list(stream.viewers):
                v.send(None)
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.r.aclose()
        with contextlib.suppress(Exception):
            await self.rp.aclose()

    def _spawn(self, coro: Any) -> None:
        """A background task, kept until it is done (the loop holds tasks weakly)."""
        task = asyncio.create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def viewers(self) -> int:
        return sum(len(s.viewers) for s in self.streams.values())

    # ------------------------------------------------------------------ connect

    def session_id(self, cookie_value: str | None) -> str | None:
        if not cookie_value:
            return None
        try:
            data = self.cookies.loads(cookie_value, max_age=self.cookie_age)
        except BadSignature:
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) and sid else None

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser's cross-origin request), a page of the same host (any
        port: the session cookie is the host's, whatever the port), or a listed origin."""
        if not origin:
            return True
        o = origin.rstrip("/")
        theirs = urlparse(o).hostname
        return o in self.origins or (bool(theirs) and theirs == urlparse(f"//{host}").hostname)

    def decide(self, s: S.Session | None, query: Query) -> Decision:
        """The right to a stream: the session's role may open the page and see its area
        (scope from the session only)."""
        if s is None:
            return decision_for(None, "", query.area, KIND, self.city)
        if not policy.may_open(s.role, query.stream.page):
            return Decision(False, query.area, KIND, why=f"role {s.role} may not open the page")
        return decision_for(s.role, s.scope, query.area, KIND, self.city)

    async def connect(
        self,
        page: str,
        params: dict[str, str],
        cookie: str,
        sid_cookie: str | None,
        client: str = "",
    ) -> Viewer | Refusal:
        """A new viewer once its session grants the area; else the refusal (nothing read)."""
        query = Query.parse(page, params)
        if query is None:
            return Refusal(400, "bad request")
        sid = self.session_id(sid_cookie)
        if sid is None:
            return Refusal(401, "login required")
        now_ms = int(self.clock() * 1000)
        try:
            found = await asyncio.to_thread(self.sessions.load_many, [sid], now_ms)
        except redis.RedisError:
            return Refusal(503, "session store unreachable")
        grant = self.decide(found[sid], query)
        if not grant.granted:
            s = found[sid]
            if s is None:
                return Refusal(401, grant.why)
            await asyncio.to_thread(self._audit_denied, s, query, grant.why, client)
            return Refusal(403, grant.why)
        callback = await self._callback(page, cookie)
        if callback is None:
            return Refusal(503, "the web server is not answering")
        viewer = Viewer(sid, cookie, query, grant)
        stream = await self._join(viewer, str(callback["output"]))
        if self.metered:
            M.push_viewers(query.page, 1)
        await self._first(viewer, stream)
        return viewer

    def _audit_denied(self, s: S.Session, query: Query, why: str, client: str) -> None:
        """``denied`` in the audit log, as the dashboard records a refused callback (at
        most ``auth.denied_audit_per_minute`` per user, the same window)."""
        per_minute = self.settings.auth.denied_audit_per_minute
        if self.guard.rate_limited(f"denied:{s.username}", per_minute):
            return
        detail = {
            "ip": client,
            "why": safe_text(why),
            "kind": KIND,
            "callback": f"push:{query.page}",
        }
        with contextlib.suppress(Exception):  # a down audit store must not stop the server
            audit.record(
                self.engine,
                actor=s.username,
                role=s.role,
                scope=s.scope,
                action="denied",
                target=safe_text(query.area),
                detail=detail,
                now_ms=int(self.clock() * 1000),
            )

    async def _callback(self, page: str, cookie: str) -> dict[str, Any] | None:
        """The page's refresh callback from the web server's dependencies (once)."""
        if page in self.deps:
            return self.deps[page]
        async with self.deps_lock:
            if page in self.deps:
                return self.deps[page]
            try:
                raw = await asyncio.to_thread(self._get, "/_dash-dependencies", cookie)
                deps = json.loads(raw)
            except (OSError, ValueError):  # down, or not answering as Dash (a login page)
                return None
            found = refresh_callback(page, deps) if isinstance(deps, list) else None
            if found is None:
                return None
            self.deps[page] = found
            return found

    async def _join(self, viewer: Viewer, output: str) -> Stream:
        key = viewer.query.key(viewer.grant)
        name = stream_of(output, key)
        stream = self.streams.get(name)
        if stream is None:
            channel = push_channel(self.prefix, name)
            stream = self.streams[name] = Stream(name, channel, output, key, viewer.query)
            await self.pubsub.subscribe(channel)
        stream.viewers.add(viewer)
        return stream

    async def _first(self, viewer: Viewer, stream: Stream) -> None:
        """This tick's answer at once: from the cache when built, else built now."""
        tick = tick_of(self.clock(), self.refresh_s)
        raw = await self._cached(stream, tick)
        if viewer.tick >= tick:  # its publish reached the viewer while the cache was read
            return
        if raw is not None:
            viewer.tick = tick
            viewer.send(frame(tick, raw))
        else:
            self._spawn(self._build(stream, tick))

    def leave(self, viewer: Viewer) -> None:
        viewer.open = False
        for name, stream in list(self.streams.items()):
            if viewer in stream.viewers:
                stream.viewers.discard(viewer)
                if self.metered:
                    M.push_viewers(viewer.query.page, -1)
                if not stream.viewers:
                    del self.streams[name]
                    self._spawn(self._unsubscribe(stream.channel))

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            if not any(s.channel == channel for s in self.streams.values()):
                await self.pubsub.unsubscribe(channel)

    async def _keep_alive(self) -> None:
        """A comment on every stream that was sent nothing for a while (proxies and
        browsers keep it open): one pass every half heartbeat, so no stream is silent for
        longer than ``push.heartbeat_s``; no timer per viewer."""
        while True:
            await asyncio.sleep(self.heartbeat_s / 2)
            for stream in list(self.streams.values()):
                for v in stream.viewers:
                    if v.idle and not v.frames:
                        v.send(KEEPALIVE, KEEPALIVE_CHUNK)
                    v.idle = True

    # ------------------------------------------------------------------ ticks

    async def _ticks(self) -> None:
        """At each tick boundary: re-check every session, then build and publish each
        stream's tick (the lease holder only)."""
        last = tick_of(self.clock(), self.refresh_s)
        while True:
            now = self.clock()
            left = self.refresh_s - (now % self.refresh_s)
            await asyncio.sleep(min(0.05, left + 0.005))
            tick = tick_of(self.clock(), self.refresh_s)
            if tick == last:
                continue
            last = tick
            try:  # the sessions are re-checked while the tick is built; nothing is sent before
                builds = (self._build(s, tick) for s in list(self.streams.values()))
                await asyncio.gather(self.recheck(tick), *builds)
            except Exception:  # a Redis or web server blip: the next tick tries again
                log.warning("push tick %s failed", tick, exc_info=True)

    async def recheck(self, tick: int) -> None:
        """Every local session, once per tick (one pipelined read; the account in SQL when
        due, once per account): streams whose session ended or no longer grants their area
        are closed before anything is sent. Recording the use (last seen, last checked) is
        not a decision: it is written after, beside the tick's fan-out."""
        async with self.check_lock:
            if tick <= self.checked_tick:
                return
            viewers = [v for s in self.streams.values() for v in s.viewers if v.open]
            if viewers:
                t0 = time.perf_counter()
                closed, checked, used = await asyncio.to_thread(self._check, viewers)
                if self.metered:
                    M.observe_push_recheck(time.perf_counter() - t0)
                self._close(closed)
                if checked or used:
                    self._spawn(self._record_use(checked, used))
            self.checked_tick = tick

    def _close(self, viewers: list[Viewer]) -> None:
        for v in viewers:
            v.send(None)
            self.leave(v)

    async def _record_use(self, checked: list[S.Session], used: list[S.Session]) -> None:
        """Last checked and last seen of the sessions just re-checked (an open stream is a
        used session); a session that ended meanwhile closes its streams now. Written a
        moment later, once the tick's fan-out is done (not competing with it)."""
        await asyncio.sleep(self.refresh_s / 5)
        try:
            ended = await asyncio.to_thread(self._write_use, checked, used)
        except redis.RedisError:  # the next tick reads and writes again
            return
        if ended:
            self._close(
                [v for s in list(self.streams.values()) for v in s.viewers if v.sid in ended]
            )

    def _write_use(self, checked: list[S.Session], used: list[S.Session]) -> set[str]:
        now_ms = int(self.clock() * 1000)
        fresh = self.sessions.seen_many(checked, now_ms, checked=True) if checked else {}
        fresh.update(self.sessions.seen_many(used, now_ms))
        return {sid for sid, s in fresh.items() if s is None}

    def _check(
        self, viewers: list[Viewer]
    ) -> tuple[list[Viewer], list[S.Session], list[S.Session]]:
        """The viewers whose stream must close, the sessions whose account was re-checked
        and the others still valid (in a thread: Redis, and SQL when due)."""
        now_ms = int(self.clock() * 1000)
        found = self.sessions.load_many([v.sid for v in viewers], now_ms)
        valid: dict[str, S.Session] = {}
        used: list[S.Session] = []
        due: list[S.Session] = []
        for s in found.values():
            if s is None:
                continue
            if now_ms - s.checked_ms >= S.RECHECK_MS:  # the account itself, as the guard does
                due.append(s)
            else:
                used.append(s)
                valid[s.sid] = s
        # the account (or wall token) in SQL once per account, however many of its
        # sessions are due: many viewers often share one account (a control room's)
        grants: dict[tuple[str, ...], bool] = {}
        checked: list[S.Session] = []
        for s in due:
            account = _account(s)
            ok = grants.get(account)
            if ok is None:
                ok = grants[account] = account_grants(self.engine, s, now_ms)
                if not ok:
                    self.sessions.end_user(s.username)
            if ok:
                checked.append(s)
                valid[s.sid] = s
        if len(grants) > sum(grants.values()):  # an account ended: its other sessions too
            gone = {s.username for s in due if not grants[_account(s)]}
            used = [s for s in used if s.username not in gone]
            checked = [s for s in checked if s.username not in gone]
            valid = {sid: s for sid, s in valid.items() if s.username not in gone}
        closed = []
        decided: dict[tuple[str, str, str, str], Decision] = {}  # viewers share a few
        for v in viewers:
            s = valid.get(v.sid)
            if s is None:
                closed.append(v)
                continue
            what = (s.role, s.scope, v.query.page, v.query.area)
            grant = decided.get(what)
            if grant is None:
                grant = decided[what] = self.decide(s, v.query)
            if not grant.granted or grant.data_class != v.grant.data_class:
                closed.append(v)
        return closed, checked, used

    async def _cached(self, stream: Stream, tick: int) -> bytes | None:
        try:
            raw = await self.r.get(
                response_key(self.prefix, slot_of(stream.output, stream.key, tick))
            )
        except redis.RedisError:
            return None
        return raw if isinstance(raw, bytes) else None

    async def _build(self, stream: Stream, tick: int) -> None:
        """The lease holder of (stream, tick) publishes the tick's answer: the web server's
        finished one, or one it asks the web server to build for a verified viewer."""
        t0 = time.perf_counter()
        lease = push_lease(self.prefix, stream.name, tick)
        if not await self.r.set(lease, self.owner, nx=True, px=int(self.refresh_s * 1000) + 1000):
            return
        got_tick, raw = tick, await self._cached(stream, tick)
        source = "cache"
        if raw is None:
            got = await self._ask(stream, tick)
            if got is None:
                await self.r.delete(lease)
                return
            got_tick, raw = got
            self.asked += 1
            source = "web"
        await self.rp.publish(stream.channel, b"%d\n" % got_tick + raw)
        self.published += 1
        if self.metered:
            M.observe_push_build(source, time.perf_counter() - t0)

    async def _ask(self, stream: Stream, tick: int, tries: int = 3) -> tuple[int, bytes] | None:
        """The web server builds the tick for one of the stream's viewers. The session
        re-check of this tick runs at the same time, so a viewer whose session just ended
        is refused by the web server (its own check): the next viewer is asked instead,
        once this tick's re-check has closed the streams that lost the right."""
        body = json.dumps(request_body(stream.query, self.deps[stream.query.page])).encode()
        tried: set[Viewer] = set()
        for _ in range(tries):
            viewer = next((v for v in stream.viewers if v.open and v not in tried), None)
            if viewer is None:
                return None
            tried.add(viewer)
            try:
                got = await asyncio.to_thread(self._post, body, viewer.cookie, stream.name)
            except urllib.error.HTTPError as exc:  # a refusal (401/403): the next viewer
                log.info("push: the web server did not build %s: %s", stream.name, exc)
                await self.recheck(tick)
                continue
            except OSError as exc:  # the web server down or slow: the next tick tries again
                log.info("push: the web server did not build %s: %s", stream.name, exc)
                return None
            if got is not None:
                return got
        return None

    def _get(self, path: str, cookie: str) -> bytes:
        req = urllib.request.Request(self.dashboard + path, headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def _post(self, body: bytes, cookie: str, stream: str) -> tuple[int, bytes] | None:
        """The web server's shared answer for this stream (its own permission check), with
        its tick; None when the answer is not the shared one (a refusal, a stale mark)."""
        req = urllib.request.Request(
            self.dashboard + "/_dash-update-component",
            data=body,
            method="POST",
            headers={
                "Cookie": cookie,
                "Content-Type": "application/json",
                "Origin": self.dashboard,
                "Accept-Encoding": "identity",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            label = resp.headers.get(SLOT_HEADER, "")
            raw: bytes = resp.read()
        name, _, tick = label.partition(":")
        if name != stream or not tick.isdigit():
            return None
        return int(tick), raw

    # ------------------------------------------------------------------ fan-out

    async def _listen(self) -> None:
        while True:
            try:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (redis.RedisError, OSError):
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            channel = (
                msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
            )
            head, _, raw = bytes(msg["data"]).partition(b"\n")
            if not head.isdigit():
                continue
            await self.deliver(channel, int(head), raw)

    async def deliver(self, channel: str, tick: int, raw: bytes) -> None:
        """A published tick to this process's viewers of the channel, after this tick's
        session re-check (each viewer gets each tick once)."""
        streams = [s for s in self.streams.values() if s.channel == channel]
        if not streams:
            return
        if tick > self.checked_tick:
            await self.recheck(tick)
        t0 = time.perf_counter()
        data = frame(tick, raw)  # one bytes object for every viewer
        framed = chunk(data)
        sent = 0
        for stream in streams:
            if tick <= stream.sent_tick:
                continue
            stream.sent_tick = tick
            for v in stream.viewers:
                if v.tick < tick:  # not already sent on connect
                    v.tick = tick
                    v.send(data, framed)
            sent += len(stream.viewers)
            if self.metered:
                M.push_tick_sent(stream.query.page)
        if self.metered and sent:
            # direct writes are done; woken writers run before this callback (in order)
            asyncio.get_running_loop().call_soon(self._fanned_out, t0)

    def _fanned_out(self, t0: float) -> None:
        M.observe_push_fanout(time.perf_counter() - t0)
