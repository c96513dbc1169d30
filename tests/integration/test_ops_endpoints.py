"""/metrics, /healthz and /readyz on the dashboard, the gateway and the pipelines process:
real Redis, real SQL, a real `wangge worker` process for the multiprocess metrics."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from dashboard import ids
from dashboard.app import create_app
from pipelines.access import accounts
from pipelines.city.geography import City, load_city
from pipelines.ops.health import OpsServer
from pipelines.ops.metrics import MULTIPROC_ENV, fresh_dir
from pipelines.settings import GeoSettings, Settings, load_settings
from pipelines.spine.streams import ensure_group, publish
from tests.conftest import (
    TEST_AUDIT_KEY,
    sample,
    settings_for,
    sign_in_client,
    stop_processes,
)
from tests.gateway_support import client_for, credential, gateway_settings, seed_registries
from tests.integration.test_crash import _drained, _env, _spawn

pytestmark = pytest.mark.integration


def with_metrics(s: Settings, **values: Any) -> Settings:
    return dataclasses.replace(s, metrics=dataclasses.replace(s.metrics, **values))


def report(event_id: str, incident: str, lon: float, lat: float, ts: int) -> dict[str, Any]:
    return dict(
        event_id=event_id, incident_id=incident, ts=ts, step="reported", category="sanitation",
        severity=2, source="worker", lon=lon, lat=lat, level="grid", reporter_id="W1",
        description="测试",
    )  # fmt: skip


# ------------------------------------------------------------------ the dashboard


def test_dashboard_metrics_readiness_and_who_may_read(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis
) -> None:
    s = with_metrics(live_settings, token="metrics-token-1")
    key = f"{s.redis.prefix}:{s.streams.reports}"
    ensure_group(rclient, key, s.streams.group)
    publish(rclient, key, [b"{}"] * 5)  # five unread entries: the group's lag
    accounts.create_user(
        engine, city, "tester", "city_leader", city.city_id, "pw-unused-1", now_ms=1
    )
    app = create_app(s, city=city, r=rclient)
    c = app.server.test_client()
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 200
    assert r.json == {
        "status": "ready",
        "checks": {"redis": "ok", "database": "ok", "city": "ok"},
    }
    # a page is counted by callback page, and its session as one viewer
    before = c.get("/metrics").data.decode()
    sign_in_client(c)
    fresh_cb = next(k for k in app.callback_map if k.startswith(f"{ids.FRESH}.children"))
    spec = app.callback_map[fresh_cb]
    tick = spec["inputs"][0]["id"]
    # every input the callback declares (a page's tick, and its time machine's moment)
    given = [{**i, "value": 1 if i["property"] == "n_intervals" else None} for i in spec["inputs"]]
    body = {
        "output": fresh_cb,
        "outputs": {"id": ids.FRESH, "property": "children"},
        "inputs": given,
        "state": [{"id": ids.LANG, "property": "data", "value": "en"}],
        "changedPropIds": [f"{tick}.n_intervals"],
    }
    for _ in range(2):
        resp = c.post(
            "/_dash-update-component",
            data=json.dumps(body),
            content_type="application/json",
            headers={"Origin": "http://localhost"},
        )
        assert resp.status_code in (200, 204), resp.data[:300]
    page = "warnings" if tick.startswith("warn") else "work"
    m = c.get("/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    text = m.data.decode()
    name = "wangge_dashboard_callback_seconds_count"
    assert sample(text, name, page=page) - sample(before, name, page=page) == 2
    assert sample(text, "wangge_viewers") == 1  # one session, two requests
    assert sample(text, "wangge_stream_lag", feed="reports") == 5
    assert sample(text, "wangge_stream_pending", feed="reports") == 0
    assert sample(text, "wangge_redis_up") == 1
    # nothing about who: no user, no session id, no token
    sid = c.get_cookie("wg_session")
    assert "tester" not in text and "metrics-token-1" not in text
    assert sid is None or sid.value not in text
    # another address: only with the bearer token
    far = {"REMOTE_ADDR": "203.0.113.7"}
    assert c.get("/metrics", environ_base=far).status_code == 403
    ok = c.get("/metrics", environ_base=far, headers={"Authorization": "Bearer metrics-token-1"})
    assert ok.status_code == 200
    bad = c.get("/metrics", environ_base=far, headers={"Authorization": "Bearer metrics-token-2"})
    assert bad.status_code == 403
    off = create_app(with_metrics(s, enabled=False), city=city, r=rclient).server.test_client()
    assert off.get("/metrics").status_code == 404


def test_dashboard_readyz_names_what_is_down(
    live_settings: Settings, city: City, tmp_path: Path
) -> None:
    no_db = dataclasses.replace(
        live_settings,
        database=dataclasses.replace(
            live_settings.database, url=f"sqlite:///{tmp_path}/missing/dir/x.db", schema=""
        ),
    )
    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    c = create_app(no_db, city=city, r=down).server.test_client()
    assert c.get("/healthz").status_code == 200  # alive all the same
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json["status"] == "not ready"
    checks = r.json["checks"]
    assert checks["redis"].startswith("unreachable") and checks["database"].startswith(
        "unreachable"
    )
    assert checks["city"] == "ok"
    assert "127.0.0.1" not in r.data.decode() and "sqlite" not in r.data.decode()  # no URLs


# ------------------------------------------------------------------ the gateway


def test_gateway_counts_requests_by_protocol_and_status(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine: Engine, city: City
) -> None:
    # the test client's peer is no address ("testclient"): only the bearer token reads
    s = with_metrics(gateway_settings(redis_url, prefix, db_url, tmp_path), token="gw-tok")
    seed_registries(engine, city)
    key = credential(engine, city, "hotline")
    with client_for(s, city, engine) as c:
        assert c.get("/metrics").status_code == 403
        auth = {"Authorization": "Bearer gw-tok"}
        before = c.get("/metrics", headers=auth).text
        assert (
            c.post(
                "/batch/reports", content=b"[", headers={"Authorization": f"Bearer {key}"}
            ).status_code
            == 400
        )
        for _ in range(3):
            assert c.post("/batch/reports", content=b"[]").status_code == 401
        assert c.get("/readyz").status_code == 200
        text = c.get("/metrics", headers=auth).text
    name = "wangge_gateway_requests_total"
    delta = {
        st: sample(text, name, protocol="batch", status=st)
        - sample(before, name, protocol="batch", status=st)
        for st in ("400", "401")
    }
    assert delta == {"400": 1, "401": 3}
    assert sample(text, name, protocol="health", status="200") >= 2  # /readyz and /metrics
    assert sample(text, name, protocol="health", status="403") >= 1
    assert key not in text


def test_gateway_metrics_off(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine: Engine, city: City
) -> None:
    s = gateway_settings(redis_url, prefix, db_url, tmp_path)
    s = with_metrics(s, enabled=False)
    with client_for(s, city, engine) as c:
        assert c.get("/metrics").status_code == 404
        assert c.get("/healthz").status_code == 200


# ------------------------------------------------------------------ the pipelines process


def _get(url: str, token: str = "") -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_pipelines_server_sums_its_worker_processes(
    redis_url: str, prefix: str, db_url: Any, engine: Engine, tmp_path: Path
) -> None:
    """A real `wangge worker` in multiprocess mode: what it applied and dead-lettered is on
    the parent's /metrics (the parent never ran a batch itself)."""
    env = _env(redis_url, prefix, db_url, tmp_path / "geo")
    mdir = fresh_dir(tmp_path / "metrics")
    env[MULTIPROC_ENV] = str(mdir)
    s = load_settings(environ=env)
    s = with_metrics(s, pipelines_port=0)
    s = dataclasses.replace(s, auth=dataclasses.replace(s.auth, audit_key=TEST_AUDIT_KEY))
    city = load_city(dataclasses.replace(GeoSettings(), grids=400, cache_dir=str(tmp_path / "geo")))
    r = redis.Redis.from_url(redis_url)
    now = int(time.time() * 1000)
    g = city.grids.row(3, named=True)
    good = [report(f"E{i}", f"I{i}", g["lon"], g["lat"], now - 60_000 + i) for i in range(7)]
    payloads = [orjson.dumps(e) for e in good] + [b"not json", b"{}"]  # 7 new, 2 dead
    for feed in ("reports", "locations", "video"):
        ensure_group(r, f"{prefix}:{feed}", s.streams.group)
    publish(r, f"{prefix}:reports", payloads)
    srv = OpsServer(s, r, engine, city, children_dir=str(mdir)).start()
    # this (test) process's own counters are on the page too, added to the children's
    own = generate_latest(REGISTRY).decode()
    own_applied = sample(own, "wangge_events_applied_total", feed="reports")
    own_dead = sum(
        sample(own, "wangge_dead_letters_total", feed="reports", reason=x)
        for x in ("malformed", "missing_field")
    )
    base = f"http://127.0.0.1:{srv.port}"
    proc = _spawn(env, "reports", "reports-m1")
    try:
        deadline = time.monotonic() + 40
        while not _drained(r, prefix, s.streams.group):
            assert time.monotonic() < deadline and proc.poll() is None, "worker did not drain"
            time.sleep(0.2)
        # the batch is recorded just after its XACK: wait for it (still bounded)
        while True:
            code, text = _get(base + "/metrics")
            got = sample(text, "wangge_events_applied_total", feed="reports") - own_applied
            if got >= 7 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        stop_processes([proc])
    try:
        assert code == 200
        assert sample(text, "wangge_events_applied_total", feed="reports") - own_applied == 7
        dead = {
            reason: sample(text, "wangge_dead_letters_total", feed="reports", reason=reason)
            for reason in ("malformed", "missing_field")
        }
        assert sum(dead.values()) - own_dead == 2, dead
        assert sample(text, "wangge_batch_seconds_count", feed="reports") >= 1
        assert sample(text, "wangge_stream_lag", feed="reports") == 0
        assert _get(base + "/healthz") == (200, json.dumps({"status": "ok"}))
        code, body = _get(base + "/readyz")
        assert code == 200 and json.loads(body)["checks"] == {
            "redis": "ok",
            "database": "ok",
            "city": "ok",
        }
        assert _get(base + "/nothing")[0] == 404
    finally:
        srv.stop()
        r.close()


