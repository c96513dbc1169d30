"""Live push (``dashboard/push/``) on a real dashboard server and a real push server
(uvicorn), one Redis, one database, one clock moved by the test.

From the rules (README "Live push", "Privacy"):

* viewers of the same data get each tick over their stream, on one push process or
  another (two push servers here, sharing ticks through Redis pub/sub); a tick is
  serialised once for all of them (the web server's instrumented ``ResponseCache.built``),
  and a poller of the same tick is served those bytes;
* the right to the area is decided on connect: a viewer outside the scope, or without a
  session, is refused and never receives a panel;
* the right is re-checked before every tick sent: a revoked session's stream is closed at
  the next tick, without that tick's panel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from dashboard import ids
from dashboard.app import create_app
from dashboard.auth import Decision
from dashboard.push.hub import QUEUE, SLOW, Hub, Stream, Viewer, chunk, frame
from dashboard.push.server import create_app as create_push
from dashboard.push.spec import PAGES, Query, refresh_callback, request_body, tick_of
from dashboard.responses import (
    EXTENSION,
    ResponseCache,
    push_channel,
    response_key,
    slot_of,
    stream_of,
)
from pipelines.access import accounts, audit
from pipelines.access import sessions as S
from pipelines.city.geography import City, demo_city
from pipelines.gateway.server import free_port
from pipelines.redis_client import connect as redis_connect
from tests.clock import MOMENTS, Clock
from tests.conftest import (
    open_engine,
    private_database,
    private_prefix,
    settings_for,
    sign_in_client,
)
from tests.integration.test_dashboard import fill
from tests.integration.test_shared_responses import ask
from tests.push_client import PushServer, SseStream, open_stream

pytestmark = pytest.mark.integration
WAIT_S = 30.0


@dataclass
class World:
    app: Any
    clock: Clock
    push_port: int
    other_port: int  # a second push server on the same Redis
    district: str
    elsewhere: str
    engine: Any
    refresh_ms: int
    web_port: int


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with private_prefix(redis_url) as prefix:
        yield from push_world(redis_url, prefix, tmp_path_factory.mktemp("push"))


def push_world(url: str, prefix: str, tmp: Path) -> Iterator[World]:
    """A dashboard and two push servers on the Redis at ``url`` (one server or a cluster)
    under ``prefix``, with their own database."""
    city: City = demo_city(2026, n_grids=300)
    with private_database(tmp) as db:
        settings = settings_for(url, prefix, db, tmp)
        r = redis_connect(url)
        engine = open_engine(db)
        clock = Clock(MOMENTS[0].ms)
        fill(settings, city, r, engine, clock.now_ms, minutes=5)
        app = create_app(settings, city=city, r=r, clock=clock)
        web = make_server("127.0.0.1", 0, app.server, threaded=True)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        port = free_port("127.0.0.1")
        push_settings = dataclasses.replace(
            settings,
            push=dataclasses.replace(
                settings.push, dashboard_url=f"http://127.0.0.1:{web.server_port}"
            ),
        )
        push = PushServer(create_push(push_settings, city=city, engine=engine, clock=clock), port)
        push.start()
        other_port = free_port("127.0.0.1")
        other = create_push(push_settings, city=city, engine=engine, clock=clock)
        # the second on h11: its frames take the ASGI path, the first's go to the socket
        second = PushServer(other, other_port, http="h11").start()
        district = city.children(city.city_id)[0]
        elsewhere = city.children(city.city_id)[1]
        refresh_ms = int(settings.dashboard.refresh_s * 1000)
        yield World(
            app, clock, port, other_port, district, elsewhere, engine, refresh_ms, web.server_port
        )
        second.stop()
        push.stop()
        web.shutdown()
        engine.dispose()
        r.close()


def cookie_of(w: World, role: str, scope: str, name: str) -> str:
    client = sign_in_client(w.app.server.test_client(), role, scope, name)
    return f"wg_session={client.get_cookie('wg_session').value}"


def built(w: World) -> int:
    rc: ResponseCache = w.app.server.extensions[EXTENSION]
    return rc.built


async def connect(w: World, cookie: str, area: str, port: int = 0) -> SseStream:
    return await open_stream(
        "127.0.0.1", port or w.push_port, f"/push/pan?area={area}&metric=online&lang=zh-CN", cookie
    )


async def next_tick(s: SseStream) -> tuple[str, Any]:
    ev = await asyncio.wait_for(s.next(), WAIT_S)
    assert ev is not None, "the stream closed"
    return ev.id, json.loads(ev.data) if ev.event == "tick" else ev.event


def test_two_viewers_get_each_tick_from_one_serialisation(world: World) -> None:
    w = world
    w.app.server.test_client().get("/_dash-dependencies")
    w.clock.advance(3_600_000)  # a tick of its own
    a = cookie_of(w, "city_leader", "320100", "push-a")
    b = cookie_of(w, "city_leader", "320100", "push-b")

    async def run() -> None:
        before = built(w)
        s1 = await connect(w, a, w.district)
        s2 = await connect(w, b, w.district, w.other_port)  # on the other push process
        assert (s1.status, s2.status) == (200, 200)
        assert s1.headers["content-type"].startswith("text/event-stream")
        id1, p1 = await next_tick(s1)
        id2, p2 = await next_tick(s2)
        assert id1 == id2 and p1 == p2
        kpis = p1["response"][ids.P_KPIS]["children"]
        assert kpis, "the tick carries the panel's outputs"
        assert built(w) == before + 1  # serialised once for both viewers
        # a poller of the same tick is served the same bytes, without serialising again
        poller = sign_in_client(w.app.server.test_client(), "city_leader", "320100", "push-c")
        polled = ask(poller, w.app, w.district, 1)
        assert json.loads(polled.data) == p1 and built(w) == before + 1
        # the next tick reaches both viewers, serialised once more
        w.clock.advance(w.refresh_ms)
        n1, q1 = await next_tick(s1)
        n2, q2 = await next_tick(s2)
        assert int(n1) == int(id1) + 1 and (n1, q1) == (n2, q2)
        assert built(w) == before + 2
        await s1.close()
        await s2.close()

    asyncio.run(run())


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_pushed_page_streams_its_refresh_outputs_serialised_once(
    world: World, page: str
) -> None:
    """For every page the push server serves (``spec.PAGES``): two viewers of one area on
    two push processes get the same tick, made of that page's refresh outputs (as the
    dashboard declares them), serialised once; a poller asking as the page does gets those
    bytes."""
    w = world
    w.clock.advance(3_600_000)  # a tick of its own
    a, b, c = (cookie_of(w, "city_leader", "320100", f"push-{page}-{x}") for x in "abc")
    web = f"http://127.0.0.1:{w.web_port}"
    deps = requests.get(f"{web}/_dash-dependencies", headers={"Cookie": c}, timeout=30).json()
    callback = refresh_callback(page, deps)
    assert callback is not None, f"no refresh callback of {page} in the dashboard"
    outputs = {o.rsplit(".", 1)[0] for o in str(callback["output"])[2:-2].split("...")}
    path = f"/push/{page}?area={w.district}&lang=zh-CN"

    async def run() -> None:
        before = built(w)
        s1 = await open_stream("127.0.0.1", w.push_port, path, a)
        s2 = await open_stream("127.0.0.1", w.other_port, path, b)
        assert (s1.status, s2.status) == (200, 200)
        id1, p1 = await next_tick(s1)
        id2, p2 = await next_tick(s2)
        assert id1 == id2 and p1 == p2
        shown = set(p1["response"])
        assert PAGES[page].first_output[2:].split(".")[0] in shown and shown <= outputs
        assert built(w) == before + 1
        query = Query.parse(page, {"area": w.district, "lang": "zh-CN"})
        assert query is not None
        polled = requests.post(
            f"{web}/_dash-update-component",
            json=request_body(query, callback),
            headers={"Cookie": c, "Origin": web},
            timeout=30,
        )
        assert polled.status_code == 200 and polled.json() == p1
        assert built(w) == before + 1
        await s1.close()
        await s2.close()

    asyncio.run(run())


def test_a_viewer_without_the_right_is_refused_and_gets_nothing(world: World) -> None:
    w = world
    w.clock.advance(7_200_000)
    outsider = cookie_of(w, "district_commander", w.elsewhere, "push-x")
    inside = cookie_of(w, "district_commander", w.district, "push-y")

    async def run() -> None:
        before = built(w)
        refused = await connect(w, outsider, w.district)
        assert refused.status == 403 and b"response" not in refused.body
        nobody = await connect(w, "", w.district)
        assert nobody.status == 401
        forged = await connect(w, "wg_session=eyJzaWQiOiJ4In0.forged.sig", w.district)
        assert forged.status == 401
        assert built(w) == before  # nothing built for a refusal
        # the refusal is audited as the dashboard audits a refused callback
        denied = audit.query(w.engine, actor="push-x", action="denied")
        assert denied.height == 1 and denied["target"][0] == w.district
        assert json.loads(denied["detail"][0])["callback"] == "push:pan"
        # the same viewer on its own district is served
        own = await connect(w, outsider, w.elsewhere)
        assert own.status == 200
        _, payload = await next_tick(own)
        assert ids.P_KPIS in payload["response"]
        # an insider's stream of the district does not reach the outsider's connection
        ok = await connect(w, inside, w.district)
        await next_tick(ok)
        await own.close()
        await ok.close()

    asyncio.run(run())


def test_a_revoked_session_stream_closes_on_the_next_tick(world: World) -> None:
    w = world
    w.clock.advance(10_800_000)
    gone = cookie_of(w, "city_leader", "320100", "push-revoked")
    stays = cookie_of(w, "city_leader", "320100", "push-stays")
    guard = w.app.server.extensions["wangge.guard"]

    async def run() -> None:
        s1 = await connect(w, gone, w.district)
        s2 = await connect(w, stays, w.district)
        first, _ = await next_tick(s1)
        await next_tick(s2)
        guard.sessions.end_user("push-revoked")  # e.g. logout elsewhere, disabled
        w.clock.advance(w.refresh_ms)
        ev = await asyncio.wait_for(s1.next(), WAIT_S)
        assert ev is not None and ev.event == "close"  # not the new tick's panel
        assert await asyncio.wait_for(s1.next(), WAIT_S) is None  # and the stream ended
        nxt, _ = await next_tick(s2)  # the other viewer goes on
        assert int(nxt) == int(first) + 1
        again = await connect(w, gone, w.district)
        assert again.status == 401
        await s2.close()

    asyncio.run(run())


def sid_of(w: World, cookie: str) -> str:
    server = w.app.server
    signer = server.session_interface.get_signing_serializer(server)
    return str(signer.loads(cookie.split("=", 1)[1])["sid"])


def test_a_disabled_account_closes_all_its_streams_and_the_rest_are_marked_checked(
    world: World,
) -> None:
    """Several streams of one account and one of another: once the account re-check is
    due, the disabled account's streams all close (without the tick), the other goes on
    and its session is recorded as re-checked at that moment (not re-read at every tick)."""
    w = world
    w.clock.advance(14_400_000)
    now = w.clock.now_ms
    guard = w.app.server.extensions["wangge.guard"]
    city = w.app.server.extensions["wangge"].city
    pw = "a-long-Passw0rd-for-push"
    accounts.create_user(w.engine, city, "push-shared", "city_leader", "320100", pw, now_ms=now)
    accounts.create_user(w.engine, city, "push-kept", "city_leader", "320100", pw, now_ms=now)
    shared = [cookie_of(w, "city_leader", "320100", "push-shared") for _ in range(3)]
    kept = cookie_of(w, "city_leader", "320100", "push-kept")

    async def run() -> None:
        streams = [await connect(w, c, w.district) for c in [*shared, kept]]
        assert [s.status for s in streams] == [200] * 4
        firsts = [(await next_tick(s))[0] for s in streams]
        # disabled in SQL only (its sessions left in Redis): the push server's own
        # account re-check must find it
        accounts.disable_user(w.engine, "push-shared", now_ms=w.clock.now_ms)
        w.clock.advance(S.RECHECK_MS + w.refresh_ms)
        for s in streams[:3]:
            ev = await asyncio.wait_for(s.next(), WAIT_S)
            assert ev is not None and ev.event == "close"
        nxt, payload = await next_tick(streams[3])
        assert int(nxt) > int(firsts[3]) and ids.P_KPIS in payload["response"]
        # the use is recorded beside the fan-out (not before it): wait for it
        for _ in range(100):
            got = guard.sessions.load_many([sid_of(w, kept)], w.clock.now_ms)[sid_of(w, kept)]
            assert got is not None
            if got.checked_ms == w.clock.now_ms:
                break
            await asyncio.sleep(0.05)
        assert got.checked_ms == w.clock.now_ms
        assert all(
            v is None
            for v in guard.sessions.load_many([sid_of(w, c) for c in shared], now).values()
        )
        await streams[3].close()

    asyncio.run(run())


def metric(port: int, name: str) -> float:
    """One series of the push server's /metrics (0 when absent)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_push_server_exposes_its_metrics(world: World) -> None:
    """/metrics: open streams, ticks sent, the build, re-check and fan-out times (each
    counted once per tick); only for the allowed networks (loopback here)."""
    w = world
    w.clock.advance(18_000_000)
    cookie = cookie_of(w, "city_leader", "320100", "push-metrics")
    p = w.push_port
    open_ = 'wangge_push_viewers{page="pan"}'
    sent = 'wangge_push_ticks_sent_total{page="pan"}'
    fanout = "wangge_push_fanout_seconds_count"
    recheck = "wangge_push_recheck_seconds_count"
    builds = 'wangge_push_tick_build_seconds_count{source="web"}'

    async def run() -> None:
        before = {k: metric(p, k) for k in (open_, sent, fanout, recheck, builds)}
        s = await connect(w, cookie, w.elsewhere)
        await next_tick(s)
        assert metric(p, open_) == before[open_] + 1
        w.clock.advance(w.refresh_ms)
        await next_tick(s)
        # both processes share this test's registry: at least this stream's tick
        assert metric(p, sent) >= before[sent] + 1
        assert metric(p, fanout) >= before[fanout] + 1
        assert metric(p, recheck) >= before[recheck] + 1
        assert metric(p, builds) >= before[builds] + 1
        await s.close()
        for _ in range(100):  # the server sees the client go
            if metric(p, open_) == before[open_]:
                break
            await asyncio.sleep(0.1)
        assert metric(p, open_) == before[open_]

    asyncio.run(run())
    assert requests.get(f"http://127.0.0.1:{p}/push/metrics", timeout=10).status_code == 200


