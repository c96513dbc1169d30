"""Open311 over HTTP on a real Redis and SQL, as a client (FixMyStreet-style: form POST,
XML answers) uses it: create, retry, read back through the incident's lifecycle.

Sources: [SPEC] GeoReport v2 (open311/open311.github.io); [FMS] mysociety/fixmystreet
perllib Open311.pm (form-encoded POST of api_key, service_code, lat, long, email,
description, first_name, last_name, media_url; reads service_request_id from the XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.city.geography import City, GridIndex
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests import flowfile
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
BASE = "/open311/v2"


@pytest.fixture
def env(redis_url: str, prefix: str, db_url: Any, tmp_path: Path, engine, city, rclient):
    settings = gateway_settings(redis_url, prefix, db_url, tmp_path)
    seed_registries(engine, city)
    g0 = grid(city, 0)[0]
    street = city.ancestors(g0)[1]
    hotline = credential(engine, city, "hotline", area_id=street)
    app = credential(engine, city, "app")  # the whole city
    phone = credential(engine, city, "phone", worker_id="W1", device_id="d1")
    with client_for(settings, city, engine) as client:
        yield {
            "s": settings,
            "c": client,
            "hotline": hotline,
            "app": app,
            "phone": phone,
            "r": rclient,
            "street": street,
            "engine": engine,
        }


def form(env: dict[str, Any], city: City, i: int = 0, **kw: str) -> dict[str, str]:
    """[FMS] what FixMyStreet posts."""
    _, lon, lat = grid(city, i)
    f = {
        "api_key": env["hotline"],
        "service_code": "sanitation",
        "lat": str(lat),
        "long": str(lon),
        "email": "resident@example.org",
        "first_name": "张",
        "last_name": "三",
        "description": "小区门口垃圾满溢",
        "media_url": "http://example.org/p/1.jpg",
        "address_string": "鼓楼区某路1号",
    }
    f.update(kw)
    return f


def test_post_xml_like_fixmystreet_then_retry(env, city) -> None:
    c, s = env["c"], env["s"]
    r = c.post(f"{BASE}/requests.xml", data=form(env, city))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(r.content)
    assert root.tag == "service_requests"
    srid = root.find("request").findtext("service_request_id")  # type: ignore[union-attr]
    assert srid and srid.startswith("311-")
    # the same parameters again (a retry): the same id, nothing written twice
    again = ET.fromstring(c.post(f"{BASE}/requests.xml", data=form(env, city)).content)
    assert again.find("request").findtext("service_request_id") == srid  # type: ignore[union-attr]
    (ev,) = stream(env["r"], s, "reports")
    assert (ev["incident_id"], ev["step"], ev["category"], ev["source"]) == (
        srid,
        "reported",
        "sanitation",
        "hotline",
    )
    assert isinstance(ev["ts"], int) and isinstance(ev["severity"], int)
    assert "email" not in ev and "first_name" not in ev  # personal data is not kept
    # a different report is a new request
    other = c.post(f"{BASE}/requests.json", data=form(env, city, description="路灯不亮"))
    assert orjson.loads(other.content)[0]["service_request_id"] != srid
    # the retry left nothing behind in SQL either (one extras row per request)
    from pipelines.gateway.open311 import open311_requests
    from pipelines.spine import store

    assert store.table_count(env["engine"], open311_requests) == 2


def test_idempotency_key_header(env, city) -> None:
    c = env["c"]
    h = {"Idempotency-Key": "hotline-ticket-778"}
    a = c.post(f"{BASE}/requests.json", data=form(env, city), headers=h).json()
    b = c.post(f"{BASE}/requests.json", data=form(env, city, description="改写"), headers=h).json()
    assert a[0]["service_request_id"] == b[0]["service_request_id"]
    assert len(stream(env["r"], env["s"], "reports")) == 1


def test_scope_and_errors(env, city) -> None:
    """[SPEC] 403 for a missing or invalid api_key, 404 for unknown, 400 otherwise; a
    report outside the hotline's jurisdiction is refused; nothing is written."""
    c = env["c"]
    far = next(
        i for i in range(city.grids.height) if env["street"] not in city.ancestors(grid(city, i)[0])
    )

    def err(r: Any, status: int) -> None:
        assert r.status_code == status
        body = r.json()
        assert body[0]["code"] == status and body[0]["description"]

    err(c.post(f"{BASE}/requests.json", data=form(env, city, api_key="")), 403)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, api_key="wgk_nope")), 403)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, api_key=env["phone"])), 403)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, far)), 403)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, service_code="BADGER")), 404)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, lat="0", long="0")), 400)
    err(c.post(f"{BASE}/requests.json", data=form(env, city, jurisdiction_id="nowhere.gov")), 404)
    err(c.get(f"{BASE}/services/BADGER.json"), 404)
    err(c.delete(f"{BASE}/services.json"), 405)
    err(c.get(f"{BASE}/nothing.json"), 404)
    xml = c.get(f"{BASE}/requests.xml")  # no api_key
    assert xml.status_code == 403 and ET.fromstring(xml.content).tag == "errors"
    assert stream(env["r"], env["s"], "reports") == []


