"""OsmAnd decoding, case by case from the senders' and Traccar's own public sources.

Sources (cited per case):
* [TQ] traccar/traccar src/test/java/org/traccar/protocol/OsmAndProtocolDecoderTest.java,
  testDecodeQuery — every query vector Traccar's server must decode.
* [TJ] the same file, testDecodeJson — Traccar Client 9's JSON (flutter_background_geolocation).
* [TD] traccar/traccar OsmAndProtocolDecoder.java — the rules (timestamp < 2^31-1 is
  seconds; "T" → ISO-8601; else yyyy-MM-dd HH:mm:ss; speed in knots; JSON speed in m/s,
  heading / speed / battery -1 = unknown; battery level × 100; params from the body when
  the URL has none; unknown parameters kept as attributes).
* [TC9] traccar/traccar-client lib/preferences.dart (9.x) — the plugin's locationTemplate
  and params {device_id}; lib/push_service.dart — a form POST of id + notificationToken.
* [SDK] traccar/traccar-client-sdk core/.../HttpUploader.kt — form posts of one fix, or a
  JSON array of flat fixes (timestamp in s, speed in knots).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

import orjson
import pytest

from pipelines.gateway.errors import GatewayError
from pipelines.gateway.osmand import KNOT_MS, event_id, location_event, parse, parse_timestamp

NOW = 1_795_000_000_000
TZ = "Asia/Shanghai"


def q(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url.split("?", 1)[1], keep_blank_values=True)


def one(url: str) -> dict:
    fixes = parse(q(url), "", b"", NOW, TZ).fixes
    assert len(fixes) == 1
    return fixes[0].__dict__


# [TQ] testDecodeQuery: (url, expected device, ts ms, lat, lon, located)
TQ = [
    (
        "/?id=123456&timestamp=1377177267&cell=257,02,16,2224&cell=257,02,16,2223,-90"
        "&wifi=00-14-22-01-23-45,-80&wifi=00-1C-B3-09-85-15,-70",
        "123456",
        1377177267000,
        None,
        None,
        False,  # cell towers and Wi-Fi only: acknowledged, not a position
    ),
    (
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0"
        "&altitude=224.0&speed=0.0",
        "902064",
        1453920947000,  # ISO-8601 with Z
        42.06288,
        -88.23412,
        True,
    ),
    (
        "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0"
        "&speed=0.0",
        "902064",
        1442068686579,  # above 2^31-1: milliseconds
        42.06288,
        -88.23412,
        True,
    ),
    (
        "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0"
        "&id=353861053849681",
        "353861053849681",
        1401844211000,  # 2014-06-04 09:10:11 in Asia/Shanghai (the server's zone) = 01:10:11Z
        49.60688,
        6.15788,
        True,
    ),
    (
        "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0"
        "&hdop=0.0",
        "123456",
        1377177267000,
        60.0,
        30.0,
        True,
    ),
    (
        "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0",
        "123456",
        1377177267000,
        60.0,
        30.0,
        True,
    ),
    (
        "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
        "123456",
        NOW,  # no timestamp: the time it arrives (Traccar: new Date())
        60.0,
        30.0,
        True,
    ),
    (
        "/?id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000"
        "&batt=87",
        "861001000719969",
        NOW,
        41.666667,
        -0.883333,
        True,
    ),
    (
        "/?id=123456&timestamp=1377177267&location=60.0,30.0",
        "123456",
        1377177267000,
        60.0,
        30.0,
        True,
    ),
    (
        "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
        "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24",
        "123456789012345",
        1504763810000,
        40.7232948571,
        -74.0061408571,
        True,
    ),
]


@pytest.mark.parametrize("url, device, ts, lat, lon, located", TQ)
def test_traccar_query_vectors(url, device, ts, lat, lon, located) -> None:
    fixes = parse(q(url), "", b"", NOW, TZ).fixes
    assert len(fixes) == 1
    f = fixes[0]
    assert (f.device_id, f.ts_ms, f.lat, f.lon, f.located) == (device, ts, lat, lon, located)


def test_no_device_id_is_refused() -> None:
    """[TQ] verifyNull(decoder, request("/?timestamp=1377177267&lat=60.0&lon=30.0"))."""
    with pytest.raises(GatewayError) as e:
        parse(q("/?timestamp=1377177267&lat=60.0&lon=30.0"), "", b"", NOW, TZ)
    assert e.value.status == 400


def test_units_and_attributes_of_the_query() -> None:
    """[TD] speed is in knots; batt is percent; bearing/heading is the course; unknown
    parameters kept as numbers, booleans or text; the last of repeated values counts."""
    f = one(
        "/?id=123456789012345&timestamp=1504763810&lat=40.72&lon=-74.0&bearing=7.19889788244"
        "&speed=40&ignition=true&rpm=933&fuel=24&driverUniqueId=abc&batt=87&accuracy=12.5"
    )
    assert math.isclose(f["speed_ms"], 40 * 1852 / 3600)  # 40 kn = 20.58 m/s
    assert f["battery"] == 87.0 and f["accuracy"] == 12.5
    assert f["attrs"]["course"] == 7.19889788244
    assert f["attrs"]["ignition"] is True and f["attrs"]["rpm"] == 933.0
    assert f["attrs"]["driverUniqueId"] == "abc"


@pytest.mark.parametrize(
    "value, ms",
    [
        ("1377177267", 1377177267000),  # [TD] below 2^31-1: seconds
        ("1442068686579", 1442068686579),  # [TD] milliseconds
        ("2016-01-27T18:55:47Z", 1453920947000),  # [TD] ISO-8601 (contains "T")
        ("2016-01-27T18:55:47.500+00:00", 1453920947500),
        ("2025-06-15T13:45:12.862Z", 1749995112862),  # [TJ] the plugin's timestamp
        ("2014-06-04 09:10:11", 1401844211000),  # [TD] yyyy-MM-dd HH:mm:ss, server zone
        ("1377177267.5", 1377177267500),  # fractional seconds (OsmAnd's {2} is ms, others s)
    ],
)
def test_timestamp_forms(value: str, ms: int) -> None:
    assert parse_timestamp(value, TZ) == ms


@pytest.mark.parametrize("value", ["yesterday", "2014-06-04", "NaN", "1e400"])
def test_bad_timestamps_are_refused(value: str) -> None:
    with pytest.raises(GatewayError) as e:
        parse_timestamp(value, TZ)
    assert e.value.status == 400


@pytest.mark.parametrize(
    "url", ["/?id=1&lat=abc&lon=30", "/?id=1&lat=60&lon=inf", "/?id=1&location=60"]
)
def test_values_that_are_not_numbers_are_refused(url: str) -> None:
    """[TD] Double.parseDouble fails → the request is not decoded (400)."""
    with pytest.raises(GatewayError) as e:
        parse(q(url), "", b"", NOW, TZ)
    assert e.value.status == 400


def test_form_body_when_the_url_has_no_parameters() -> None:
    """[TD] params from the body when the URI has none; [SDK] submitForm of one fix;
    [TC9] push_service's id + notificationToken (no coordinates: acknowledged only)."""
    body = b"id=48241179&lat=37.4219983&lon=-122.084&timestamp=1749995112&speed=1.94&batt=55"
    f = parse([("key", "k")], "application/x-www-form-urlencoded", body, NOW, TZ).fixes[0]
    assert (f.device_id, f.lat, f.lon, f.ts_ms, f.battery) == (
        "48241179",
        37.4219983,
        -122.084,
        1749995112000,
        55.0,
    )
    assert math.isclose(f.speed_ms or 0, 1.94 * KNOT_MS)
    token = parse([], "application/x-www-form-urlencoded", b"id=123&notificationToken=xyz", NOW, TZ)
    assert token.fixes[0].device_id == "123" and not token.fixes[0].located
    assert "notificationToken" not in token.fixes[0].attrs  # a push token is not kept


