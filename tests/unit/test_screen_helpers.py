"""Pure helpers behind the screens: markers moved apart, colour classes for many small
counts, and the catalog maps a widget takes (AG Grid's, the dropdown's)."""

from __future__ import annotations

import itertools
import math
import random
import re

import pytest

from dashboard import declutter as D
from dashboard.i18n import CATALOG, prefixed
from dashboard.pages.panorama.queries import quantile_breaks


def _gaps(points: list[tuple[float, float]], sizes: list[float], zoom: float) -> list[float]:
    """Clearance in px between each pair of circles (negative: they overlap)."""
    px = [D.to_px(lon, lat, zoom) for lon, lat in points]
    return [
        math.dist(px[i], px[j]) - (sizes[i] + sizes[j]) / 2
        for i, j in itertools.combinations(range(len(px)), 2)
    ]


def test_projection_round_trips() -> None:
    for lon, lat in [(118.79, 32.06), (-73.98, 40.75), (0.0, 0.0), (151.2, -33.9)]:
        back = D.from_px(*D.to_px(lon, lat, 9), 9)
        assert back == pytest.approx((lon, lat), abs=1e-9)


def test_markers_apart_stay_where_they_are() -> None:
    points = [(118.0, 32.0), (119.0, 32.0), (118.5, 33.0)]  # ~180 px apart at zoom 9
    assert D.spread(points, [54, 54, 54], 9) == points


@pytest.mark.parametrize("seed", range(5))
def test_crowded_markers_end_apart_and_near_home(seed: int) -> None:
    rng = random.Random(seed)
    # a dense centre, as the small central districts of a city are at zoom 9
    points = [
        (118.78 + rng.uniform(-0.03, 0.03), 32.05 + rng.uniform(-0.03, 0.03)) for _ in range(8)
    ]
    sizes = [D.cluster_size(rng.randint(1, 900)) for _ in points]
    assert min(_gaps(points, sizes, 9)) < 0  # they did overlap
    placed = D.spread(points, sizes, 9, gap=4)
    assert min(_gaps(placed, sizes, 9)) >= 4 - 0.05
    # each moved by less than the whole group's width (it stays near its area)
    width = sum(sizes) + 4 * len(sizes)
    for a, b in zip(points, placed, strict=True):
        assert math.dist(D.to_px(*a, 9), D.to_px(*b, 9)) <= width
    # apart at the opening zoom means apart when zoomed in too
    assert min(_gaps(placed, sizes, 11)) >= 4


def test_coincident_markers_are_parted_deterministically() -> None:
    points = [(118.8, 32.0)] * 3
    once = D.spread(points, [30, 30, 30], 9)
    assert once == D.spread(points, [30, 30, 30], 9)
    assert min(_gaps(once, [30, 30, 30], 9)) >= 4 - 0.05


def test_cluster_size_as_drawn() -> None:
    assert D.cluster_size(0) == 22
    assert D.cluster_size(100) == 44
    assert D.cluster_size(10_000) == 54  # capped


def test_quantile_breaks_spread_skewed_counts() -> None:
    # 12,000 grids: most have none, a long tail has a few, a handful many
    values = [0.0] * 9000 + [1.0] * 1500 + [2.0] * 800 + [3.0] * 400 + [5.0] * 200 + [40.0] * 100
    breaks = quantile_breaks(values)
    assert breaks[0] == 0
    assert breaks == sorted(set(breaks))  # strictly rising
    assert all(b == int(b) for b in breaks)
    assert breaks[-1] == 40  # the largest count is in the top class
    # the non-zero grids fall into more than two classes (not one colour for all)
    classes = {next(i for i, b in enumerate(breaks) if v <= b) for v in values if v > 0}
    assert len(classes) >= 3


def test_quantile_breaks_without_counts() -> None:
    assert quantile_breaks([0.0, 0.0]) == [0, 1, 2, 3, 4, 5]
    assert quantile_breaks([]) == [0, 1, 2, 3, 4, 5]
    assert quantile_breaks([0.0, 7.0]) == [0, 7]


@pytest.mark.parametrize("prefix", ["aggrid.", "dropdown."])
def test_widget_texts_come_from_the_catalog(prefix: str) -> None:
    keys = {k[len(prefix) :] for k in CATALOG if k.startswith(prefix)}
    zh, en = prefixed(prefix, "zh-CN"), prefixed(prefix, "en")
    assert set(zh) == set(en) == keys and keys
    for k in keys:
        assert zh[k] == CATALOG[prefix + k][0]
        assert en[k] == CATALOG[prefix + k][1]
        words = re.sub(r"\{\w+\}", "", zh[k])  # the widget fills {placeholders} in
        assert not re.search("[A-Za-z]", words), zh[k]


def test_replay_picker_lists_workers_online_first() -> None:
    import polars as pl

    from dashboard.pages.work.queries import worker_options

    roster = pl.DataFrame(
        {
            "worker_id": ["w1", "w2", "w3", "w4"],
            "name": ["甲", "乙", "丙", "丁"],
            "grid_id": ["g2", "g1", "g1", "g3"],
        }
    )
    live = pl.DataFrame({"worker_id": ["w3", "w4", "w1"], "online": [True, True, False]})
    opts = worker_options(roster, live, {"g1": "一号网格", "g2": "二号网格"}, "zh-CN")
    assert [o["value"] for o in opts] == ["w3", "w4", "w2", "w1"]  # online, then by grid
    assert opts[0]["label"] == "● 丙 · 一号网格 · 在线"
    assert opts[1]["label"] == "● 丁 · g3 · 在线"  # a grid without a name shows its id
    assert opts[2]["label"] == "○ 乙 · 一号网格 · 离线"  # never seen: offline
    en = worker_options(roster, live, {}, "en")
    assert en[0]["label"].endswith("· online") and en[-1]["label"].endswith("· offline")
    assert worker_options(roster, live.clear(), {}, "zh-CN")[0]["value"] == "w2"