def test_address_id_is_a_grid(env, city) -> None:
    g = grid(city, 0)[0]
    f = form(env, city)
    del f["lat"], f["long"]
    r = env["c"].post(f"{BASE}/requests.json", data={**f, "address_id": g})
    assert r.status_code == 200
    (ev,) = stream(env["r"], env["s"], "reports")
    area = city.area(g)
    assert area is not None and (ev["lon"], ev["lat"]) == (area["lon"], area["lat"])


def test_services_and_definitions(env) -> None:
    c = env["c"]
    js = c.get(f"{BASE}/services.json").json()
    assert [s["service_code"] for s in js][:2] == ["dispute", "safety_hazard"]
    xml = ET.fromstring(c.get(f"{BASE}/services.xml").content)
    assert xml.tag == "services" and xml[0].findtext("service_name") == "矛盾纠纷"
    d = c.get(f"{BASE}/services/fire.json").json()
    assert [a["code"] for a in d["attributes"]] == ["severity", "people_trapped"]


def test_status_follows_the_lifecycle(env, city, engine) -> None:
    """GET requests / requests/{id}: received (not yet through the pipeline) → open with
    the step's note → closed; only the key's area is visible."""
    c, s = env["c"], env["s"]
    srid = c.post(f"{BASE}/requests.json", data=form(env, city)).json()[0]["service_request_id"]
    one = c.get(f"{BASE}/requests/{srid}.json", params={"api_key": env["hotline"]}).json()
    assert one[0]["status"] == "open" and "received" in one[0]["status_notes"]
    worker = make_worker(
        "reports", s, city, GridIndex(city), env["r"], engine, "r-t", clock=lambda: NOW / 1000
    )
    worker.step()
    (ev,) = stream(env["r"], s, "reports")
    key = f"{s.redis.prefix}:{s.streams.reports}"
    steps = ["accepted", "dispatched", "handling"]
    publish(
        env["r"],
        key,
        [
            encode({**ev, "event_id": f"{srid}-{st}", "step": st, "ts": ev["ts"] + 1000 * (i + 1)})
            for i, st in enumerate(steps)
        ],
    )
    worker.step()
    one = c.get(f"{BASE}/requests/{srid}.json", params={"api_key": env["hotline"]}).json()
    assert one[0]["status"] == "open" and one[0]["status_notes"] == "处置中 (handling)"
    assert one[0]["service_name"] == "环境卫生" and one[0]["address"] == "鼓楼区某路1号"
    assert one[0]["media_url"] == "http://example.org/p/1.jpg"
    publish(
        env["r"],
        key,
        [
            encode({**ev, "event_id": f"{srid}-{st}", "step": st, "ts": ev["ts"] + 10_000 + i})
            for i, st in enumerate(["resolved", "closed"])
        ],
    )
    worker.step()
    lst = c.get(f"{BASE}/requests.xml", params={"api_key": env["hotline"], "status": "closed"})
    root = ET.fromstring(lst.content)
    assert [r.findtext("service_request_id") for r in root] == [srid]
    assert (
        root[0].findtext("status") == "closed"
        and root[0].findtext("status_notes") == "已结案 (closed)"
    )
    assert (
        c.get(f"{BASE}/requests.json", params={"api_key": env["hotline"], "status": "open"}).json()
        == []
    )
    # a key of another area sees nothing of it
    far = next(d for d in city.ids("district") if d not in city.ancestors(grid(city, 0)[0]))
    other = credential(engine, city, "hotline", area_id=far)
    r = c.get(f"{BASE}/requests/{srid}.json", params={"api_key": other})
    assert r.status_code == 404
    assert c.get(f"{BASE}/requests.json", params={"api_key": other}).json() == []
    # the city-wide app key sees it
    assert [
        x["service_request_id"]
        for x in c.get(f"{BASE}/requests.json", params={"api_key": env["app"]}).json()
    ] == [srid]


