"""A video cluster's level follows what the cameras saw and the local hour.

The rule text (config.toml ``[warnings]``): ``video_levels`` gives each label its level
(danger to people above nuisance); at local night, ``night_start_h``..``night_end_h``
(22:00–06:00 by default), the nuisance labels in ``night_lower_labels`` are one level
lower, never below blue. Expected levels below are written from that text, per label and
per named moment (tests/clock.py), on hand-built frames."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from pipelines import warnings as W
from pipelines.settings import load_settings
from pipelines.spine.events import VIDEO_LABELS
from tests.clock import MOMENTS, Moment, named

pytestmark = pytest.mark.clock

MIN = 60_000
# From the rule text: the day level of each label …
DAY = {
    "smoke_fire": "red",
    "fall": "orange",
    "intrusion": "orange",
    "crowd_gathering": "orange",
    "illegal_parking": "yellow",
    "street_vending": "yellow",
    "garbage_overflow": "blue",
}
# … and one lower at night for the nuisance labels (blue stays blue).
NIGHT = DAY | {"illegal_parking": "blue", "street_vending": "blue", "garbage_overflow": "blue"}
# Local night (22:00–06:00) at these moments, from their wall time in tests/clock.py.
IS_NIGHT = {"thu-10:00": False, "fri-03:00": True, "sat-03:00": True, "sat-12:00": False}
IS_NIGHT["mon-00:01"] = True


def streets(n: int) -> W.Areas:
    ids = [f"s{i}" for i in range(n)]
    parent: dict[str, str | None] = {f"g{i}": s for i, s in enumerate(ids)}
    parent |= {s: "d1" for s in ids} | {"d1": "c", "c": None}
    grids = pl.DataFrame(
        {
            "grid_id": [f"g{i}" for i in range(n)],
            "street_id": ids,
            "district_id": ["d1"] * n,
            "city_id": ["c"] * n,
        }
    )
    return W.Areas(grids=grids, parent=parent)


def clusters(now_ms: int, labels: list[str], cameras: int = 3) -> W.RuleInputs:
    """One street per label, ``cameras`` cameras each raising it 5 minutes ago; no history
    (the rule's prior), so every street is a cluster."""
    rows = [
        {
            "alert_id": f"a{s}-{c}",
            "camera_id": f"cam{s}-{c}",
            "label": label,
            "ts_ms": now_ms - 5 * MIN,
            "grid_id": f"g{s}",
            "street_id": f"s{s}",
        }
        for s, label in enumerate(labels)
        for c in range(cameras)
    ]
    return W.RuleInputs(
        areas=streets(len(labels)),
        video=pl.DataFrame(rows, schema=W.VIDEO_SCHEMA),
        video_baseline=pl.DataFrame(schema=W.VIDEO_BASELINE_SCHEMA),
        video_baseline_h=6.0,
    )


def levels(fs: list[W.Finding]) -> dict[str, str]:
    return {str(f.summary["label"]): f.level for f in fs}


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_every_label_at_every_moment(moment: Moment) -> None:
    labels = list(VIDEO_LABELS)
    assert set(labels) == set(DAY)  # a new label needs its level in the rule text
    got = levels(W.RULES["video_cluster"](clusters(moment.ms, labels), W.RuleConfig(), moment.ms))
    assert got == (NIGHT if IS_NIGHT[moment.name] else DAY)


def test_eight_parking_clusters_at_3_am_are_blue_and_a_fire_stays_red() -> None:
    at3 = named("sat-03:00").ms
    scene = clusters(at3, ["illegal_parking"] * 8 + ["smoke_fire"])
    found = W.RULES["video_cluster"](scene, W.RuleConfig(), at3)
    assert sorted(f.level for f in found) == ["blue"] * 8 + ["red"]
    noon = named("sat-12:00").ms
    found = W.RULES["video_cluster"](clusters(noon, ["illegal_parking"] * 8), W.RuleConfig(), noon)
    assert {f.level for f in found} == {"yellow"}


def test_levels_and_hours_are_configurable() -> None:
    cfg = dataclasses.replace(
        W.RuleConfig(),
        video_levels="illegal_parking:orange",
        video_default_level="yellow",
        night_start_h=1,
        night_end_h=4,
        night_lower_labels="illegal_parking,intrusion",
    )
    labels = ["illegal_parking", "intrusion", "smoke_fire"]
    at3, at10, at0001 = (named(n).ms for n in ("fri-03:00", "thu-10:00", "mon-00:01"))
    night = {"illegal_parking": "yellow", "intrusion": "blue", "smoke_fire": "yellow"}
    day = {"illegal_parking": "orange", "intrusion": "yellow", "smoke_fire": "yellow"}
    assert levels(W.RULES["video_cluster"](clusters(at3, labels), cfg, at3)) == night
    assert levels(W.RULES["video_cluster"](clusters(at10, labels), cfg, at10)) == day
    assert levels(W.RULES["video_cluster"](clusters(at0001, labels), cfg, at0001)) == day


def test_the_project_config_carries_the_rule_text() -> None:
    cfg = W.RuleConfig.of(load_settings())
    assert cfg.video_level_table == {k: v for k, v in DAY.items()}
    assert (cfg.night_start_h, cfg.night_end_h) == (22, 6)
    assert cfg.timezone == "Asia/Shanghai"


def test_an_unknown_level_is_refused() -> None:
    cfg = dataclasses.replace(W.RuleConfig(), video_levels="fall:purple")
    with pytest.raises(ValueError, match="purple"):
        _ = cfg.video_level_table
