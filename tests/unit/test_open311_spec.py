"""Open311 GeoReport v2, from the spec and a real client's tests.

Sources (cited per case):
* [SPEC] open311/open311.github.io GeoReport_v2/index.md — the methods, arguments,
  responses, "Errors" (a list of {code, description}; 403 for a missing or invalid
  api_key, 404 for what does not exist, 400 otherwise), the 90-day window, the example
  POST body (attribute[code]=value, lat/long, address_string, media_url, …).
* [FMS] mysociety/fixmystreet t/open311/endpoint.t — a client's expectations of a server
  (no service_code, no api_key, a bad service_code, missing required attributes, a bad
  attribute value each refused; services / definitions / requests in XML and JSON).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson
import pytest
from starlette.requests import Request

from pipelines.gateway.errors import GatewayError
from pipelines.gateway.open311 import (
    SERVICES,
    _definition,
    _services_body,
    document,
    idempotency_key,
    open311_status,
    parse_new_request,
    parse_query,
    render,
)
from pipelines.spine.events import CATEGORIES, STEPS

NOW = 1_795_000_000_000
DAY = 86_400_000


def base(**kw: str) -> list[tuple[str, str]]:
    p = {"api_key": "k", "service_code": "sanitation", "lat": "32.05", "long": "118.8"}
    p.update(kw)
    return [(k, v) for k, v in p.items() if v is not None]


def test_spec_example_post_body() -> None:
    """[SPEC] the example request (service code and attributes adapted to ours)."""
    body = (
        "api_key=xyz&jurisdiction_id=city.gov&service_code=safety_hazard&lat=37.76524078"
        "&long=-122.4212043&address_string=1234+5th+street&email=smit333%40sfgov.edu"
        "&device_id=tt222111&account_id=123456&first_name=john&last_name=smith&phone=111111111"
        "&description=A+large+sinkhole+is+destroying+the+street&media_url=http%3A%2F%2Ffarm3."
        "static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg&attribute[hazard_type]=structure"
    )
    from urllib.parse import parse_qsl

    req = parse_new_request(parse_qsl(body), 2)
    assert (req.service_code, req.lat, req.lon) == ("safety_hazard", 37.76524078, -122.4212043)
    assert req.address_string == "1234 5th street" and req.account_id == "123456"
    assert req.media_url == "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg"
    assert req.description == "【建筑结构】A large sinkhole is destroying the street"
    assert req.severity == 2 and req.jurisdiction_id == "city.gov"


@pytest.mark.parametrize(
    "params, status",
    [
        (base(service_code=None), 400),  # [FMS] no service_code; [SPEC] 400 not provided
        (base(service_code="BADGER"), 404),  # [FMS] bad service_code; [SPEC] 404 not found
        (base(service_code="fire"), 400),  # [FMS] no required attributes (people_trapped)
        (base(service_code="fire", **{"attribute[people_trapped]": "starfish"}), 400),  # [FMS]
        (base(**{"attribute[nonsense]": "1"}), 400),
        (base(lat=None), 400),  # [SPEC] lat & long both need to be sent
        (base(lat=None, long=None, address_string="22 Acacia Avenue"), 400),  # cannot be placed
        (base(lat=None, long=None), 400),  # [SPEC] a location parameter is required
        (base(lat="north"), 400),
        (base(lat="95"), 400),
        (base(description="长" * 2001), 400),  # our feed's limit is 2,000 characters
        (base(media_url="javascript:alert(1)"), 400),
        (base(**{"attribute[severity]": "9"}), 400),
    ],
)
def test_refused_requests(params: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(GatewayError) as e:
        parse_new_request(params, 2)
    assert e.value.status == status


def test_attributes_set_severity_and_description() -> None:
    fire = parse_new_request(base(service_code="fire", **{"attribute[people_trapped]": "yes"}), 2)
    assert fire.severity == 4 and fire.description.startswith("【有人员被困】")
    calm = parse_new_request(base(service_code="fire", **{"attribute[people_trapped]": "no"}), 2)
    assert calm.severity == 2
    sev = parse_new_request(base(**{"attribute[severity]": "3"}), 2)
    assert sev.severity == 3
    assert parse_new_request(base(lat=None, long=None, address_id="g-1"), 2).address_id == "g-1"


def test_empty_optional_equals_absent() -> None:
    """[SPEC] "Optional" means the response is the same whether a parameter is passed
    empty or not at all."""
    a = parse_new_request(base(description="", media_url="", account_id=""), 2)
    b = parse_new_request(base(), 2)
    assert a == b


def test_idempotency_key() -> None:
    p = base(description="x")
    assert idempotency_key("c1", None, p) == idempotency_key("c1", None, list(reversed(p)))
    assert idempotency_key("c1", None, p) != idempotency_key("c2", None, p)
    assert idempotency_key("c1", None, p) != idempotency_key("c1", None, base(description="y"))
    assert idempotency_key("c1", "abc", p) == idempotency_key("c1", "abc", base(description="y"))
    # the api_key itself is not part of the identity (a rotated key retrying the same report)
    assert idempotency_key("c1", None, p) == idempotency_key(
        "c1", None, base(api_key="other", description="x")
    )


def test_lifecycle_to_status() -> None:
    """Only closure closes a request; every step has its own note."""
    for step in STEPS:
        status, notes = open311_status(step)
        assert status == ("closed" if step == "closed" else "open")
        assert step in notes
    assert open311_status("resolved")[0] == "open"  # can still be returned by verification


def test_window_defaults_and_limits() -> None:
    """[SPEC] start/end default to the most recent 90 days; a range may not span more."""
    q = parse_query({}, NOW, 90)
    assert (q.start_ms, q.end_ms) == (NOW - 90 * DAY, NOW)
    q = parse_query(
        {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-02-01T00:00:00+08:00"}, NOW, 90
    )
    assert q.end_ms - q.start_ms == 31 * DAY - 8 * 3_600_000
    with pytest.raises(GatewayError) as e:
        parse_query(
            {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}, NOW, 90
        )
    assert e.value.status == 400
    with pytest.raises(GatewayError):
        parse_query({"start_date": "2026-01-01"}, NOW, 90)  # [SPEC] w3 format with a zone
    with pytest.raises(GatewayError):
        parse_query({"status": "pending"}, NOW, 90)
    with pytest.raises(GatewayError) as e:
        parse_query({"service_code": "sanitation,BADGER"}, NOW, 90)
    assert e.value.status == 404
    assert parse_query({"status": "open,closed", "service_request_id": "a, b"}, NOW, 90).ids == (
        "a",
        "b",
    )


def test_services_are_our_categories_in_both_formats() -> None:
    """[SPEC] GET Service List fields; [FMS] the same content as XML and JSON."""
    body = _services_body()
    assert [s["service_code"] for s in body] == list(CATEGORIES)
    assert body[0]["service_name"] == "矛盾纠纷" and body[0]["type"] == "realtime"
    js = orjson.loads(document("services", body, "json").body)
    assert js == body
    xml = document("services", body, "xml")
    assert xml.headers["content-type"] == "text/xml; charset=utf-8"
    assert xml.body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(xml.body)
    assert root.tag == "services" and len(root) == len(SERVICES)
    first = root[0]
    assert first.tag == "service" and first.findtext("service_name") == "矛盾纠纷"
    assert first.findtext("metadata") == "true"


def test_service_definition_xml() -> None:
    """[SPEC] <service_definition><service_code/><attributes><attribute>…<values><value>."""
    root = ET.fromstring(document("service_definition", _definition("fire"), "xml").body)
    assert root.tag == "service_definition" and root.findtext("service_code") == "fire"
    attrs = root.find("attributes")
    assert attrs is not None
    codes = [a.findtext("code") for a in attrs.findall("attribute")]
    assert codes == ["severity", "people_trapped"]
    trapped = attrs.findall("attribute")[1]
    assert (
        trapped.findtext("required") == "true" and trapped.findtext("datatype") == "singlevaluelist"
    )
    assert [v.findtext("key") for v in trapped.find("values")] == ["yes", "no"]  # type: ignore[union-attr]


def _request(path: str) -> Request:
    fmt = path.rsplit(".", 1)[1]
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "path_params": {"format": fmt},
            "headers": [],
        }
    )


def test_errors_in_the_spec_format() -> None:
    """[SPEC] Errors: HTTP 403 and a list of {code, description} — JSON and XML."""
    err = GatewayError(403, "forbidden", "missing or invalid api_key")
    js = render(_request("/open311/v2/requests.json"), err)
    assert js.status_code == 403
    assert orjson.loads(js.body) == [{"code": 403, "description": "missing or invalid api_key"}]
    xml = render(_request("/open311/v2/requests.xml"), err)
    root = ET.fromstring(xml.body)
    assert root.tag == "errors" and root[0].tag == "error"
    assert root[0].findtext("code") == "403"


def test_xml_text_is_escaped_and_valid() -> None:
    body = [{"service_request_id": "x", "description": '<b>&\x01"引号"</b>'}]
    root = ET.fromstring(document("service_requests", body, "xml").body)
    assert root[0].findtext("description") == '<b>&"引号"</b>'
