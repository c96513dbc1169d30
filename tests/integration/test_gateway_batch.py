"""The batch API (all or nothing, the pipelines' own validation, the sender's scope) and the
gateway's own endpoints (healthz, readyz, the OpenAPI document, the offline docs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.city.geography import City
from pipelines.gateway import credentials as cr
from tests.gateway_support import (
    NOW,
    client_for,
    credential,
    gateway_settings,
    grid,
    seed_registries,
    stream,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine, city, rclient):
    s = gateway_settings(redis_url, prefix, db_url, tmp_path)
    seed_registries(engine, city)
    street = city.ancestors(grid(city, 0)[0])[1]
    keys = {
        "hotline": credential(engine, city, "hotline", area_id=street),
        "fleet": credential(engine, city, "fleet"),
        "camera": credential(engine, city, "camera", cameras=["C1"]),
    }
    with client_for(s, city, engine) as c:
        yield {"s": s, "c": c, "r": rclient, "k": keys, "street": street}


def report(city: City, i: int, n: int = 0, **kw: Any) -> dict[str, Any]:
    _, lon, lat = grid(city, i)
    ev = dict(
        event_id=f"H{i}-{n}",
        incident_id=f"H{i}",
        ts=NOW - 60_000,
        step="reported",
        category="dispute",
        severity=2,
        source="hotline",
        lon=lon,
        lat=lat,
        description="邻里纠纷",
    )
    ev.update(kw)
    return ev


def post(env: dict[str, Any], feed: str, events: Any, key: str | None = None) -> Any:
    k = (
        key
        if key is not None
        else env["k"][{"reports": "hotline", "locations": "fleet", "video": "camera"}[feed]]
    )
    return env["c"].post(
        f"/batch/{feed}", json={"events": events}, headers={"Authorization": f"Bearer {k}"}
    )


def test_reports_batch_is_all_or_nothing(env, city) -> None:
    good = [
        report(city, 0),
        report(city, 1, 0),
        report(city, 1, 1, step="accepted", ts=NOW - 30_000),
    ]
    bad = [*good, report(city, 2, severity=9), report(city, 3, ts=str(NOW))]
    r = post(env, "reports", bad)
    assert r.status_code == 400
    items = r.json()["error"]["items"]
    assert {(i["index"], i["reason"]) for i in items} >= {(3, "out_of_range")}
    assert stream(env["r"], env["s"], "reports") == []  # nothing written
    r = post(env, "reports", good)
    assert r.status_code == 200 and r.json() == {"accepted": 3, "duplicates": 0}
    r = post(env, "reports", good)  # a retried batch: duplicates, not written again
    assert r.json() == {"accepted": 0, "duplicates": 3}
    assert len(stream(env["r"], env["s"], "reports")) == 3


def test_scope_of_each_feed(env, city) -> None:
    far = next(
        i for i in range(city.grids.height) if env["street"] not in city.ancestors(grid(city, i)[0])
    )
    r = post(env, "reports", [report(city, 0), report(city, far)])
    assert r.status_code == 403 and r.json()["error"]["items"] == [
        {"index": 1, "reason": "forbidden", "field": "lon/lat"}
    ]
    r = post(env, "reports", [report(city, 0, lon=116.4, lat=39.9)])  # Beijing
    assert r.status_code == 400 and r.json()["error"]["items"][0]["reason"] == "outside_city"
    _, lon, lat = grid(city, 2)
    loc = {"worker_id": "W3", "ts": NOW - 1000, "lon": lon, "lat": lat, "mock": False}
    assert post(env, "locations", [loc]).json() == {"accepted": 1, "duplicates": 0}
    assert post(env, "locations", [loc]).json() == {"accepted": 0, "duplicates": 1}
    r = post(env, "locations", [{**loc, "worker_id": "W404"}])
    assert r.status_code == 400 and r.json()["error"]["items"][0]["reason"] == "unknown_worker"
    (written,) = stream(env["r"], env["s"], "locations")
    assert written["event_id"].startswith("osm-")
    alert = {"alert_id": "A1", "camera_id": "C1", "label": "fall", "score": 0.8, "ts": NOW - 1000}
    assert post(env, "video", [alert]).json()["accepted"] == 1
    assert post(env, "video", [{**alert, "camera_id": "C2"}]).status_code == 403
    assert post(env, "video", [alert], key=env["k"]["hotline"]).status_code == 403
    assert post(env, "reports", [report(city, 0)], key="").status_code == 401
    assert (
        env["c"]
        .post(
            "/batch/other",
            json={"events": []},
            headers={"Authorization": f"Bearer {env['k']['hotline']}"},
        )
        .status_code
        == 404
    )
    r = env["c"].post(
        "/batch/reports", content=b"[", headers={"Authorization": f"Bearer {env['k']['hotline']}"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"


def test_health_readiness_openapi_and_docs(env) -> None:
    c = env["c"]
    assert c.get("/healthz").json() == {"status": "ok"}
    r = c.get("/readyz")
    want = {"redis": "ok", "stream": "ok", "database": "ok", "city": "ok"}
    assert r.status_code == 200 and r.json()["checks"] == want
    spec = c.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    for path in (
        "/",
        "/osmand/{key}",
        "/open311/v2/requests.{format}",
        "/frigate/{topic}",
        "/batch/{feed}",
        "/readyz",
    ):
        assert path in spec["paths"], path
    docs = c.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    # self-contained: nothing loaded from elsewhere (works offline)
    assert not any(t in docs.content for t in (b"<script", b"<link", b"src=", b"@import"))
    assert "Open311" in docs.text and "OsmAnd" in docs.text
    assert c.get("/nothing").status_code == 404


def test_readyz_reports_an_unreachable_redis(
    redis_url, prefix, db_url, tmp_path, engine, city
) -> None:
    s = gateway_settings("redis://127.0.0.1:1/0", prefix, db_url, tmp_path)
    with client_for(s, city, engine) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("failed")
        key = credential(engine, city, "fleet")
        r = c.get(f"/?key={key}&id=W1&lat=32&lon=118")
        assert r.status_code == 503  # nothing can be written: the sender retries later


def test_credentials_are_hashed_and_audited(engine, city) -> None:
    from sqlalchemy import select

    from pipelines.access import audit
    from pipelines.spine import store

    seed_registries(engine, city)
    c, secret = cr.create(
        engine,
        city,
        "phone",
        "张三的手机",
        now_ms=NOW,
        actor="cli:test",
        worker_id="W1",
        device_id="d-1",
    )
    with engine.connect() as conn:
        stored = conn.execute(select(cr.gateway_credentials)).first()
    assert (
        stored is not None
        and secret not in str(tuple(stored))
        and stored.secret_hash == cr.secret_hash(secret)
    )
    assert cr.lookup(engine, secret) == c
    with pytest.raises(cr.CredentialError):  # one device, one live binding
        cr.create(
            engine, city, "phone", "x", now_ms=NOW, actor="t", worker_id="W2", device_id="d-1"
        )
    with pytest.raises(cr.CredentialError):
        cr.create(
            engine, city, "phone", "x", now_ms=NOW, actor="t", worker_id="W404", device_id="d-2"
        )
    with pytest.raises(cr.CredentialError):
        cr.create(engine, city, "camera", "x", now_ms=NOW, actor="t", cameras=["C404"])
    with pytest.raises(cr.CredentialError):
        cr.create(engine, city, "hotline", "x", now_ms=NOW, actor="t", area_id="nowhere")
    cr.revoke(engine, c.credential_id, now_ms=NOW + 1, actor="cli:test")
    assert cr.lookup(engine, secret).revoked  # type: ignore[union-attr]
    with pytest.raises(cr.CredentialError):
        cr.revoke(engine, c.credential_id, now_ms=NOW + 2, actor="cli:test")
    rows = store.read_frame(engine, select(store.audit_log).order_by(store.audit_log.c.seq))
    assert rows.select("action", "target").rows() == [
        ("gateway_credential_created", c.credential_id),
        ("gateway_credential_revoked", c.credential_id),
    ]
    assert audit.verify(engine).ok
