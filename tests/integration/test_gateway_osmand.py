"""The OsmAnd endpoint over HTTP on a real Redis and SQL: who may send, what is written,
and the answers Traccar's clients expect (200 / 400 / 404; plus 401 / 403 / 413 / 429).

Request shapes as the senders send them: [TQ]/[TJ] Traccar's OsmAndProtocolDecoderTest,
[TC9] Traccar Client 9 (flutter_background_geolocation JSON, form POST of a push token),
[SDK] traccar-client-sdk HttpUploader (form post, JSON array)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

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
    settings = gateway_settings(redis_url, prefix, db_url, tmp_path, phone_rate_per_minute=5)
    seed_registries(engine, city)
    phone = credential(engine, city, "phone", worker_id="W1", device_id="48241179")
    district = city.ancestors(grid(city, 0)[0])[2]
    fleet = credential(engine, city, "fleet", area_id=district)
    with client_for(settings, city, engine) as client:
        yield {"s": settings, "c": client, "phone": phone, "fleet": fleet, "r": rclient}


def test_get_query_fix_is_written_once(env, city) -> None:
    """[TQ] a GET with query parameters; the same fix re-sent is a duplicate."""
    c, s = env["c"], env["s"]
    _, lon, lat = grid(city, 0)
    url = (
        f"/?key={env['phone']}&id=48241179&lat={lat}&lon={lon}&timestamp={NOW // 1000}"
        "&speed=10&batt=87"
    )
    for _ in range(3):
        r = c.get(url)
        assert r.status_code == 200 and r.content == b""
    got = stream(env["r"], s, "locations")
    assert len(got) == 1
    ev = got[0]
    assert (ev["worker_id"], ev["ts"], ev["lat"], ev["lon"], ev["battery"]) == (
        "W1",
        NOW // 1000 * 1000,
        lat,
        lon,
        87.0,
    )
    assert abs(ev["speed"] - 10 * 1852 / 3600) < 1e-3


def test_traccar_client_9_json_with_mock_and_batch(env, city) -> None:
    """[TC9]/[TJ] JSON {device_id, location}; location a list in a batch; mock kept."""
    c, s = env["c"], env["s"]
    _, lon, lat = grid(city, 1)
    locs = [
        {
            "timestamp": f"2026-01-01T00:00:0{i}Z",
            "coords": {
                "latitude": lat,
                "longitude": lon,
                "accuracy": 5,
                "speed": -1,
                "heading": -1,
                "altitude": 5,
            },
            "is_moving": False,
            "mock": i == 1,
            "battery": {"level": 0.5, "is_charging": False},
            "extras": {},
        }
        for i in range(2)
    ]
    body = orjson.dumps({"device_id": "48241179", "location": locs})
    r = c.post(
        f"/osmand?key={env['phone']}", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    got = stream(env["r"], s, "locations")
    assert [g["mock"] for g in got] == [False, True]
    assert all("speed" not in g for g in got)  # -1: unknown
    assert [g["battery"] for g in got] == [50.0, 50.0]


def test_sdk_form_post_and_push_token(env, city) -> None:
    """[SDK] form post of one fix (key in the URL path); [TC9] the push-token post (no
    coordinates) is acknowledged and writes nothing."""
    c, s = env["c"], env["s"]
    _, lon, lat = grid(city, 2)
    form = {"id": "48241179", "lat": str(lat), "lon": str(lon), "timestamp": str(NOW // 1000 - 5)}
    assert c.post(f"/osmand/{env['phone']}", data=form).status_code == 200
    assert (
        c.post(
            f"/osmand/{env['phone']}", data={"id": "48241179", "notificationToken": "t"}
        ).status_code
        == 200
    )
    assert len(stream(env["r"], s, "locations")) == 1


def test_fix_without_coordinates_is_acknowledged_not_written(env) -> None:
    """[TQ] cell towers / Wi-Fi only: Traccar decodes it (verifyNotNull); not a position."""
    url = (
        f"/?key={env['phone']}&id=48241179&timestamp=1377177267&cell=257,02,16,2224"
        "&wifi=00-14-22-01-23-45,-80"
    )
    assert env["c"].get(url).status_code == 200
    assert stream(env["r"], env["s"], "locations") == []


def test_status_codes(env, city) -> None:
    c, s = env["c"], env["s"]
    _, lon, lat = grid(city, 0)
    ok = f"id=48241179&lat={lat}&lon={lon}"
    assert c.get(f"/?{ok}").status_code == 401  # no key
    assert c.get(f"/?key=wgk_nope&{ok}").status_code == 401
    assert c.get(f"/?key={env['phone']}&lat={lat}&lon={lon}").status_code == 400  # [TQ] no id
    assert c.get(f"/?key={env['phone']}&id=48241179&lat=x&lon=1").status_code == 400
    assert c.get(f"/?key={env['phone']}&id=999&lat={lat}&lon={lon}").status_code == 403
    # a fleet key: device id = worker id; an unknown one is 400 (query) / 404 (JSON) [TD]
    assert c.get(f"/?key={env['fleet']}&id=W2&lat={lat}&lon={lon}").status_code == 200
    assert c.get(f"/?key={env['fleet']}&id=NOBODY&lat={lat}&lon={lon}").status_code == 400
    body = orjson.dumps({"device_id": "NOBODY", "location": {"timestamp": "2026-01-01T00:00:00Z"}})
    r = c.post(f"/?key={env['fleet']}", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 404
    assert c.delete(f"/?key={env['phone']}&{ok}").status_code == 405
    big = b"x" * (s.gateway.max_body_bytes + 1)
    assert c.post(f"/?key={env['phone']}", content=big).status_code == 413
    assert [g["worker_id"] for g in stream(env["r"], s, "locations")] == ["W2"]


def test_rate_limit_per_credential(env, city) -> None:
    """5 fixes a minute for this phone (the fixture's setting); the 6th is 429."""
    c = env["c"]
    _, lon, lat = grid(city, 0)
    codes = [
        c.get(
            f"/?key={env['phone']}&id=48241179&lat={lat}&lon={lon}&timestamp={NOW // 1000 - i}"
        ).status_code
        for i in range(6)
    ]
    assert codes == [200] * 5 + [429]
    r = c.get(f"/?key={env['phone']}&id=48241179&lat={lat}&lon={lon}&timestamp={NOW // 1000 - 9}")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert len(stream(env["r"], env["s"], "locations")) == 5


def test_revoked_key_stops_at_once(env, engine, city) -> None:
    c = env["c"]
    _, lon, lat = grid(city, 0)
    url = f"/?key={env['fleet']}&id=W1&lat={lat}&lon={lon}"
    assert c.get(url).status_code == 200  # cached now
    (cred,) = [x for x in cr.list_all(engine) if x.kind == "fleet"]
    cr.revoke(engine, cred.credential_id, now_ms=NOW, actor="test")
    env["r"].incr(cr.generation_key(env["s"].redis.prefix))  # what the CLI does
    assert c.get(url).status_code == 401


def test_failed_keys_are_limited_per_address(env, city) -> None:
    c, s = env["c"], env["s"]
    codes = [
        c.get(f"/?key=wgk_guess{i}&id=1").status_code
        for i in range(s.gateway.auth_failures_per_minute + 2)
    ]
    assert codes[: s.gateway.auth_failures_per_minute] == [401] * s.gateway.auth_failures_per_minute
    assert codes[-1] == 429
