"""The simulator as real senders would be: it drives the gateway instead of Redis.

``wangge simulate --via gateway`` (and ``wangge run`` with ``gateway.simulate_through``)
sends the simulated city's feeds the way real systems do:

* phones: OsmAnd — each tick's fixes as Traccar Client's JSON upload (an array of flat
  fixes: ``id`` = worker id, ``lat``, ``lon``, ``timestamp`` in s, ``speed`` in knots,
  ``batt``, ``accuracy``) with a fleet key;
* cameras: Frigate ``events`` messages (``new``, ``update``, ``end`` per object) — published
  to the MQTT broker when one is configured, else POSTed to ``/frigate/events`` with a
  camera key;
* the hotline's and handlers' lifecycle events: the batch API with a hotline key.

Keys: fresh ones for the whole city each start (the previous simulator keys revoked).
A batch the gateway refuses in part (400 with the refused indexes: the simulator's
deliberately malformed events) is sent again without those, as a careful client would.
"""

from __future__ import annotations

import http.client
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import orjson
from sqlalchemy import Engine

from pipelines.city.geography import City
from pipelines.gateway import credentials as cr
from pipelines.gateway.osmand import KNOT_MS

log = logging.getLogger("wangge.feeder")
NAMES = {"fleet": "simulator phones", "hotline": "simulator hotline", "camera": "simulator cameras"}


def simulator_keys(engine: Engine, city: City, now_ms: int) -> dict[str, str]:
    """Fresh city-wide keys for the simulator (earlier simulator keys revoked)."""
    for c in cr.list_all(engine, include_revoked=False):
        if c.name in NAMES.values():
            cr.revoke(engine, c.credential_id, now_ms=now_ms, actor="simulator")
    out = {}
    for kind, name in NAMES.items():
        _, secret = cr.create(
            engine, city, kind, name, now_ms=now_ms, actor="simulator", area_id=city.city_id
        )
        out[kind] = secret
    return out


def osmand_fix(ev: dict[str, Any]) -> dict[str, Any] | None:
    """A location event → Traccar Client's flat JSON fix (None if it has no worker)."""
    if not isinstance(ev.get("worker_id"), str) or "ts" not in ev:
        return None
    ts = ev["ts"]
    fix: dict[str, Any] = {"id": ev["worker_id"], "timestamp": ts / 1000 if _number(ts) else ts}
    for ours, theirs in (
        ("lat", "lat"),
        ("lon", "lon"),
        ("accuracy", "accuracy"),
        ("battery", "batt"),
    ):
        if ev.get(ours) is not None:
            fix[theirs] = ev[ours]
    if isinstance(ev.get("speed"), int | float):
        fix["speed"] = round(ev["speed"] / KNOT_MS, 3)
    return fix


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def well_formed(fix: dict[str, Any]) -> bool:
    """Would the gateway take this fix? (Every value present is a number.) A phone sends
    only its own fixes, so one phone's bad fix must not take a batch of others down."""
    return all(_number(v) for k, v in fix.items() if k != "id")


