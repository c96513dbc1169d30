"""One Frigate object or review item is ONE video alert, updated in place: the pure rule
(``aggregate.decide_alert_versions``) over every order of arrival and every batching.

Messages follow Frigate's documented MQTT payloads (https://docs.frigate.video/integrations/mqtt/,
the source of ``tests/unit/test_frigate_mapping.py``'s [FE] / [FR] examples):
* [FE] ``frigate/events``: "When Frigate finds a better snapshot of the tracked object or
  when a zone change occurs, it will publish a message with the same id. When the
  tracked object ends, a final message is published with end_time set." — type new /
  update / end, ``after.top_score``, ``after.current_zones``, ``after.sub_label`` (a name,
  or [name, score] as face recognition sets it).
* [FR] ``frigate/reviews``: an update with the same id is published "when the severity
  changes from detection to alert".

Expected values come from the messages and the rule, not from the code: the alert shows
the last message of Frigate's sequence (the highest revision), is created once, and
its camera, start and place are the object's.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from pipelines.gateway.frigate import Alert, translate
from pipelines.spine.aggregate import CONTENT, decide_alert_versions
from tests.unit.test_frigate_mapping import FE, FMAP, FR, msg, registered

T = 1607123955.475377  # [FE] start_time

# [FE] one tracked object: new → update (score rises, a zone entered) → update (sub_label
# set) → end (end_time set)
OBJECT = [
    msg(FE, "new", frame_time=T + 1, top_score=0.72, current_zones=[]),
    msg(FE, "update", frame_time=T + 6.6, top_score=0.958984375),
    msg(FE, "update", frame_time=T + 8, top_score=0.958984375, sub_label=["Eli", 0.514]),
    msg(FE, "end", frame_time=T + 8, top_score=0.958984375, sub_label=["Eli", 0.514],
        end_time=T + 44),
]  # fmt: skip
OBJECT_FINAL = {
    "label": "intrusion",  # person → intrusion (the test's label map)
    "score": 0.958984375,
    "sub_label": "Eli",
    "zones": "yard,driveway",
    "end_ms": int((T + 44) * 1000),
    "severity": None,
}
# [FR] one review item: detection → escalated to alert → end
REVIEW = [
    msg(FR, "new", severity="detection", end_time=None),
    msg(FR, "update", severity="alert"),
    msg(FR, "end", severity="alert", end_time=1718987160.0),
]
REVIEW_FINAL = {"label": "intrusion", "score": 1.0, "severity": "alert", "end_ms": 1718987160000}


def rows_of(topic: str, msgs: list[dict[str, Any]], first_ms: int = 1000) -> list[dict[str, Any]]:
    """The messages as video rows, in this order of arrival (their stream entries)."""
    out = []
    for i, m in enumerate(msgs):
        a = translate(topic, m, FMAP, registered)
        assert isinstance(a, Alert)
        ev = a.event
        entry = f"{first_ms + i}-0"
        out.append(
            {
                "alert_id": ev["alert_id"],
                "camera_id": ev["camera_id"],
                "label": ev["label"],
                "score": ev["score"],
                "ts_ms": ev["ts"],
                "lon": 118.8,
                "lat": 32.05,
                "grid_id": "G1",
                "street_id": "S1",
                "district_id": "D1",
                "entry_id": entry,
                "revision": ev["revision"],
                "rev_entry": entry,
                "end_ms": ev.get("end_ts"),
                "sub_label": ev.get("sub_label"),
                "zones": ev.get("zones"),
                "severity": ev.get("severity"),
            }
        )
    return out


def run(batches: list[list[dict[str, Any]]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Decide batch after batch against what the earlier ones stored."""
    stored: dict[str, dict[str, Any]] = {}
    statuses: list[str] = []
    for batch in batches:
        ids = {r["alert_id"] for r in batch}
        write, st, _ = decide_alert_versions([stored[a] for a in ids if a in stored], batch)
        for row in write:
            stored[row["alert_id"]] = row
        statuses += [st[r["entry_id"]] for r in batch]
    return stored, statuses


def check(stored: dict[str, dict[str, Any]], final: dict[str, Any], ts_ms: int) -> None:
    assert len(stored) == 1
    row = next(iter(stored.values()))
    assert {k: row[k] for k in final} == final
    assert (row["camera_id"], row["ts_ms"], row["grid_id"]) == (row["camera_id"], ts_ms, "G1")


def batchings(rows: list[dict[str, Any]]) -> list[list[list[dict[str, Any]]]]:
    """All in one batch, one entry per batch, and a split in two."""
    return [[rows], [[r] for r in rows], [rows[:2], rows[2:]]]


def test_object_lifecycle_in_every_order_is_one_alert_with_the_final_values() -> None:
    ts_ms = int(T * 1000)
    for perm in itertools.permutations(OBJECT):
        rows = rows_of("events", list(perm))
        for batches in batchings(rows):
            stored, statuses = run(batches)
            check(stored, OBJECT_FINAL, ts_ms)
            assert statuses.count("A") == 1  # created once: counted once
            assert set(statuses) <= {"A", "U", "S"}  # nothing dead-lettered


