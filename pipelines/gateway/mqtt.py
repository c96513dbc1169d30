"""The Frigate subscriber: MQTT → video alerts in the video stream.

Subscribes with QoS 1 to ``<frigate_topic_prefix>/events`` and ``/reviews`` (those in
``gateway.frigate_feeds``) under a stable client id and a persistent session, so the
broker keeps what arrives while the gateway is down. A message is acknowledged only
after its alert is in the stream (or it was ignored, or dead-lettered): when Redis or
SQL fails, the subscriber disconnects without acknowledging and reconnects, and the
broker delivers the message again — at least once, and the alert id + revision make
the repeat a duplicate, never a second alert.

Malformed messages (not JSON, not a Frigate message) are dead-lettered with the reason
``malformed``, their payload and what was wrong, under the stream name ``frigate``
(visible beside the feeds' dead letters); nothing is lost and nothing blocks the topic.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import orjson
import paho.mqtt.client as paho
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipelines.gateway import frigate
from pipelines.gateway.core import Registry
from pipelines.gateway.publish import Outgoing, SyncPublisher
from pipelines.ops import metrics as M
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.partitions import keys_of
from pipelines.spine.runner import live_state

log = logging.getLogger("wangge.gateway.mqtt")
DEADLETTER_STREAM = "frigate"
MAX_KEPT_PAYLOAD = 65536


def parse_url(url: str) -> tuple[str, int, str | None, str | None]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    return u.hostname or "127.0.0.1", u.port or 1883, u.username, u.password


@dataclass
class FrigateSubscriber:
    settings: Settings
    r: redis.Redis
    engine: Engine
    clock: Callable[[], float] = time.time
    stop_event: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=dict)
    connected: threading.Event = field(default_factory=threading.Event)
    _client: paho.Client | None = None
    _sub_mid: int | None = None

    def __post_init__(self) -> None:
        gs = self.settings.gateway
        self.fmap = frigate.FrigateMap.of(gs)
        self.registry = Registry(self.engine, gs.registry_reload_s)
        self.publisher = SyncPublisher(self.r)
        self.state = live_state(self.r, self.settings)

    # ------------------------------------------------------------ one message (testable)

    def topics(self) -> dict[str, str]:
        pre = self.settings.gateway.frigate_topic_prefix.strip("/")
        return {f"{pre}/{t}": t for t in ("events", "reviews") if t in self.fmap.feeds}

    def handle(self, topic: str, payload: bytes) -> str:
        """Translate and write one message; the outcome (for counts and tests). Raises
        Redis / SQL errors (the message is then not acknowledged)."""
        kind = self.topics().get(topic)
        if kind is None:
            return self._count("ignored:topic")
        if self.registry.due(False):
            self.registry.load()
        try:
            msg = orjson.loads(payload)
            out = frigate.translate(kind, msg, self.fmap, self._registered)
        except (orjson.JSONDecodeError, frigate.Malformed) as exc:
            detail = (
                f"{topic}: {exc}" if isinstance(exc, frigate.Malformed) else f"{topic}: not JSON"
            )
            self.dead_letter(detail, payload)
            return self._count("dead:malformed")
        if isinstance(out, frigate.Ignored):
            return self._count(f"ignored:{out.reason}")
        key = lambda *p: ":".join((self.settings.redis.prefix, "gw", *p))  # noqa: E731
        done = self.publisher.publish_feed(
            keys_of(self.settings),
            "video",
            self.settings.streams.video,
            [Outgoing.of(out.event, frigate.identity(key, out))],
        )
        return self._count("written" if done.written else "duplicate")

    def _registered(self, camera: str) -> bool:
        if camera in self.registry.cameras:
            return True
        if self.registry.due(True):
            self.registry.load()
        return camera in self.registry.cameras

    def _count(self, outcome: str) -> str:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        M.observe_mqtt(outcome)
        return outcome

    def _subscribed(self, yes: bool) -> None:
        (self.connected.set if yes else self.connected.clear)()
        M.mqtt_subscribed(yes)

    def dead_letter(self, detail: str, payload: bytes) -> None:
        now = int(self.clock() * 1000)
        entry = f"{now}-{secrets.randbelow(10**9) + 10**9}"  # never a real entry's sequence
        kept = payload[:MAX_KEPT_PAYLOAD]
        day = str(now // 86_400_000)
        self.state.dead_letter([(DEADLETTER_STREAM, entry, "malformed", detail[:500], kept, day)])
        store.persist_dead_letters(
            self.engine,
            [
                {
                    "stream": DEADLETTER_STREAM,
                    "entry_id": entry,
                    "reason": "malformed",
                    "detail": detail[:500],
                    "payload": kept,
                    "received_ms": now,
                }
            ],
        )

    # ------------------------------------------------------------ the connection

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("mqtt: connection refused: %s", rc)
            return
        # one SUBSCRIBE for every topic; ``connected`` is set on its SUBACK, when the
        # broker routes messages to us (not when the request is only queued: a message
        # published in between would find no subscriber)
        topics = [(t, 1) for t in self.topics()]
        if not topics:
            log.warning("mqtt: gateway.frigate_feeds names no feed: nothing to subscribe to")
            return
        _, self._sub_mid = client.subscribe(topics)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, codes: list[Any], _p: Any = None
    ) -> None:
        if mid != self._sub_mid:
            return
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            log.warning("mqtt: subscription refused: %s", refused)
            return
        self._subscribed(True)
        log.info("mqtt: subscribed to %s", ", ".join(self.topics()))

    def _on_message(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except (redis.RedisError, SQLAlchemyError, OSError) as exc:
            # not acknowledged: reconnect, and the broker delivers it again
            log.warning("mqtt: %s; reconnecting without acknowledging", exc)
            self._subscribed(False)
            client.disconnect()
            return
        client.ack(msg.mid, msg.qos)

    def run(self) -> None:
        gs = self.settings.gateway
        host, port, user, password = parse_url(gs.mqtt_url)
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=gs.mqtt_client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        client.manual_ack_set(True)
        if user:
            client.username_pw_set(user, password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                client.connect(host, port, keepalive=30)
                backoff = 0.5
                client.loop_forever()
            except OSError as exc:
                log.warning("mqtt: %s:%s: %s", host, port, exc)
            self._subscribed(False)
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="frigate-mqtt", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self.stop_event.set()
        if self._client is not None:
            self._client.disconnect()