def test_a_slow_connection_keeps_only_the_newest_frames() -> None:
    """Frames go straight to a connection that keeps up; once more than ``SLOW`` bytes
    wait unsent (a client that stopped reading), they wait in the viewer's queue instead,
    the newest ``QUEUE`` of them, in order, and the writer is woken."""

    async def run() -> None:
        accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.Future()

        async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer)

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, client = await asyncio.open_connection("127.0.0.1", port)  # never reads
        conn = await accepted
        query = Query.parse("pan", {"area": "320100"})
        assert query is not None
        v = Viewer("sid", "", query, Decision(True, "320100", "aggregates"))
        v.direct = conn.transport  # type: ignore[assignment]
        big = b"x" * 65536
        for _ in range(2000):  # the kernel's buffers first, then the transport's
            if conn.transport.get_write_buffer_size() > SLOW:
                break
            v.send(big, chunk(big))
            assert not v.frames  # written, not queued
        assert conn.transport.get_write_buffer_size() > SLOW
        waiting = asyncio.ensure_future(v.take())
        await asyncio.sleep(0)
        for i in range(QUEUE + 3):
            v.send(b"%d" % i, chunk(b"%d" % i))
        got = await asyncio.wait_for(waiting, 5)
        assert got == [b"%d" % i for i in range(3, QUEUE + 3)]
        client.close()
        conn.close()
        server.close()

    asyncio.run(run())