TJ_1 = (
    b'{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,'
    b'"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,'
    b'"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},"activity":'
    b'{"type":"still"},"extras":{},"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp='
    b'2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'
)
TJ_MOCK = (
    b'{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":'
    b'-122.406417,"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":'
    b'37.785834000000001,"accuracy":5,"altitude_accuracy":-1,"altitude":0,"heading":-1},'
    b'"is_moving":false,"age":188,"odometer":0,"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8",'
    b'"event":"motionchange","battery":{"level":-1,"is_charging":false},"activity":{"type":'
    b'"unknown","confidence":100},"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}'
)
TJ_MOVING = (
    b'{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-'
    b'fb97d2154e75","timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":'
    b'-6.1148096,"longitude":106.6837015,"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,'
    b'"heading":63,"heading_accuracy":0.28,"altitude":35.7,"altitude_accuracy":3.8},"activity":'
    b'{"type":"still","confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},'
    b'"device_id":"8737767034"}'
)


def test_traccar_client_9_json() -> None:
    """[TJ] three vectors: speed m/s (-1 unknown), heading -1 unknown, battery 0-1 (-1
    unknown) × 100, mock kept, timestamp ISO-8601."""
    a = parse([], "application/json", TJ_1, NOW, TZ).fixes[0]
    assert (a.device_id, a.ts_ms, a.lat, a.lon) == ("48241179", 1749995112862, 37.4219983, -122.084)
    assert (a.speed_ms, a.accuracy, a.battery, a.mock) == (0.0, 5.0, 100.0, None)
    assert "course" not in a.attrs and a.attrs["event"] == "motionchange"
    b = parse([], "application/json; charset=utf-8", TJ_MOCK, NOW, TZ).fixes[0]
    assert (b.device_id, b.mock, b.speed_ms, b.battery, b.located) == (
        "658765",
        True,
        None,
        None,
        True,
    )
    c = parse([], "application/json", TJ_MOVING, NOW, TZ).fixes[0]
    assert (c.speed_ms, c.battery, c.attrs["course"]) == (18.67, 79.0, 63.0)


