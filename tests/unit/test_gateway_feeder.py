"""The simulator as real senders: its events become what Traccar Client and Frigate send,
and the gateway's decoders turn them back into the same feed events."""

from __future__ import annotations

import orjson
import pytest

from pipelines.gateway.feeder import frigate_messages, osmand_fix
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
    """One simulated alert is one Frigate object: new → update → end, one id, each a newer
    revision; the last carries the event's own camera, label, score and start."""
    ev = {
        "alert_id": "V123",
        "camera_id": "C00012",
        "label": "smoke_fire",
        "score": 0.91,
        "ts": NOW - 5000,
    }
    fmap = FrigateMap.of(GatewaySettings())
    msgs = frigate_messages(ev)
    assert [m["type"] for m in msgs] == ["new", "update", "end"]
    alerts = [translate("events", m, fmap, lambda c: c == "C00012") for m in msgs]
    assert all(isinstance(a, Alert) for a in alerts)
    events = [a.event for a in alerts if isinstance(a, Alert)]
    assert {e["alert_id"] for e in events} == {"fe-V123"}
    assert [e["ts"] for e in events] == [NOW - 5000] * 3  # the object's start, every time
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3
    got = events[-1]
    assert (got["camera_id"], got["label"], got["score"]) == ("C00012", "smoke_fire", 0.91)
    assert events[0]["score"] < got["score"]
    assert frigate_messages({"alert_id": 5}) == []


def test_one_phones_bad_fix_does_not_take_the_others_down() -> None:
    """Phones send their own fixes: the simulated fleet sends well-formed fixes together and
    each malformed one alone (the gateway refuses a JSON array with any bad fix whole)."""
    import http.server
    import threading

    import orjson

    from pipelines.gateway.feeder import GatewayFeeder

    bodies: list[list[dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            fixes = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(fixes)
            ok = all(isinstance(f.get("lat"), float) for f in fixes)
            self.send_response(200 if ok else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        feeder = GatewayFeeder(f"http://127.0.0.1:{server.server_port}", {"fleet": "k"})
        good = [{"worker_id": f"W{i}", "ts": NOW, "lon": 118.8, "lat": 32.0} for i in range(3)]
        bad = {"worker_id": "W9", "ts": NOW, "lon": 118.8, "lat": "north"}
        feeder("locations", [orjson.dumps(e) for e in (good[0], bad, *good[1:])])
    finally:
        server.shutdown()
    assert [len(b) for b in bodies] == [3, 1]
    assert feeder.sent == {"locations": 3} and feeder.refused == {"locations": 1}
