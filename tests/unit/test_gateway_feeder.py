"""The simulator as real senders: its events become what Traccar Client and Frigate send,
and the gateway's decoders turn them back into the same feed events."""

from __future__ import annotations

import orjson
import pytest

from pipelines.gateway.feeder import frigate_message, osmand_fix
from pipelines.gateway.frigate import Alert, FrigateMap, translate
from pipelines.gateway.osmand import location_event, parse
from pipelines.settings import GatewaySettings

NOW = 1_795_000_000_000


def test_location_round_trip_through_osmand() -> None:
    ev = {
        "worker_id": "W000007",
        "ts": NOW - 12_345,
        "lon": 118.81234,
        "lat": 32.04321,
        "accuracy": 7.5,
        "speed": 1.37,
        "battery": 81.0,
    }
    body = orjson.dumps([osmand_fix(ev)])  # Traccar Client's JSON upload: an array of fixes
    (fix,) = parse([], "application/json", body, NOW, "Asia/Shanghai").fixes
    back = location_event(fix, fix.device_id)
    for k in ("worker_id", "ts", "lon", "lat", "accuracy", "battery"):
        assert back[k] == ev[k], k
    assert back["speed"] == pytest.approx(ev["speed"], abs=1e-3)
    assert osmand_fix({"ts": 1}) is None  # a malformed event cannot be sent by a phone


def test_video_round_trip_through_frigate() -> None:
    ev = {
        "alert_id": "V123",
        "camera_id": "C00012",
        "label": "smoke_fire",
        "score": 0.91,
        "ts": NOW - 5000,
    }
    out = translate(
        "events", frigate_message(ev), FrigateMap.of(GatewaySettings()), lambda c: c == "C00012"
    )
    assert isinstance(out, Alert)
    got = out.event
    assert (got["camera_id"], got["label"], got["score"], got["ts"]) == (
        "C00012",
        "smoke_fire",
        0.91,
        NOW - 5000,
    )
    assert got["alert_id"] == "fe-V123"
    assert frigate_message({"alert_id": 5}) is None