def frigate_messages(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """A video event → the ``events`` messages Frigate sends for one tracked object: ``new``
    (a first, lower score), ``update`` (the top score, two seconds on) and ``end`` (four
    seconds on) — one alert, updated in place. Empty for a malformed event."""
    if not isinstance(ev.get("alert_id"), str) or not isinstance(ev.get("ts"), int):
        return []
    t = ev["ts"] / 1000
    score = ev.get("score")
    first = round(score * 0.9, 3) if isinstance(score, int | float) else score
    base = {
        "id": ev["alert_id"],
        "camera": ev.get("camera_id"),
        "label": ev.get("label"),
        "false_positive": False,
        "start_time": t,
        "current_zones": [],
    }
    new = {**base, "top_score": first, "frame_time": t, "end_time": None}
    update = {**base, "top_score": score, "frame_time": t + 2, "end_time": None}
    end = {**base, "top_score": score, "frame_time": t + 4, "end_time": t + 4}
    return [
        {"type": "new", "before": None, "after": new},
        {"type": "update", "before": new, "after": update},
        {"type": "end", "before": update, "after": end},
    ]


@dataclass
class GatewayFeeder:
    """``sink(feed, payloads)`` for :func:`pipelines.city.simulator.run_live`."""

    url: str
    keys: dict[str, str]
    mqtt_url: str = ""
    topic_prefix: str = "frigate"
    max_batch: int = 1000
    sent: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    _conn: http.client.HTTPConnection | None = None
    _mqtt: Any = None

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):  # one reconnect: a kept-alive connection may have closed
            if self._conn is None:
                u = urlparse(self.url)
                self._conn = http.client.HTTPConnection(
                    u.hostname or "127.0.0.1", u.port or 80, timeout=30
                )
            try:
                self._conn.request(
                    "POST", path, body, {"Content-Type": "application/json", **headers}
                )
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _send(
        self, feed: str, path: str, items: list[Any], headers: dict[str, str], quiet: bool = False
    ) -> None:
        for i in range(0, len(items), self.max_batch):
            chunk = items[i : i + self.max_batch]
            status, body = self._post(path, orjson.dumps(chunk), headers)
            if status == 400 and feed == "reports":
                bad = {it["index"] for it in orjson.loads(body)["error"].get("items", [])}
                self.refused[feed] = self.refused.get(feed, 0) + len(bad)
                chunk = [x for j, x in enumerate(chunk) if j not in bad]
                status, body = (
                    self._post(path, orjson.dumps(chunk), headers) if chunk else (200, b"")
                )
            if status != 200:
                self.refused[feed] = self.refused.get(feed, 0) + len(chunk)
                level = logging.DEBUG if quiet else logging.WARNING  # quiet: a bad fix, expected
                where = path.split("?")[0]  # never the key in the query
                log.log(level, "gateway %s: %s %s", where, status, body[:200])
                continue
            self.sent[feed] = self.sent.get(feed, 0) + len(chunk)

    def __call__(self, feed: str, payloads: list[bytes]) -> None:
        events = []
        for p in payloads:
            try:
                events.append(orjson.loads(p))
            except orjson.JSONDecodeError:
                self.refused[feed] = self.refused.get(feed, 0) + 1  # a sender could not send it
        if feed == "locations":
            fixes = [f for f in (osmand_fix(e) for e in events if isinstance(e, dict)) if f]
            path = f"/osmand?key={self.keys['fleet']}"
            self._send(feed, path, [f for f in fixes if well_formed(f)], {})
            for bad in (f for f in fixes if not well_formed(f)):  # each refused on its own
                self._send(feed, path, [bad], {}, quiet=True)
        elif feed == "reports":
            auth = {"Authorization": f"Bearer {self.keys['hotline']}"}
            self._send(feed, "/batch/reports", [e for e in events if isinstance(e, dict)], auth)
        elif feed == "video":
            msgs = [m for e in events if isinstance(e, dict) for m in frigate_messages(e)]
            if self.mqtt_url:
                self._publish_mqtt(msgs)
            else:
                auth = {"Authorization": f"Bearer {self.keys['camera']}"}
                self._send(feed, "/frigate/events", msgs, auth)

    def _publish_mqtt(self, msgs: list[dict[str, Any]]) -> None:
        import paho.mqtt.client as paho

        from pipelines.gateway.mqtt import parse_url

        if self._mqtt is None:
            host, port, user, password = parse_url(self.mqtt_url)
            c = paho.Client(
                paho.CallbackAPIVersion.VERSION2, client_id=f"wangge-sim-{time.time_ns()}"
            )
            if user:
                c.username_pw_set(user, password)
            c.connect(host, port)
            c.loop_start()
            self._mqtt = c
        topic = f"{self.topic_prefix.strip('/')}/events"
        for m in msgs:
            self._mqtt.publish(topic, orjson.dumps(m), qos=1)
        self.sent["video"] = self.sent.get("video", 0) + len(msgs)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
