"""The locations transforms: area chain by grid index, time keys, per-batch reductions."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.spine import aggregate as agg

GRIDS = pl.DataFrame(
    {
        "grid_id": ["g0", "g1"],
        "street_id": ["s0", "s1"],
        "district_id": ["d0", "d0"],
        "city_id": ["c", "c"],
        "name": ["a", "b"],
    }
)
T0 = 1_795_000_000_000  # 2026-11-18 11:06:40 UTC, 19:06:40 in Asia/Shanghai


def pings() -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "entry_id": ["1-0", "2-0", "3-0", "4-0", "5-0"],
            "worker_id": ["w1", "w2", "w1", "w1", "w2"],
            "ts": [T0 + 5_000, T0, T0 + 65_000, T0 + 1_000, T0],
            "lon": [118.1, 118.2, 118.3, 118.4, 118.5],
            "lat": [32.0, 32.0, 32.0, 32.0, 32.0],
            "accuracy": [5.0, None, 5.0, 5.0, 5.0],
            "speed": [1.0, 1.0, 1.0, 1.0, 1.0],
            "battery": [80.0, 80.0, 80.0, 80.0, 70.0],
        }
    )
    gi = np.array([0, 1, 1, 0, 1], dtype=np.int32)
    return agg.with_time_keys(agg.with_grid(df, gi, GRIDS), "Asia/Shanghai")


def test_with_grid_attaches_the_chain_and_nulls_outside() -> None:
    df = pl.DataFrame({"x": [1, 2, 3]})
    out = agg.with_grid(df, np.array([1, -1, 0], dtype=np.int32), GRIDS)
    assert out.columns == ["x", *agg.CHAIN]
    assert out["grid_id"].to_list() == ["g1", None, "g0"]
    assert out["street_id"].to_list() == ["s1", None, "s0"]
    inside, outside = agg.split_outside(out)
    assert inside["x"].to_list() == [1, 3] and outside["x"].to_list() == [2]


def test_with_time_keys_local_day_minute_hour() -> None:
    ts = [T0, T0 + 59_999, 1_795_017_599_999, 1_795_017_600_000]  # last: local midnight
    out = agg.with_time_keys(pl.DataFrame({"ts": ts}), "Asia/Shanghai")
    assert out["minute"].to_list() == [t // 60_000 for t in ts]
    assert out["hour"].to_list() == [t // 3_600_000 for t in ts]
    assert out["day"].to_list() == ["20261118", "20261118", "20261118", "20261119"]
    assert agg.local_day(T0 - 12 * 3_600_000, "UTC") == "20261117"
    empty = agg.with_time_keys(pl.DataFrame(schema={"ts": pl.Int64}), "Asia/Shanghai")
    assert empty.schema == {"ts": pl.Int64, "minute": pl.Int64, "hour": pl.Int64, "day": pl.String}


def test_latest_positions_newest_ping_per_worker() -> None:
    got = {w: (ts, p) for w, ts, p in agg.latest_positions(pings())}
    assert set(got) == {"w1", "w2"}
    assert got["w1"][0] == T0 + 65_000
    assert agg.unpack_position(got["w1"][1])["grid_id"] == "g1"
    # equal timestamps: the later entry in the batch wins
    assert agg.unpack_position(got["w2"][1])["battery"] == 70.0
    assert agg.latest_positions(pings().clear()) == []


def test_first_visits_and_patrolled_grids() -> None:
    visits = agg.first_visits(pings())
    assert visits.columns == ["day", *agg.CHAIN, "first_ms"]
    assert sorted(visits.select("grid_id", "first_ms").rows()) == [("g0", T0 + 1_000), ("g1", T0)]
    patrolled = agg.patrolled_grids(visits)
    assert sorted(patrolled) == [
        ("20261118", "g0", "s0", "d0", "c"),
        ("20261118", "g1", "s1", "d0", "c"),
    ]
    assert sorted(agg.patrolled_grids(pings())) == sorted(patrolled)


def test_track_slots_earliest_ping_per_worker_and_slot() -> None:
    slots = agg.track_slots(pings(), 60)
    assert slots.columns == [
        "worker_id",
        "slot",
        "ts_ms",
        "lon",
        "lat",
        "grid_id",
        "accuracy",
        "speed",
        "battery",
        "mock",
    ]
    got = sorted(slots.select("worker_id", "ts_ms", "lon").rows())
    assert got == [("w1", T0 + 1_000, 118.4), ("w1", T0 + 65_000, 118.3), ("w2", T0, 118.2)]


def test_mock_flag_travels_in_the_packed_position_and_track_points() -> None:
    """A phone's mock (simulated) fix stays marked: packed position, track point, frame."""
    from pipelines.gridwork.tracks import positions_frame

    df = pings().with_columns(mock=pl.Series([None, True, False, True, False]))
    got = {w: p for w, _, p in agg.latest_positions(df)}
    assert agg.unpack_position(got["w1"])["mock"] is False  # w1's newest fix (row 3): False
    assert agg.unpack_position(got["w2"])["mock"] is False  # w2's last of equal ts: row 5
    got = {w: p for w, _, p in agg.latest_positions(df.filter(pl.col("entry_id") != "5-0"))}
    assert agg.unpack_position(got["w2"])["mock"] is True
    assert positions_frame(got).sort("worker_id")["mock"].to_list() == [False, True]
    # positions packed before the flag existed (7 fields) read as not mock
    old = "118.1,32.0,1,g1,5.0,1.0,80"
    assert agg.unpack_position(old)["mock"] is False
    assert positions_frame({"w9": old})["mock"].to_list() == [False]
    slots = agg.track_slots(df, 60).sort("worker_id", "ts_ms")
    assert slots["mock"].to_list() == [True, False, True]