def test_plugin_batch_sync_sends_a_list_of_locations() -> None:
    """[TC9] flutter_background_geolocation with batchSync: location is a list."""
    loc = orjson.loads(TJ_1)["location"]
    later = {**loc, "timestamp": "2025-06-15T13:45:42.862Z"}
    body = orjson.dumps({"device_id": "48241179", "location": [loc, later]})
    fixes = parse([], "application/json", body, NOW, TZ).fixes
    assert [f.ts_ms for f in fixes] == [1749995112862, 1749995142862]


def test_plugin_location_without_coords_is_acknowledged_only() -> None:
    """[TD] decodeJson without coords: getLastLocation — not a new position."""
    body = b'{"device_id":"1","location":{"timestamp":"2025-06-15T13:45:12Z","event":"heartbeat"}}'
    f = parse([], "application/json", body, NOW, TZ).fixes[0]
    assert not f.located


def test_sdk_json_array_of_flat_fixes() -> None:
    """[SDK] uploadJson: an array of {id, lat, lon, timestamp (s), speed (kn), batt, …}."""
    body = orjson.dumps(
        [
            {
                "id": "48241179",
                "lat": 37.42,
                "lon": -122.08,
                "timestamp": 1749995112,
                "speed": 3.89,
                "bearing": 90.0,
                "batt": 80,
                "charge": True,
                "accuracy": 4.0,
            },
            {"id": "48241179", "lat": 37.43, "lon": -122.09, "timestamp": 1749995142},
        ]
    )
    fixes = parse([], "application/json", body, NOW, TZ).fixes
    assert [f.ts_ms for f in fixes] == [1749995112000, 1749995142000]
    assert math.isclose(fixes[0].speed_ms or 0, 3.89 * KNOT_MS)
    assert fixes[0].attrs["charge"] is True and fixes[0].battery == 80.0


@pytest.mark.parametrize(
    "body",
    [
        b'{"location":{"timestamp":"2025-06-15T13:45:12Z"}}',  # no device_id
        b'{"device_id":"1","location":{"coords":{"latitude":"37.4","longitude":1}}}',  # a string
        b'{"device_id":"1","location":{"mock":"yes"}}',
        b"[]",
        b"{not json",
        b'"text"',
    ],
)
def test_bad_json_is_refused(body: bytes) -> None:
    with pytest.raises(GatewayError) as e:
        parse([], "application/json", body, NOW, TZ)
    assert e.value.status == 400


def test_zero_zero_and_invalid_fixes_are_not_positions() -> None:
    """Traccar's older decoder treats 0,0 as no fix; valid=false marks one invalid."""
    assert not parse(q("/?id=1&lat=0&lon=0"), "", b"", NOW, TZ).fixes[0].located
    assert not parse(q("/?id=1&lat=32&lon=118&valid=false"), "", b"", NOW, TZ).fixes[0].located
    assert parse(q("/?id=1&lat=32&lon=118&valid=1"), "", b"", NOW, TZ).fixes[0].located


def test_location_event_has_strict_types_and_a_deterministic_id() -> None:
    f = parse(
        q("/?id=555&lat=32&lon=118&speed=10&batt=50&accuracy=5&mock=true&timestamp=1700000000"),
        "",
        b"",
        NOW,
        TZ,
    ).fixes[0]
    ev = location_event(f, "W7")
    assert ev["event_id"] == event_id("555", 1700000000000) == location_event(f, "W7")["event_id"]
    assert ev["event_id"] != event_id("555", 1700000001000)
    assert ev["worker_id"] == "W7" and ev["ts"] == 1700000000000 and isinstance(ev["ts"], int)
    assert all(isinstance(ev[k], float) for k in ("lon", "lat", "speed", "battery", "accuracy"))
    assert ev["mock"] is True
    assert math.isclose(ev["speed"], 10 * KNOT_MS, rel_tol=1e-3)