def test_review_escalation_in_every_order_raises_the_severity_in_place() -> None:
    ts_ms = int(1718987129.308396 * 1000)
    for perm in itertools.permutations(REVIEW):
        for batches in batchings(rows_of("reviews", list(perm))):
            stored, statuses = run(batches)
            check(stored, REVIEW_FINAL, ts_ms)
            assert statuses.count("A") == 1


def test_in_stream_order_each_message_updates_and_a_replay_changes_nothing() -> None:
    rows = rows_of("events", OBJECT)
    stored, statuses = run([[r] for r in rows])
    assert statuses == ["A", "U", "U", "U"]
    # a replay of every entry (a crash before XACK, a rebuild): no write, nothing new
    write, st, displaced = decide_alert_versions(list(stored.values()), rows)
    assert write == [] and displaced == []
    # the creating entry and the shown one are "already applied", the others superseded
    assert [st[r["entry_id"]] for r in rows] == ["R", "S", "S", "R"]
    # the same messages re-published (new entries, same revisions): no-ops
    again = rows_of("events", OBJECT, first_ms=5000)
    write, st, _ = decide_alert_versions(list(stored.values()), again)
    assert write == [] and set(st.values()) == {"S"}


def test_an_older_revision_never_regresses_the_alert() -> None:
    rows = rows_of("events", [OBJECT[3], OBJECT[0]])  # the end arrives first
    stored, statuses = run([[r] for r in rows])
    assert statuses == ["A", "S"]
    check(stored, OBJECT_FINAL, int(T * 1000))


def test_an_update_from_another_camera_is_refused_and_the_alert_stays() -> None:
    rows = rows_of("events", OBJECT[:2])
    moved = dict(rows[1], camera_id="C77", grid_id="G9", entry_id="1002-0", rev_entry="1002-0")
    moved["revision"] += 100
    stored, statuses = run([[rows[0]], [rows[1], moved]])
    assert statuses == ["A", "U", "M"]
    row = stored[rows[0]["alert_id"]]
    assert (row["camera_id"], row["grid_id"], row["rev_entry"]) == ("C1", "G1", "1001-0")


def test_alerts_without_revisions_keep_the_first_entry_rule() -> None:
    """A feed that sends an alert once (the simulator, a raw XADD): the first entry in
    stream order owns the alert id, any later one is a duplicate — also when the earlier
    entry is decided later (it takes the id back)."""
    base = rows_of("events", OBJECT[:1])[0] | {"revision": None}
    first = base | {"entry_id": "10-0", "rev_entry": "10-0", "label": "smoke_fire"}
    later = base | {"entry_id": "20-0", "rev_entry": "20-0"}
    stored, statuses = run([[later], [first]])
    assert statuses == ["A", "A"]
    _, st, displaced = decide_alert_versions([], [later, first])
    assert st == {"10-0": "A", "20-0": "D"} and displaced == []
    assert stored[base["alert_id"]]["entry_id"] == "10-0"
    assert stored[base["alert_id"]]["label"] == "smoke_fire"


def test_many_alerts_in_random_batches_converge() -> None:
    """Three objects' messages interleaved at random and cut into random batches."""
    rng = random.Random(7)
    msgs = []
    for k in range(3):
        for m in OBJECT:
            m2 = msg(m)
            m2["after"]["id"] = f"{T:.6f}-obj{k}"
            msgs.append(m2)
    for _ in range(30):
        order = msgs[:]
        rng.shuffle(order)
        rows = rows_of("events", order)
        cuts = sorted(rng.sample(range(1, len(rows)), 3))
        batches = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
        stored, statuses = run(batches)
        assert len(stored) == 3 and statuses.count("A") == 3
        for row in stored.values():
            assert {k: row[k] for k in OBJECT_FINAL} == OBJECT_FINAL
            assert set(CONTENT) <= set(row)


def test_an_earlier_creator_decided_later_takes_the_alert_over() -> None:
    """After a crash an earlier entry can be decided after a later one: it becomes the
    creator (the live state takes back what the former creator counted), the newest
    revision still shows, and the former creator is no dead letter (it had a revision)."""
    rows = rows_of("events", OBJECT)
    stored, statuses = run([[rows[2], rows[3]], [rows[0], rows[1]]])
    assert statuses == ["A", "U", "A", "S"]
    row = next(iter(stored.values()))
    assert (row["entry_id"], row["rev_entry"]) == ("1000-0", "1003-0")
    check(stored, OBJECT_FINAL, int(T * 1000))
    _, _, displaced = decide_alert_versions([dict(row, entry_id="1002-0")], rows[:1])
    assert [d["entry_id"] for d in displaced] == ["1002-0"]