def test_service_request_id_from_a_token(env, city) -> None:
    """[SPEC] "GET service_request_id from a token": ``tokens/[token id].[format]``
    answers ``service_requests`` → ``request`` with ``service_request_id`` and ``token``
    (the example: ``[{"service_request_id": 638344, "token": 12345}]`` and the same as
    XML); "404 - jurisdiction_id or token not found (specified in error response)".
    Our token is the POST's Idempotency-Key."""
    c = env["c"]
    h = {"Idempotency-Key": "12345"}
    created = c.post(f"{BASE}/requests.json", data=form(env, city), headers=h).json()
    srid = created[0]["service_request_id"]
    key = {"api_key": env["hotline"]}
    got = c.get(f"{BASE}/tokens/12345.json", params=key)
    assert got.status_code == 200
    assert got.json() == [{"service_request_id": srid, "token": "12345"}]
    xml = c.get(f"{BASE}/tokens/12345.xml", params=key)
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(xml.content)
    assert root.tag == "service_requests"
    (req,) = root.findall("request")
    assert (req.findtext("service_request_id"), req.findtext("token")) == (srid, "12345")
    # still found once the Redis retry window is gone (SQL keeps the token)
    env["r"].delete(*env["r"].keys(f"{env['s'].redis.prefix}:gw:o311:*"))
    again = c.get(f"{BASE}/tokens/12345.json", params=key).json()
    assert again == [{"service_request_id": srid, "token": "12345"}]
    # unknown, or another key's token: 404 in the spec's error format, JSON and XML
    for path, params in (
        ("tokens/99999", key),
        ("tokens/12345", {"api_key": env["app"]}),
    ):
        r = c.get(f"{BASE}/{path}.json", params=params)
        assert r.status_code == 404
        (e,) = r.json()
        assert e["code"] == 404 and "token" in e["description"]
        x = c.get(f"{BASE}/{path}.xml", params=params)
        root = ET.fromstring(x.content)
        assert x.status_code == 404 and root.tag == "errors"
        assert root.find("error").findtext("code") == "404"  # type: ignore[union-attr]
    # no api_key: 403, as for every read
    assert c.get(f"{BASE}/tokens/12345.json").status_code == 403


def test_expected_datetime_is_the_flows_closure_deadline(env, city, engine, tmp_path) -> None:
    """expected_datetime = the report + the hours of the request's standard flow (by
    category and severity): a hotline request has the default severity 2, so the
    sanitation flow from severity 2 of this file applies (0.5 + 1 + 2 + 1 + 0.5 = 5 h)."""
    flows = flowfile.doc(
        flowfile.flow("sanitation", "sanitation", (1, 2, 20, 4, 3)),  # 30 h: severity 1
        flowfile.flow("sanitation_2", "sanitation", (0.5, 1, 2, 1, 0.5), min_severity=2),
    )
    assert env["s"].gateway.open311_default_severity == 2
    s = flowfile.settings_for(flowfile.write(tmp_path / "flows.toml", flows), base=env["s"])
    with client_for(s, city, engine) as c:
        srid = c.post(f"{BASE}/requests.json", data=form(env, city)).json()[0]["service_request_id"]
        worker = make_worker(
            "reports", s, city, GridIndex(city), env["r"], engine, "r-t", clock=lambda: NOW / 1000
        )
        worker.step()
        (one,) = c.get(f"{BASE}/requests/{srid}.json", params={"api_key": env["hotline"]}).json()
    requested = datetime.fromisoformat(one["requested_datetime"])
    assert datetime.fromisoformat(one["expected_datetime"]) - requested == timedelta(hours=5)
