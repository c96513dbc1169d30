"""Vectorised validation of the three feeds: every bad event gets its reason."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.spine.events import REASONS, STEPS, decode_batch, encode, reachable_pairs

NOW = 1_795_000_000_000
OPTS = dict(now_ms=NOW, future_skew_ms=300_000, max_age_ms=30 * 86_400_000, max_payload_bytes=4096)


def report(**kw: Any) -> dict[str, Any]:
    base = dict(
        event_id="E1",
        incident_id="I1",
        ts=NOW - 1000,
        step="reported",
        category="sanitation",
        severity=2,
        source="worker",
        lon=118.8,
        lat=32.05,
        description="垃圾满溢",
        level="grid",
        reporter_id="W1",
    )
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def location(**kw: Any) -> dict[str, Any]:
    base = dict(
        worker_id="W1", ts=NOW - 1000, lon=118.8, lat=32.05, accuracy=5.0, speed=1.2, battery=80.0
    )
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def video(**kw: Any) -> dict[str, Any]:
    base = dict(alert_id="A1", camera_id="C1", label="smoke_fire", score=0.9, ts=NOW - 1000)
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


CASES = [
    ("reports", report(), None),
    ("reports", report(category="aliens"), "unknown_category"),
    ("reports", report(step="teleported"), "bad_type"),
    ("reports", report(event_id=...), "missing_field"),
    ("reports", report(severity=9), "out_of_range"),
    ("reports", report(severity="high"), "bad_type"),
    ("reports", report(ts=NOW + 86_400_000), "future_timestamp"),
    ("reports", report(ts=NOW - 90 * 86_400_000), "out_of_range"),
    ("reports", report(lat=95.0), "out_of_range"),
    ("reports", report(lon="east"), "bad_type"),
    ("reports", report(lon=True), "bad_type"),
    ("reports", report(description="长" * 3000), "too_large"),
    ("reports", report(event_id=""), "bad_type"),
    ("reports", report(level="galaxy"), "bad_type"),
    ("locations", location(), None),
    ("locations", location(accuracy=...), None),
    ("locations", location(worker_id=...), "missing_field"),
    ("locations", location(battery=140.0), "out_of_range"),
    ("locations", location(speed=[1]), "bad_type"),
    ("locations", location(mock=True), None),  # a phone's simulated (mock) fix, kept marked
    ("locations", location(mock=False), None),
    ("locations", location(mock="yes"), "bad_type"),
    ("locations", location(mock=1), "bad_type"),
    ("video", video(), None),
    ("video", video(lon=118.8, lat=32.0), None),
    ("video", video(lon=118.8), "missing_field"),
    ("video", video(label="ufo"), "unknown_category"),
    ("video", video(score=1.5), "out_of_range"),
    # Strict types: the wire format is exact, nothing is coerced.
    ("reports", report(lon="118.8"), "bad_type"),
    ("reports", report(lat="32.05"), "bad_type"),
    ("reports", report(ts=str(NOW - 1000)), "bad_type"),
    ("reports", report(ts=NOW - 1000.5), "bad_type"),
    ("reports", report(ts=float(NOW - 1000)), "bad_type"),
    ("reports", report(severity=2.0), "bad_type"),
    ("reports", report(severity=True), "bad_type"),
    ("reports", report(event_id=5), "bad_type"),
    ("reports", report(incident_id=["I1"]), "bad_type"),
    ("reports", report(category={"x": 1}), "bad_type"),
    ("reports", report(lat=False), "bad_type"),
    ("reports", report(description=7), "bad_type"),
    ("reports", report(lon=None), "missing_field"),
    ("reports", report(ts=2**63), "out_of_range"),
    ("reports", report(ts=-(2**63)), "out_of_range"),
    ("reports", report(ts=1e25), "out_of_range"),
    ("reports", report(lon=1e300), "out_of_range"),
    ("reports", report(extra_field="ignored", nested={"a": [1, 2]}), None),
    ("reports", report(lon=118), None),  # an integer is a number
    ("locations", location(lon="118.8"), "bad_type"),
    ("locations", location(ts=str(NOW - 1000)), "bad_type"),
    ("locations", location(ts=NOW - 999.9), "bad_type"),
    ("locations", location(battery="80"), "bad_type"),
    ("locations", location(speed=True), "bad_type"),
    ("locations", location(worker_id=17), "bad_type"),
    ("locations", location(ts=2**64 - 1), "out_of_range"),
    ("video", video(score="0.9"), "bad_type"),
    ("video", video(score=True), "bad_type"),
    ("video", video(ts=float(NOW - 1000)), "bad_type"),
    ("video", video(lon="118.8", lat=32.0), "bad_type"),
    ("video", video(camera_id=12), "bad_type"),
]


@pytest.mark.parametrize("feed, event, reason", CASES)
def test_each_rule(feed: str, event: dict[str, Any], reason: str | None) -> None:
    good, dead = decode_batch(feed, [("1-0", encode(event))], **OPTS)
    if reason is None:
        assert good.height == 1 and dead.height == 0
    else:
        assert good.height == 0
        assert dead["reason"].to_list() == [reason]
        assert dead["payload"][0] == encode(event)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[1,2]",
        b"null",
        b"42",
        b"\xff\xfe",
        b'{"event_id": "E1", "lon": NaN}',
        b'{"event_id": "E1", "lon": Infinity}',
        b'{"event_id": "E1", "lon": 1e400}',
        b'{"event_id": "E\xff1"}',
        b'{"event_id": "\\ud800"}',
        b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}",
    ],
)
def test_malformed_payloads(raw: bytes) -> None:
    good, dead = decode_batch("reports", [("1-0", raw)], **OPTS)
    assert good.height == 0 and dead["reason"].to_list() == ["malformed"]


def test_mixed_batch_keeps_order_and_loses_nothing() -> None:
    entries = [
        (f"{i}-0", encode(e)) for i, (_, e, _) in enumerate(c for c in CASES if c[0] == "reports")
    ]
    good, dead = decode_batch("reports", entries, **OPTS)
    assert good.height + dead.height == len(entries)
    assert sorted(good["entry_id"].to_list() + dead["entry_id"].to_list()) == sorted(
        e for e, _ in entries
    )


def test_lifecycle_reachability() -> None:
    pairs = reachable_pairs()
    assert ("reported", "closed") in pairs  # gaps are tolerated (out-of-order arrival)
    assert ("handling", "verified") in pairs
    assert not any(a == "closed" for a, _ in pairs)  # nothing after closure
    assert not any(b == "reported" for _, b in pairs)  # reported only starts
    # exactly the two rules the lifecycle decision applies, nothing else is impossible
    impossible = {(a, b) for a in STEPS for b in STEPS} - pairs
    assert impossible == {(a, b) for a in STEPS for b in STEPS if a == "closed" or b == "reported"}


@pytest.mark.parametrize("feed", ["reports", "locations", "video"])
def test_each_entry_is_decided_as_if_alone(feed: str) -> None:
    """A batch decides every entry exactly as that entry alone (the all-good batch takes
    a shortcut; one bad neighbour of any kind must not change anyone's outcome)."""
    cases = [(e, r) for f, e, r in CASES if f == feed]
    good = [e for e, r in cases if r is None]
    neighbours = [b"not json", b"[1]", encode(cases[-1][0]), b"x" * 5000]
    for extra in [None, *neighbours]:
        batch = [(f"{i}-0", encode(e)) for i, (e, _) in enumerate(cases)]
        batch += [(f"{1000 + i}-0", encode(good[i % len(good)])) for i in range(50)]
        if extra is not None:
            batch.insert(7, ("999-0", extra))
        ok, dead = decode_batch(feed, batch, **OPTS)
        got = dict(zip(dead["entry_id"], dead["reason"], strict=True))
        for entry_id, payload in batch:
            alone_ok, alone_dead = decode_batch(feed, [(entry_id, payload)], **OPTS)
            assert got.get(entry_id) == (alone_dead["reason"][0] if alone_dead.height else None)
            if alone_ok.height:
                row = ok.filter(ok["entry_id"] == entry_id)
                assert row.equals(alone_ok), entry_id
        assert set(got.values()) <= set(REASONS)
