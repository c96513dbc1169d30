"""Vectorised validation of the three feeds: every bad event gets its reason."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.spine.events import _ndjson, decode_batch, encode
from pipelines.spine.state import reachable_pairs

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
    ("video", video(revision=7, end_ts=NOW - 10), None),  # an update of an alert
    ("video", video(revision=-1), "out_of_range"),
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


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b"null", b"42", b"\xff\xfe"])
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


@pytest.mark.parametrize("feed", ["reports", "locations", "video"])
def test_fast_path_equals_per_payload_path(feed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised parse must decide exactly like the per-payload parse."""
    import pipelines.spine.events as ev

    good = [e for f, e, r in CASES if f == feed and r is None]
    valid = [(f"{i}-0", encode(good[i % len(good)])) for i in range(300)]
    mixed = valid + [(f"{1000 + i}-0", encode(e)) for i, (f, e, _) in enumerate(CASES) if f == feed]
    for batch in (valid, mixed):
        fast = decode_batch(feed, batch, **OPTS)
        monkeypatch.setattr(ev, "_fast_frame", lambda *a: None)
        slow = decode_batch(feed, batch, **OPTS)
        monkeypatch.undo()
        assert fast[0].equals(slow[0]) and fast[1].equals(slow[1])
    assert ev._fast_frame(ev.SCHEMAS[feed], ["1-0"], [valid[0][1]], 4096) is not None


def test_ndjson_only_for_one_object_per_line_within_the_limit() -> None:
    ok = [b'{"a":1}', b'{"b":2}']
    assert _ndjson(ok, 100) == b'{"a":1}\n{"b":2}'
    assert _ndjson([], 100) is None
    assert _ndjson(ok, 6) is None  # one payload over the limit
    for bad in (b'{"a":\n1}', b'{"a":1}\r', b"[1]", b" {}", b"", b"null"):
        assert _ndjson([*ok, bad], 100) is None, bad
        assert _ndjson([bad, *ok], 100) is None, bad
