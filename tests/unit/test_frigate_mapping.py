"""Frigate messages → one video alert per tracked object / review item, updated in place.

Sources (cited per case):
* [FE] blakeblackshear/frigate docs/docs/integrations/mqtt.md, ``frigate/events``: the
  example message (type update, before/after with id, camera front_door, label person,
  top_score, current_zones, start_time, end_time null, frame_time); "The first message is
  published when the tracked object is no longer marked as a false_positive … When the
  tracked object ends, a final message is published with end_time set."
* [FR] the same page, ``frigate/reviews``: the example (id 1718987129.308396-fqk5ka,
  camera front_cam, severity detection → alert in one item, data.detections, data.objects
  ["person", "car"]); "An update with the same ID will be published when the severity
  changes from detection to alert, additional objects are detected …".
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipelines.gateway.frigate import Alert, FrigateMap, Ignored, Malformed, pairs, translate
from pipelines.settings import GatewaySettings

FE_AFTER = {
    "id": "1607123955.475377-mxklsc",
    "camera": "front_door",
    "frame_time": 1607123962.082975,
    "snapshot_time": 1607123961.837752,
    "label": "person",
    "sub_label": None,
    "top_score": 0.958984375,
    "false_positive": False,
    "start_time": 1607123955.475377,
    "end_time": None,
    "score": 0.87890625,
    "box": [432, 496, 544, 854],
    "area": 40096,
    "region": [218, 440, 693, 915],
    "current_zones": ["yard", "driveway"],
    "entered_zones": ["yard", "driveway"],
    "thumbnail": None,
    "has_snapshot": False,
    "has_clip": False,
    "stationary": False,
    "motionless_count": 0,
    "position_changes": 2,
}
FE = {"type": "update", "before": {**FE_AFTER, "frame_time": 1607123961.837752}, "after": FE_AFTER}

FR_AFTER = {
    "id": "1718987129.308396-fqk5ka",
    "camera": "front_cam",
    "start_time": 1718987129.308396,
    "end_time": None,
    "severity": "alert",
    "thumb_path": "/media/frigate/clips/review/thumb-front_cam-1718987129.308396-fqk5ka.webp",
    "data": {
        "detections": [
            "1718987128.947436-g92ztx",
            "1718987148.879516-d7oq7r",
            "1718987126.934663-q5ywpt",
        ],
        "objects": ["person", "car"],
        "sub_labels": [],
        "zones": [],
        "audio": [],
    },
}
FR = {"type": "update", "before": {**FR_AFTER, "severity": "detection"}, "after": FR_AFTER}

FMAP = FrigateMap.of(
    GatewaySettings(
        frigate_cameras="front_door:C1,front_cam:C2",
        frigate_labels="person:intrusion,car:illegal_parking,fire:smoke_fire",
        frigate_review_min_severity="detection",
    )
)


def registered(camera: str) -> bool:
    return camera in ("C1", "C2", "C77")


def msg(base: dict[str, Any], kind: str | None = None, **after: Any) -> dict[str, Any]:
    m = copy.deepcopy(base)
    if kind:
        m["type"] = kind
    m["after"].update(after)
    return m


def test_frigate_events_example_maps_to_one_alert() -> None:
    """[FE] the documented update message."""
    a = translate("events", FE, FMAP, registered)
    assert isinstance(a, Alert)
    ev = a.event
    assert ev["alert_id"] == "fe-1607123955.475377-mxklsc"
    assert (ev["camera_id"], ev["label"], ev["score"]) == ("C1", "intrusion", 0.958984375)
    assert ev["ts"] == 1607123955475 and "end_ts" not in ev
    assert ev["frigate"]["zones"] == "yard,driveway" and ev["frigate"]["label"] == "person"
    assert isinstance(ev["ts"], int) and isinstance(ev["revision"], int)


def test_lifecycle_of_one_object_is_one_alert_with_rising_revisions() -> None:
    """[FE] new → update (better snapshot, zone change) → end with end_time set: the
    same alert id each time, revisions strictly rising; the same message twice is the
    same revision."""
    new = translate("events", msg(FE, "new", frame_time=1607123956.0), FMAP, registered)
    upd = translate("events", FE, FMAP, registered)
    end = translate("events", msg(FE, "end", end_time=1607123999.5), FMAP, registered)
    assert isinstance(new, Alert) and isinstance(upd, Alert) and isinstance(end, Alert)
    assert new.alert_id == upd.alert_id == end.alert_id
    assert new.revision < upd.revision < end.revision
    assert end.event["end_ts"] == 1607123999500
    again = translate("events", FE, FMAP, registered)
    assert isinstance(again, Alert) and again.revision == upd.revision
    # an end at the same frame as the last update still comes after it
    same = translate("events", msg(FE, "end", end_time=1607123999.5), FMAP, registered)
    assert isinstance(same, Alert) and same.revision > upd.revision


def test_review_escalates_in_place() -> None:
    """[FR] detection → alert within one review item; more objects: higher revisions."""
    det = translate("reviews", msg(FR, "new", severity="detection"), FMAP, registered)
    alert = translate("reviews", FR, FMAP, registered)
    assert isinstance(det, Alert) and isinstance(alert, Alert)
    assert det.alert_id == alert.alert_id == "fr-1718987129.308396-fqk5ka"
    assert det.revision < alert.revision
    assert (det.event["score"], alert.event["score"]) == (0.6, 1.0)
    assert alert.event["label"] == "intrusion"  # the first configured object: person
    assert alert.event["camera_id"] == "C2" and alert.event["frigate"]["severity"] == "alert"
    more = msg(FR, "update")
    more["after"]["data"]["detections"].append("1718987150.0-zzz")
    m = translate("reviews", more, FMAP, registered)
    assert isinstance(m, Alert) and m.revision > alert.revision
    end = translate("reviews", msg(more, "end", end_time=1718987160.0), FMAP, registered)
    assert isinstance(end, Alert) and end.revision > m.revision


def test_review_below_the_minimum_severity_is_ignored_until_it_escalates() -> None:
    strict = FrigateMap.of(GatewaySettings(frigate_cameras="front_cam:C2"))  # min: alert
    assert translate(
        "reviews", msg(FR, "new", severity="detection"), strict, registered
    ) == Ignored("severity")
    assert isinstance(translate("reviews", FR, strict, registered), Alert)


@pytest.mark.parametrize(
    "topic, message, reason",
    [
        ("events", msg(FE, false_positive=True), "false_positive"),  # [FE] not yet published
        ("events", msg(FE, camera="back_yard"), "camera"),  # not configured
        ("events", msg(FE, label="dog"), "label"),  # not configured
        ("events", msg(FE, "description"), "type"),  # other message types of the topic
        ("reviews", msg(FR, data={"objects": ["dog"], "detections": []}), "label"),
    ],
)
def test_what_is_not_configured_is_ignored(topic: str, message: dict, reason: str) -> None:
    assert translate(topic, message, FMAP, registered) == Ignored(reason)


def test_identity_mappings() -> None:
    """A camera named like a registered camera id and a label already ours map to themselves."""
    a = translate("events", msg(FE, camera="C77", label="smoke_fire"), FMAP, registered)
    assert isinstance(a, Alert) and (a.camera_id, a.event["label"]) == ("C77", "smoke_fire")


def test_feeds_setting() -> None:
    only_reviews = FrigateMap.of(
        GatewaySettings(frigate_feeds="reviews", frigate_cameras="front_door:C1")
    )
    assert translate("events", FE, only_reviews, registered) == Ignored("feed")


@pytest.mark.parametrize(
    "message",
    [
        "not an object",
        {"type": "new"},  # no after
        {"type": 3, "after": FE_AFTER},
        msg(FE, id=None),
        msg(FE, start_time="yesterday"),
        msg(FE, top_score=7.0),
        msg(FE, top_score=None, score=None),
        msg(FR, severity="panic"),
    ],
)
def test_malformed(message: Any) -> None:
    topic = (
        "reviews"
        if isinstance(message, dict) and "severity" in message.get("after", {})
        else "events"
    )
    with pytest.raises(Malformed):
        translate(topic, message, FMAP, registered)


def test_pairs() -> None:
    assert pairs("a:b, c:d,bad,:x,y:") == {"a": "b", "c": "d"}
