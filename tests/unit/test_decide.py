"""The rules that decide which report entries count (``aggregate.decide_reports``) and
which entry creates an alert (``aggregate.decide_alert_versions``; its updates in place
are in ``test_alert_versions.py``): hand-made cases, and the
property that matters under crashes: deciding batch by batch, in any order, accepts
exactly what deciding everything at once accepts."""

from __future__ import annotations

import random

import polars as pl
import pytest

from pipelines.spine.aggregate import decide_alert_versions, decide_reports

SCHEMA = {
    "entry_id": pl.String,
    "event_id": pl.String,
    "incident_id": pl.String,
    "step": pl.String,
    "ts_ms": pl.Int64,
    "stored": pl.String,
    "reason": pl.String,
}


def frame(rows: list[tuple[str, str, str, str, int]], stored: dict[str, str] | None = None):
    stored = stored or {}
    full = [(*r, *(stored[r[0]].split(":") if r[0] in stored else (None, None))) for r in rows]
    return pl.DataFrame(full, schema=SCHEMA, orient="row")


def verdicts(rows, stored=None) -> dict[str, str]:
    d = decide_reports(frame(rows, stored))
    return dict(zip(d["entry_id"], d["verdict"], strict=True))


def test_an_event_id_belongs_to_the_first_entry_in_stream_order() -> None:
    # "10-0" is after "9-0" in the stream (as text it sorts first)
    got = verdicts([("10-0", "E1", "I2", "reported", 5), ("9-0", "E1", "I1", "reported", 9)])
    assert got == {"9-0": "accepted", "10-0": "duplicate"}


def test_a_replay_is_a_duplicate_not_an_impossible_transition() -> None:
    got = verdicts(
        [
            ("1-0", "E1", "I1", "reported", 10),
            ("2-0", "E2", "I1", "closed", 20),
            ("3-0", "E1", "I1", "reported", 10),  # replays of both
            ("4-0", "E2", "I1", "closed", 20),
        ]
    )
    assert got == {"1-0": "accepted", "2-0": "accepted", "3-0": "duplicate", "4-0": "duplicate"}


def test_lifecycle_in_time_then_stream_order() -> None:
    got = verdicts(
        [
            ("1-0", "E1", "I1", "reported", 10),
            ("2-0", "E2", "I1", "reported", 10),  # same time, later in the stream
            ("3-0", "E3", "I1", "handling", 30),  # after the closed in time
            ("4-0", "E4", "I1", "closed", 20),
            ("5-0", "E5", "I1", "resolved", 15),  # late, but before the closed: fine
            ("6-0", "E6", "I2", "handling", 5),
            ("7-0", "E7", "I2", "reported", 6),  # reported after anything
        ]
    )
    assert got == {
        "1-0": "accepted",
        "2-0": "bad_transition",
        "3-0": "bad_transition",
        "4-0": "accepted",
        "5-0": "accepted",
        "6-0": "accepted",
        "7-0": "bad_transition",
    }


def test_a_rejection_is_final_and_keeps_its_reason() -> None:
    rows = [("1-0", "E1", "I1", "reported", 10), ("2-0", "E2", "I1", "handling", 30)]
    got = verdicts(rows, stored={"2-0": "X:bad_transition"})
    assert got == {"1-0": "accepted", "2-0": "bad_transition"}


def test_alert_ids_belong_to_the_first_entry_in_stream_order() -> None:
    def row(alert_id: str, entry_id: str) -> dict[str, object]:
        place = {"lon": 0.0, "lat": 0.0, "grid_id": "g", "street_id": "s", "district_id": "d"}
        content = {"end_ms": None, "sub_label": None, "zones": None, "severity": None}
        return {"alert_id": alert_id, "camera_id": "C1", "label": "intrusion", "score": 0.5,
                "ts_ms": 1, "entry_id": entry_id, "revision": None, "rev_entry": entry_id,
                **place, **content}  # fmt: skip

    batch = [row("A", "10-0"), row("A", "9-5"), row("B", "11-0")]
    _, statuses, _ = decide_alert_versions([], batch)
    assert statuses == {"9-5": "A", "10-0": "D", "11-0": "A"}


def _random_entries(rnd: random.Random, n: int) -> list[tuple[str, str, str, str, int]]:
    steps = ["reported", "accepted", "handling", "resolved", "closed", "returned"]
    out = []
    for i in range(n):
        eid = f"E{rnd.randrange(n // 2)}"  # many reuses, within and across incidents
        out.append((f"{1000 + i}-{rnd.randrange(3)}", eid, f"I{rnd.randrange(6)}",
                    rnd.choice(steps), rnd.randrange(12) * 1000))  # fmt: skip
    return out


@pytest.mark.parametrize("seed", range(40))
def test_batch_by_batch_in_any_order_equals_all_at_once(seed: int) -> None:
    rnd = random.Random(seed)
    entries = _random_entries(rnd, rnd.randrange(5, 60))
    once = verdicts(entries)
    order = entries[:]
    rnd.shuffle(order)
    stored: dict[str, str] = {}  # entry → "A:" or "X:<reason>", as SQL keeps them
    first_reason: dict[str, str] = {}
    while order:
        k = rnd.randrange(1, 6)
        batch, order = order[:k], order[k:]
        known = [e for e in entries if e[0] in stored]
        got = verdicts(known + batch, {e: v for e, v in stored.items() if v != "A:"})
        for e, v in got.items():
            if v == "accepted":
                assert stored.get(e, "A:") == "A:", "a rejected entry came back"
                stored[e] = "A:"
            else:
                first_reason.setdefault(e, v)
                stored[e] = f"X:{first_reason[e]}"
    accepted = {e for e, v in stored.items() if v == "A:"}
    assert accepted == {e for e, v in once.items() if v == "accepted"}
    for e, v in stored.items():  # the same reasons, but for an entry breaking both rules
        if v != "A:" and once[e] != v[2:]:
            assert {once[e], v[2:]} == {"duplicate", "bad_transition"}, e