def test_pipelines_server_metrics_need_an_allowed_address_or_the_token(
    redis_url: str, prefix: str, db_url: Any, engine: Engine, tmp_path: Path, city: City
) -> None:
    s = settings_for(redis_url, prefix, db_url, tmp_path)
    s = with_metrics(s, pipelines_port=0, allow="10.9.9.9", token="tok-9")
    r = redis.Redis.from_url(redis_url)
    srv = OpsServer(s, r, engine, city).start()
    base = f"http://127.0.0.1:{srv.port}"
    try:
        assert _get(base + "/metrics")[0] == 403
        assert _get(base + "/metrics", "tok-8")[0] == 403
        assert _get(base + "/metrics", "tok-9")[0] == 200
        assert _get(base + "/healthz")[0] == 200  # health needs no token
    finally:
        srv.stop()
        r.close()


# ------------------------------------------------------------------ the Grafana dashboard


def test_grafana_dashboard_charts_every_metric_and_only_those(
    live_settings: Settings, rclient: redis.Redis
) -> None:
    """Every wangge_* name a panel queries is on a /metrics page, and every family a
    /metrics page can carry has a panel (pipelines/ops/grafana/wangge.json)."""
    import re

    from pipelines.ops import metrics as M

    M.observe_batch("reports", 0.01, 1, {"malformed": 1})
    M.observe_tick(0.2)
    M.observe_callback("panorama", 0.05)
    M.observe_request("batch", 200, 0.01)
    M.push_viewers("pan", 1)
    M.push_tick_sent("pan")
    M.observe_push_build("web", 0.1)
    M.observe_push_recheck(0.01)
    M.observe_push_fanout(0.02)
    M.observe_mqtt("written")
    M.mqtt_subscribed(True)
    extra = [
        M.StreamCollector(rclient, live_settings),
        M.ViewersCollector(rclient, live_settings.redis.prefix),
    ]
    page = M.exposition(extra).decode()
    families = {
        f.name
        for f in text_string_to_metric_families(page)
        if f.name.startswith("wangge_") and not f.name.endswith("_created")  # creation times
    }
    series = {s.name for f in text_string_to_metric_families(page) for s in f.samples}
    path = Path(__file__).resolve().parents[2] / "pipelines/ops/grafana/wangge.json"
    board = json.loads(path.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queried = {n for e in exprs for n in re.findall(r"\bwangge_[a-z_]+", e)}
    assert queried and queried <= series, queried - series
    charted = {f for f in families if any(q == f or q.startswith(f + "_") for q in queried)}
    assert charted == families, families - charted
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_gateway_workers_share_their_counts(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path
) -> None:
    """`wangge gateway` with two uvicorn workers: whichever answers /metrics counts the
    requests both served (multiprocess files under <var_dir>/metrics/gateway), and what
    the Frigate subscriber of the parent process did."""
    import socket
    import subprocess
    import sys

    import requests

    from pipelines.gateway.broker import EmbeddedBroker
    from tests.integration.test_cli import cli_env
    from tests.integration.test_gateway_frigate import publish

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, schema = db_url
    broker = EmbeddedBroker(tmp_path / "mqtt").start()
    topic = f"wgtest-{prefix.rsplit(':', 1)[-1]}"
    env = cli_env(
        tmp_path,
        REDIS_URL=redis_url,
        WANGGE_REDIS_PREFIX=prefix,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
        WANGGE_GATEWAY_WORKERS="2",
        WANGGE_GATEWAY_PORT=str(port),
        WANGGE_GATEWAY_MQTT_URL=broker.url,
        WANGGE_GATEWAY_MQTT_CLIENT_ID=topic,
        WANGGE_GATEWAY_FRIGATE_TOPIC_PREFIX=topic,
        WANGGE_GATEWAY_AUTH_FAILURES_PER_MINUTE="1000",
    )
    env.pop(MULTIPROC_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 50
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)
        n = 40
        for _ in range(n):  # a new connection each: both workers get some
            assert requests.post(base + "/batch/reports", data=b"[]", timeout=5).status_code == 401
        files = list((tmp_path / "var" / "metrics" / "gateway").glob("counter_*.db"))
        assert len(files) >= 1

        def counted() -> float:
            text = requests.get(base + "/metrics", timeout=5).text
            return sample(text, "wangge_gateway_requests_total", protocol="batch", status="401")

        # a worker counts a request once its answer is sent: the last one may land a moment
        # after the client has it; never more than were sent
        deadline = time.monotonic() + 30
        while (got := counted()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got == n
        for _ in range(4):  # whichever worker answers
            assert counted() == n

        def frigate() -> tuple[float, float]:
            text = requests.get(base + "/metrics", timeout=5).text
            return (
                sample(text, "wangge_mqtt_subscribed"),
                sample(text, "wangge_mqtt_messages_total", outcome="dead:malformed"),
            )

        deadline = time.monotonic() + 30
        while frigate()[0] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        publish(broker.url, f"{topic}/events", [b"{not json"])
        while frigate() != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(4):  # whichever worker answers
            assert frigate() == (1, 1)
    finally:
        stop_processes([proc])
        broker.stop()