@contextlib.contextmanager
def one_cached_tick(
    redis_url: str, tmp_path: Path, hub_class: type[Hub] = Hub
) -> Iterator[tuple[Hub, Stream, Viewer, int]]:
    """A hub with one stream of one viewer, whose current tick's answer ``{"n":1}`` is in
    the response cache (the sessions' re-check is not what these tests are about)."""
    city = demo_city(2026, n_grids=300)
    with private_prefix(redis_url) as prefix, private_database(tmp_path) as db:
        s = settings_for(redis_url, prefix, db, tmp_path)
        r = redis_connect(redis_url)
        hub = hub_class(s, city, None, clock=lambda: 1_796_000_000.0, r_sync=r)
        query = Query.parse("pan", {"area": city.city_id})
        assert query is not None
        grant = Decision(True, city.city_id, "aggregates")
        output, key = f"..{ids.P_GEO}.hideout...", query.key(grant)
        name = stream_of(output, key)
        stream = Stream(name, push_channel(prefix, name), output, key, query)
        tick = tick_of(hub.clock(), hub.refresh_s)
        r.set(response_key(prefix, slot_of(output, key, tick)), b'{"n":1}')
        v = Viewer("sid", "", query, grant)
        stream.viewers.add(v)
        hub.streams[name] = stream
        hub.checked_tick = tick + 1
        try:
            yield hub, stream, v, tick
        finally:
            r.close()


