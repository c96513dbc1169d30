"""A seeded generator of bad stream entries, each labelled with the reason the README's
rules give it (independent of the decoder: derived from the kind of defect), and of
good ones. Used by the property test (test_poison.py) and the crash test."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

from pipelines.city.geography import City

MAX_BYTES = 16384  # streams.max_payload_bytes (the default)

# One generated stream entry: its fields, and the reason it must be dead-lettered with
# (None: valid, must be applied).
Entry = tuple[dict[bytes, bytes], str | None]


NUMBER_FIELDS = {
    "reports": {"ts": "int", "severity": "int", "lon": "num", "lat": "num"},
    "locations": {"ts": "int", "lon": "num", "lat": "num", "accuracy": "num", "battery": "num"},
    "video": {"ts": "int", "score": "num", "lon": "num", "lat": "num"},
}
TEXT_FIELDS = {
    "reports": ["event_id", "incident_id", "step", "category", "source", "description"],
    "locations": ["worker_id"],
    "video": ["alert_id", "camera_id", "label"],
}
REQUIRED = {
    "reports": ["event_id", "incident_id", "ts", "step", "category", "severity", "source", "lon"],
    "locations": ["worker_id", "ts", "lon", "lat"],
    "video": ["alert_id", "camera_id", "label", "score", "ts"],
}


class Gen:
    """Seeded bad and good payloads for one feed; ``now_ms`` is the processing time."""

    def __init__(self, feed: str, seed: int, city: City, now_ms: int) -> None:
        self.feed, self.rnd, self.now = feed, random.Random(seed), now_ms
        self.points = [
            (g["lon"], g["lat"]) for g in city.grids.select("lon", "lat").iter_rows(named=True)
        ]
        self.n = 0
        self.valid: list[bytes] = []  # published valid payloads (for duplicates)
        self.closed: list[dict[str, Any]] = []  # closed incidents' last event (reports)

    def uid(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.rnd.randrange(10**6)}-{self.n}"

    def good_event(self) -> dict[str, Any]:
        lon, lat = self.rnd.choice(self.points)
        ts = self.now - self.rnd.randrange(1_000, 3_600_000)
        if self.feed == "reports":
            return dict(
                event_id=self.uid("E"), incident_id=self.uid("I"), ts=ts, step="reported",
                category="sanitation", severity=2, source="worker", lon=lon, lat=lat,
                level="grid", description="垃圾满溢",
            )  # fmt: skip
        if self.feed == "locations":
            return dict(worker_id=self.uid("W"), ts=ts, lon=lon, lat=lat, accuracy=5.0)
        return dict(alert_id=self.uid("A"), camera_id="CAM1", label="fall", score=0.8, ts=ts)

    # --- valid entries, some with harmless extras
    def good(self) -> Entry:
        ev = self.good_event()
        extra = self.rnd.randrange(4)
        if extra == 1:
            ev["x_extra"] = {"nested": [[[[1, 2]]]], "note": "ignored"}  # unknown fields
        elif extra == 2:
            nested: Any = 0
            for _ in range(60):
                nested = [nested]
            ev["x_deep"] = nested  # deep, but within what a JSON parser reads
        payload = orjson.dumps(ev)
        self.valid.append(payload)
        fields = {b"data": payload}
        if extra == 3:
            fields[b"source"] = b"gateway-7"  # extra stream fields are ignored
        return fields, None

    def lifecycle_close(self) -> list[Entry]:
        """A closed incident (valid), for impossible transitions to refer to."""
        ev = self.good_event()
        out: list[Entry] = []
        for i, step in enumerate(["reported", "accepted", "closed"]):
            e = dict(ev, event_id=self.uid("E"), step=step, ts=ev["ts"] + i * 1000)
            out.append(({b"data": orjson.dumps(e)}, None))
        self.closed.append(dict(e))
        return out

    # --- bad entries, each with one defect and its reason
    def bad(self, self_contained: bool = False) -> Entry:
        """One bad entry; ``self_contained``: only kinds that need no other entry."""
        kinds: list[Callable[[], Entry]] = [
            self.random_bytes,
            self.empty,
            self.no_data_field,
            self.not_an_object,
            self.truncated,
            self.bad_utf8,
            self.lone_surrogate,
            self.nan_or_infinity,
            self.beyond_double,
            self.nested_too_deep,
            self.nested_value,
            self.wrong_type,
            self.missing_field,
            self.huge_number,
            self.out_of_range,
            self.future,
            self.too_large,
        ]
        if self.feed != "video":
            kinds.append(self.outside_city)
        if self.feed == "reports":
            kinds += [self.unknown_category]
            if not self_contained:
                kinds += [self.duplicate, self.bad_transition]
        if self.feed == "video":
            kinds += [self.unknown_category, self.unknown_camera, self.outside_city_video]
            if not self_contained:
                kinds += [self.duplicate]
        return self.rnd.choice(kinds)()

    def garbage(self) -> Entry:
        """An entry that is no event at all (not JSON, not an object, cut off, empty,
        no data field, far too large, or an object missing required fields)."""
        kinds = [
            self.random_bytes,
            self.empty,
            self.no_data_field,
            self.not_an_object,
            self.truncated,
            self.bad_utf8,
            self.nested_too_deep,
            self.missing_field,
            self.too_large,
        ]
        return self.rnd.choice(kinds)()

    def data(self, payload: bytes, reason: str) -> Entry:
        return {b"data": payload}, reason

    def random_bytes(self) -> Entry:
        while True:
            raw = bytes(self.rnd.randrange(256) for _ in range(self.rnd.randrange(1, 200)))
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return self.data(raw, "malformed")
            if not isinstance(parsed, dict):
                return self.data(raw, "malformed")

    def empty(self) -> Entry:
        return self.data(b"", "malformed")

    def no_data_field(self) -> Entry:
        return {b"payload": orjson.dumps(self.good_event())}, "malformed"

    def not_an_object(self) -> Entry:
        raw = self.rnd.choice([b"[]", b"[1,2]", b"null", b"true", b"42", b'"text"', b"1e5"])
        return self.data(raw, "malformed")

    def truncated(self) -> Entry:
        raw = orjson.dumps(self.good_event())
        return self.data(raw[: self.rnd.randrange(1, len(raw) - 1)], "malformed")

    def bad_utf8(self) -> Entry:
        raw = orjson.dumps(self.good_event()).replace(b'":"', b'":"\xff\xfe', 1)
        return self.data(raw, "malformed")

    def lone_surrogate(self) -> Entry:
        raw = orjson.dumps(self.good_event()).replace(b'":"', b'":"\\udc00', 1)
        return self.data(raw, "malformed")

    def nan_or_infinity(self) -> Entry:
        f = self.rnd.choice(list(NUMBER_FIELDS[self.feed]))
        ev = self.good_event()
        ev[f] = 0
        lit = self.rnd.choice([b"NaN", b"Infinity", b"-Infinity"])
        return self.data(
            orjson.dumps(ev).replace(f'"{f}":0'.encode(), f'"{f}":'.encode() + lit), "malformed"
        )

    def beyond_double(self) -> Entry:
        f = self.rnd.choice(list(NUMBER_FIELDS[self.feed]))
        ev = self.good_event()
        ev[f] = 0
        raw = orjson.dumps(ev).replace(f'"{f}":0'.encode(), f'"{f}":1e400'.encode())
        return self.data(raw, "malformed")  # not a finite number: no JSON value orjson reads

    def nested_too_deep(self) -> Entry:
        ev = self.good_event()
        depth = 1100
        raw = orjson.dumps(ev)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        return self.data(raw, "malformed")

    def nested_value(self) -> Entry:
        ev = self.good_event()
        f = self.rnd.choice(REQUIRED[self.feed])
        v: Any = ev[f]
        for _ in range(self.rnd.randrange(1, 40)):
            v = [v] if self.rnd.random() < 0.5 else {"v": v}
        ev[f] = v
        return self.data(orjson.dumps(ev), "bad_type")

    def wrong_type(self) -> Entry:
        ev = self.good_event()
        nums, texts = NUMBER_FIELDS[self.feed], TEXT_FIELDS[self.feed]
        f = self.rnd.choice([*nums, *[t for t in texts if t in ev]])
        if f in nums:
            ev.setdefault(f, 1)
            choices: list[Any] = [str(ev[f]), True, False, [ev[f]], {"value": ev[f]}]
            if nums[f] == "int":
                choices += [ev[f] + 0.5, float(ev[f])]  # fractional, or a float at all
        else:
            choices = [12345, 1.5, True, ["x"], {"x": 1}]
        ev[f] = self.rnd.choice(choices)
        return self.data(orjson.dumps(ev), "bad_type")

    def missing_field(self) -> Entry:
        ev = self.good_event()
        f = self.rnd.choice(REQUIRED[self.feed])
        if self.rnd.random() < 0.5:
            ev.pop(f)
        else:
            ev[f] = None  # null is absent
        return self.data(orjson.dumps(ev), "missing_field")

    def huge_number(self) -> Entry:
        ev = self.good_event()
        f = self.rnd.choice(list(NUMBER_FIELDS[self.feed]))
        if NUMBER_FIELDS[self.feed][f] == "int":
            ev[f] = self.rnd.choice([2**63, 2**64 - 1, -(2**63)])
        else:
            ev[f] = self.rnd.choice([1e300, -1e300, 2**64 - 1])
        return self.data(orjson.dumps(ev), "out_of_range")

    def out_of_range(self) -> Entry:
        ev = self.good_event()
        if self.feed == "video":
            ev["score"] = self.rnd.choice([1.5, -0.1])
        else:
            ev["lat"] = self.rnd.choice([95.0, -91.0])
        return self.data(orjson.dumps(ev), "out_of_range")

    def future(self) -> Entry:
        ev = self.good_event()
        ev["ts"] = self.now + 86_400_000
        return self.data(orjson.dumps(ev), "future_timestamp")

    def too_large(self) -> Entry:
        ev = self.good_event()
        ev["padding"] = "巡" * 6000
        return self.data(orjson.dumps(ev), "too_large")

    def outside_city(self) -> Entry:
        ev = self.good_event()
        ev["lon"], ev["lat"] = 116.4, 39.9  # Beijing
        return self.data(orjson.dumps(ev), "outside_city")

    def outside_city_video(self) -> Entry:
        ev = self.good_event()
        ev["lon"], ev["lat"] = 116.4, 39.9
        return self.data(orjson.dumps(ev), "outside_city")

    def unknown_category(self) -> Entry:
        ev = self.good_event()
        ev["category" if self.feed == "reports" else "label"] = "ufo"
        return self.data(orjson.dumps(ev), "unknown_category")

    def unknown_camera(self) -> Entry:
        ev = self.good_event()
        ev["camera_id"] = "CAM-NOBODY-KNOWS"
        if self.rnd.random() < 0.5:  # with its own location too: still unknown
            ev["lon"], ev["lat"] = self.rnd.choice(self.points)
        return self.data(orjson.dumps(ev), "unknown_camera")

    def duplicate(self) -> Entry:
        if not self.valid:
            return self.empty()
        return self.data(self.rnd.choice(self.valid), "duplicate")

    def bad_transition(self) -> Entry:
        if not self.closed:
            return self.empty()
        ev = dict(self.rnd.choice(self.closed))
        closed_ts = ev["ts"]
        ev.update(event_id=self.uid("E"), step=self.rnd.choice(["handling", "reported"]))
        ev["ts"] = closed_ts + self.rnd.randrange(1, 60_000)
        return self.data(orjson.dumps(ev), "bad_transition")