def test_a_tick_sent_on_connect_is_not_sent_again_when_it_is_published(
    redis_url: str, tmp_path: Path
) -> None:
    """A viewer connecting during a tick gets it from the cache at once; that tick's publish,
    which may come after (the lease holder's build, another process's), must not reach it a
    second time; the next tick must."""
    with one_cached_tick(redis_url, tmp_path) as (hub, stream, v, tick):

        async def run() -> None:
            await hub._first(v, stream)
            await hub.deliver(stream.channel, tick, b'{"n":1}')
            await hub.deliver(stream.channel, tick + 1, b'{"n":2}')

        asyncio.run(run())
        assert list(v.frames) == [frame(tick, b'{"n":1}'), frame(tick + 1, b'{"n":2}')]


class PublishedDuringTheCacheRead(Hub):
    """The tick's publish lands while the connect reads the cache."""

    async def _cached(self, stream: Stream, tick: int) -> bytes | None:
        raw = await super()._cached(stream, tick)
        await self.deliver(stream.channel, tick, b'{"n":1}')
        return raw


def test_a_tick_published_while_the_cache_is_read_on_connect_is_sent_once(
    redis_url: str, tmp_path: Path
) -> None:
    """The other order (seen in CI, two push processes): the publish reaches the new viewer
    while its connect still reads the cache; the connect must not send that tick again."""
    with one_cached_tick(redis_url, tmp_path, PublishedDuringTheCacheRead) as t:
        hub, stream, v, tick = t

        async def run() -> None:
            await hub._first(v, stream)
            await hub.deliver(stream.channel, tick + 1, b'{"n":2}')

        asyncio.run(run())
        assert list(v.frames) == [frame(tick, b'{"n":1}'), frame(tick + 1, b'{"n":2}')]
