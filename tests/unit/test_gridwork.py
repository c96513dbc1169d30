"""Grid work maths on hand-built tracks: distance, time in own grid, coverage, the roster
CSV validation, positions and clusters, and the privacy of the page snapshot."""

from __future__ import annotations

import math
from datetime import datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from dashboard import live as L
from dashboard.pages.work import queries as WQ
from pipelines.gridwork import tracks as work

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)

MIN = 60_000
# 1 m north ≈ 1 / 111,195 degrees of latitude on the haversine sphere
DEG_PER_M = 1 / (math.pi * work.EARTH_R_M / 180)


def pts(rows: list[tuple[str, int, float, str]]) -> pl.DataFrame:
    """rows: (worker, minute, metres north of 32.0°N on 118.8°E, grid)."""
    return pl.DataFrame(
        [
            {"worker_id": w, "ts_ms": m * MIN, "lon": 118.8, "lat": 32.0 + d * DEG_PER_M}
            | {"grid_id": g}
            for w, m, d, g in rows
        ],
        schema=work.POINTS_SCHEMA,
    )


OWN = pl.DataFrame({"worker_id": ["a", "b"], "grid_id": ["g1", "g1"]})


def test_distance_sums_consecutive_segments_in_time_order() -> None:
    # a walks 0 → 60 → 120 → 60 m (shuffled input): 180 m
    track = pts([("a", 2, 120, "g1"), ("a", 0, 0, "g1"), ("a", 3, 60, "g1"), ("a", 1, 60, "g1")])
    s = work.track_stats(track, OWN).row(0, named=True)
    assert s["n_points"] == 4 and s["distance_m"] == pytest.approx(180, abs=0.01)
    assert s["first_ms"] == 0 and s["last_ms"] == 3 * MIN


def test_gaps_and_gps_jumps_are_not_walked() -> None:
    # 100 m in 1 min, then a 20-minute gap (not walked), then a 5 km jump in 1 min (GPS)
    track = pts(
        [("a", 0, 0, "g1"), ("a", 1, 100, "g1"), ("a", 21, 400, "g1"), ("a", 22, 5400, "g1")]
    )
    s = work.track_stats(track, OWN).row(0, named=True)
    assert s["distance_m"] == pytest.approx(100, abs=0.01)


def test_duplicate_points_count_once() -> None:
    track = pts([("a", 0, 0, "g1"), ("a", 0, 0, "g1"), ("a", 1, 50, "g1")])
    s = work.track_stats(track, OWN).row(0, named=True)
    assert s["n_points"] == 2 and s["distance_m"] == pytest.approx(50, abs=0.01)


def test_time_in_own_grid() -> None:
    # in g1 for 0–2, leaves (half of the crossing segment counts), away 3–4, back at 5
    track = pts(
        [
            ("a", 0, 0, "g1"),
            ("a", 1, 10, "g1"),
            ("a", 2, 20, "g1"),
            ("a", 3, 30, "g2"),
            ("a", 4, 40, "g2"),
            ("a", 5, 50, "g1"),
        ]
    )
    s = work.track_stats(track, OWN).row(0, named=True)
    # full: 0→1, 1→2 (2 min); half: 2→3 and 4→5 (1 min); none: 3→4
    assert s["own_grid_ms"] == 3 * MIN
    # b never in its own grid; a worker without a roster entry is never "inside"
    other = pts([("b", 0, 0, "g2"), ("b", 1, 0, "g2"), ("z", 0, 0, "g1"), ("z", 1, 0, "g1")])
    got = {r["worker_id"]: r["own_grid_ms"] for r in work.track_stats(other, OWN).to_dicts()}
    assert got == {"b": 0, "z": 0}


def test_time_in_grid_ignores_long_gaps() -> None:
    track = pts([("a", 0, 0, "g1"), ("a", 30, 0, "g1"), ("a", 31, 0, "g1")])
    s = work.track_stats(track, OWN, max_gap_ms=5 * MIN).row(0, named=True)
    assert s["own_grid_ms"] == MIN


def test_empty_track() -> None:
    assert work.track_stats(pl.DataFrame(schema=work.POINTS_SCHEMA), OWN).is_empty()


GRIDS = pl.DataFrame(
    {
        "grid_id": ["g1", "g2", "g3", "g4"],
        "street_id": ["s1", "s1", "s2", "s2"],
        "district_id": ["d1", "d1", "d1", "d1"],
    }
)


def test_coverage_per_child_area_and_unpatrolled() -> None:
    cov = work.coverage(GRIDS, "street_id", {"g1", "g2", "g3", "gX"})
    assert cov.to_dicts() == [
        {"area_id": "s1", "grids": 2, "patrolled": 2, "share": 1.0},
        {"area_id": "s2", "grids": 2, "patrolled": 1, "share": 0.5},
    ]
    assert work.unpatrolled(GRIDS, {"g1", "g3"}) == ["g2", "g4"]
    assert work.unpatrolled(GRIDS, set()) == ["g1", "g2", "g3", "g4"]


def test_positions_clusters_and_status() -> None:
    packed = {
        "a": "118.80000,32.00000,1000,g1,5,0.5,80",
        "b": "118.90000,32.10000,1000,g3,,,",
        "c": "118.90000,32.20000,10,g3,,,",
    }
    pos = work.positions_frame(packed)
    assert pos.height == 3 and pos["grid_id"].to_list() == ["g1", "g3", "g3"]
    # Redis's undecoded reply (LiveState.positions_raw) parses to the same frame
    raw = {k.encode(): v.encode() for k, v in packed.items()}
    assert work.positions_frame(raw).equals(pos)
    roster = pl.DataFrame(
        {
            "worker_id": ["a", "b", "c", "d"],
            "name": ["张三", "李四", "王五", "赵六"],
            "type": ["full_time", "emergency", "part_time", "part_time"],
            "grid_id": ["g1", "g1", "g3", "g4"],
        }
    )
    live = work.live_workers(pos, roster, GRIDS, now_ms=1000, online_ms=500)
    assert live.filter(pl.col("worker_id") == "c")["online"].item() is False
    assert live.filter(pl.col("worker_id") == "a")["in_own"].item() is True
    assert live.filter(pl.col("worker_id") == "b")["in_own"].item() is False
    counts = work.status_counts(roster, live, 1000, 500)
    assert counts == {"on_duty": 4, "online": 2, "offline": 2, "in_own": 1}
    cl = {c["area"]: c for c in work.clusters(live, "street_id")}
    assert cl["s1"]["on"] == 1 and cl["s2"] == {
        "area": "s2",
        "lon": 118.9,
        "lat": 32.15,
        "on": 1,
        "off": 1,
    }


def _snapshot(people: bool, level: str, area: str) -> dict:
    packed = {"a": "118.8,32.0,1000,g1,,,", "b": "118.9,32.1,1000,g3,,,"}
    roster = pl.DataFrame(
        {
            "worker_id": ["a", "b"],
            "name": ["张三", "李四"],
            "type": ["full_time", "emergency"],
            "grid_id": ["g1", "g3"],
            "street_id": ["s1", "s2"],
            "district_id": ["d1", "d1"],
        }
    )
    live = work.live_workers(work.positions_frame(packed), roster, GRIDS, 1000, 500)
    children = {"district": ["s1", "s2"], "street": ["g1", "g2"]}[level]
    return WQ.snapshot(
        level=level,
        area_id=area,
        children=children,
        grids=GRIDS,
        roster=roster,
        live=live,
        patrolled={"g1"},
        now_ms=1000,
        online_ms=500,
        people=people,
    )


def test_snapshot_counts_only_roles_never_get_people() -> None:
    for level, area in (("district", "d1"), ("street", "s1")):
        snap = _snapshot(False, level, area)
        text = repr(snap)
        assert "张三" not in text and "'a'" not in text
        assert {f["properties"]["k"] for f in snap["markers"]["features"]} == {"c"}
    street = _snapshot(True, "street", "s1")
    (feat,) = street["markers"]["features"]
    assert feat["properties"]["k"] == "w" and feat["properties"]["n"] == "张三"
    d = _snapshot(True, "district", "d1")  # clustered at district level, people or not
    assert {f["properties"]["k"] for f in d["markers"]["features"]} == {"c"}
    assert d["kpi"]["coverage"] == 0.25 and d["kpi"]["unpatrolled"] == 3
    assert d["values"] == [0.5, 0.0] and d["gaps"] == ["g2", "g3", "g4"]
    assert d["children"][0] == {
        "area_id": "s1",
        "grids": 2,
        "patrolled": 1,
        "on_duty": 1,
        "online": 1,
    }


def _reports(rows: list[tuple[str, int, float, str]]) -> pl.DataFrame:
    """rows: (worker, minute, metres north of 32.0°N — where the incident is, category)."""
    return pl.DataFrame(
        [
            {"worker_id": w, "ts_ms": m * MIN, "lon": 118.9, "lat": 32.0 + d * DEG_PER_M}
            | {"category": c, "incident_id": f"i{k}"}
            for k, (w, m, d, c) in enumerate(rows)
        ],
        schema=WQ.REPORTS_SCHEMA,
    )


def test_replay_payload_merges_workers_on_one_shared_axis() -> None:
    track = pts(
        [
            ("a", 2, 20, "g1"),
            ("a", 0, 0, "g1"),
            ("a", 1, 10, "g2"),
            ("a", 1, 10, "g2"),  # duplicate: once
            ("b", 5, 100, "g1"),
            ("b", 3, 80, "g1"),
            ("z", 0, 0, "g1"),  # not asked for
        ]
    )
    out = work.replay_payload(track, _reports([]), ["b", "a", "nobody"])
    assert [w["id"] for w in out["workers"]] == ["b", "a"]  # the order asked, no empty ones
    b, a = out["workers"]
    assert a["t"] == [0, MIN, 2 * MIN] and b["t"] == [3 * MIN, 5 * MIN]
    assert len(a["ll"]) == 3 and a["ll"][0] == [32.0, 118.8]
    assert (out["t0"], out["t1"]) == (0, 5 * MIN)  # one axis for everyone
    assert out["points"] == 5 and out["reports"] == []
    empty = work.replay_payload(track, _reports([]), ["nobody"])
    assert empty["workers"] == [] and empty["t0"] is None


def test_every_replayed_worker_has_a_distinct_colour() -> None:
    colours = L.REPLAY_COLORS[: WQ.MAX_REPLAY_WORKERS]
    assert len(set(colours)) == len(colours) == WQ.MAX_REPLAY_WORKERS


def test_downsample_keeps_first_and_last_and_spreads_evenly() -> None:
    long = pts([("a", m, m, "g1") for m in range(1000)] + [("b", m, 0, "g1") for m in range(30)])
    small = work.downsample(long.sample(fraction=1.0, shuffle=True, seed=1), 100)
    a = small.filter(pl.col("worker_id") == "a")["ts_ms"].to_list()
    assert len(a) == 100 and a == sorted(a)
    assert a[0] == 0 and a[-1] == 999 * MIN
    gaps = {y - x for x, y in pairwise(a)}
    assert gaps <= {10 * MIN, 11 * MIN}  # evenly spread
    assert small.filter(pl.col("worker_id") == "b").height == 30  # short tracks stay whole
    with pytest.raises(ValueError):
        work.downsample(long, 1)


def test_replay_payload_shares_the_point_budget_between_workers() -> None:
    rows = [(w, m, m, "g1") for w in ("a", "b", "c", "d") for m in range(600)]
    out = work.replay_payload(pts(rows), _reports([]), ["a", "b", "c", "d"], max_points=1000)
    assert [len(w["t"]) for w in out["workers"]] == [250] * 4
    assert out["points"] == 2400  # what the window held
    # never fewer than REPLAY_MIN_POINTS per worker, however many share the budget
    few = work.replay_payload(pts(rows), _reports([]), ["a", "b", "c", "d"], max_points=40)
    assert [len(w["t"]) for w in few["workers"]] == [work.REPLAY_MIN_POINTS] * 4


def test_reports_are_placed_where_the_worker_stood() -> None:
    # a walks north 10 m a minute from minute 0 to 4; b stands at 500 m at minute 0 only
    track = pts([("a", m, 10 * m, "g1") for m in range(5)] + [("b", 0, 500, "g1")])
    reps = _reports(
        [
            ("a", 2, 900, "sanitation"),  # moved to 2.5 min below: between two points
            ("b", 3, 900, "traffic"),  # 3 min after b's only point: that point
            ("a", 30, 900, "fire"),  # 26 min after a's last point: the incident's place
        ]
    )
    half = reps.with_columns(ts_ms=pl.Series([2 * MIN + MIN // 2, 3 * MIN, 30 * MIN]))
    got = work.place_reports(track, half)
    assert got["incident_id"].to_list() == ["i0", "i1", "i2"]
    mid, only, far = got.iter_rows(named=True)
    # between minute 2 (20 m) and 3 (30 m), half way: 25 m north, on a's longitude
    assert mid["lat"] == pytest.approx(32.0 + 25 * DEG_PER_M) and mid["lon"] == 118.8
    assert mid["on_track"] and only["on_track"]
    assert only["lat"] == pytest.approx(32.0 + 500 * DEG_PER_M) and only["lon"] == 118.8
    assert not far["on_track"] and far["lon"] == 118.9  # the incident location
    assert far["lat"] == pytest.approx(32.0 + 900 * DEG_PER_M)
    # b's point 3 min before the report is near with the default 5 min, not with 2 min
    assert work.place_reports(track, reps.slice(1, 1), near_ms=2 * MIN)["on_track"][0] is False
    assert work.place_reports(track, reps.slice(0, 0)).is_empty()


def test_replay_payload_reports_carry_their_worker_and_place() -> None:
    track = pts([("a", 0, 0, "g1"), ("a", 2, 20, "g1"), ("b", 0, 100, "g1")])
    reps = _reports([("a", 1, 900, "sanitation"), ("b", 40, 900, "traffic"), ("z", 1, 0, "x")])
    out = work.replay_payload(track, reps, ["b", "a"])
    (ra, rb) = out["reports"]  # z is not replayed: its report is not shown
    assert (ra["w"], ra["cat"], ra["on_track"]) == (1, "sanitation", True)
    assert ra["ll"] == [round(32.0 + 10 * DEG_PER_M, 6), 118.8]
    assert (rb["w"], rb["on_track"], rb["ll"][1]) == (0, False, 118.9)


# ------------------------------------------------------------------ replay windows

TZ = "Asia/Shanghai"
# 2026-11-27 10:30 in Shanghai (02:30 UTC)
NOW = int(datetime(2026, 11, 27, 10, 30, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)
HOUR = 3_600_000


def window(
    choice: object,
    day: object = None,
    a: object = None,
    b: object = None,
    *,
    days: int = 180,
    max_hours: int = WQ.MAX_WINDOW_H,
) -> WQ.Window:
    return WQ.replay_window(
        choice, day, a, b, now_ms=NOW, tz=TZ, retention_days=days, max_hours=max_hours
    )


def test_window_hours_back_from_now() -> None:
    w = window(4)
    assert (w.since_ms, w.until_ms, w.args) == (NOW - 4 * HOUR, NOW, {"hours": "4"})
    assert window("8").args == {"hours": "8"}  # as a query string gives it
    assert window(3).args == {"hours": "2"} and window("x").args == {"hours": "2"}  # default


def test_window_a_chosen_day_and_hours() -> None:
    w = window(WQ.DAY, "2026-11-26", 8, 12)  # yesterday 08:00–12:00, local time
    start = int(datetime(2026, 11, 26, 8, tzinfo=ZoneInfo(TZ)).timestamp() * 1000)
    assert w.since_ms == start and w.until_ms == start + 4 * HOUR - 1
    assert w.query == "day=2026-11-26&from=8&to=12"
    assert w.detail()["since_ms"] == start
    whole = window(WQ.DAY, "2026-11-26T00:00:00", "0", "24")  # a picker's datetime string
    assert whole.until_ms - whole.since_ms == 24 * HOUR - 1
    today = window(WQ.DAY, "2026-11-27", 8, 12)  # the end not reached yet: cut at now
    assert today.until_ms == NOW


@pytest.mark.parametrize(
    ("day", "a", "b", "key"),
    [
        (None, 8, 12, "work.replay.err.date"),
        ("26/11/2026", 8, 12, "work.replay.err.date"),
        ("2026-11-26", None, 12, "work.replay.err.hours"),
        ("2026-11-26", 8, 25, "work.replay.err.hours"),
        ("2026-11-26", "x", 12, "work.replay.err.hours"),
        ("2026-11-26", 12, 8, "work.replay.err.order"),
        ("2026-11-26", 8, 8, "work.replay.err.order"),
        ("2026-11-27", 11, 12, "work.replay.err.future"),
        ("2026-11-28", 8, 12, "work.replay.err.future"),
        ("2026-05-01", 8, 12, "work.replay.err.retention"),
    ],
)
def test_window_refused(day: object, a: object, b: object, key: str) -> None:
    with pytest.raises(WQ.WindowError) as exc:
        window(WQ.DAY, day, a, b)
    assert exc.value.key == key


def test_window_length_and_retention_limits() -> None:
    with pytest.raises(WQ.WindowError) as exc:
        window(WQ.DAY, "2026-11-26", 8, 18, max_hours=6)
    assert exc.value.key == "work.replay.err.long" and exc.value.kw == {"h": 6}
    with pytest.raises(WQ.WindowError) as exc:
        window(WQ.DAY, "2026-11-20", 8, 12, days=7)
    assert exc.value.kw == {"days": 7}
    assert window(WQ.DAY, "2026-11-21", 12, 14, days=7).args["day"] == "2026-11-21"


# ------------------------------------------------------------------ roster CSV

GRID_IDS = {"g1", "g2"}


def test_roster_csv_good_rows_are_normalised_and_phones_masked() -> None:
    text = (
        "\ufeffworker_id,name,type,grid_id,phone\n"
        "W1,张三,专职,g1,138 1234 5678\n"
        "W2,李四,emergency,g2,139****0001\n"
        "\n"
        "W3,王五,安监格,g1,\n"
    )
    rows, errors = work.parse_roster_csv(text, GRID_IDS)
    assert errors == []
    assert rows == [
        {"worker_id": "W1", "name": "张三", "type": "full_time", "grid_id": "g1"}
        | {"phone_masked": "138****5678"},
        {"worker_id": "W2", "name": "李四", "type": "emergency", "grid_id": "g2"}
        | {"phone_masked": "139****0001"},
        {"worker_id": "W3", "name": "王五", "type": "safety_supervision", "grid_id": "g1"}
        | {"phone_masked": None},
    ]


def test_roster_csv_reports_every_bad_row_by_line() -> None:
    text = (
        "worker_id,name,type,grid_id,phone\n"  # line 1
        "W1,张三,full_time,g1,13812345678\n"  # 2 ok
        "W1,李四,full_time,g2,\n"  # 3 duplicate id
        "W 3,,boss,g9,12345\n"  # 4 id, name, type, grid, phone
        "W4,赵六,part_time\n"  # 5 wrong field count
    )
    rows, errors = work.parse_roster_csv(text, GRID_IDS)
    got = [(e.line, e.column) for e in errors]
    assert got == [
        (3, "worker_id"),
        (4, "worker_id"),
        (4, "name"),
        (4, "type"),
        (4, "grid_id"),
        (4, "phone"),
        (5, "-"),
    ]
    assert "duplicate of line 2" in str(errors[0]) and str(errors[0]).startswith("line 3:")
    assert [r["worker_id"] for r in rows] == ["W1"]


def test_roster_csv_header_and_empty_file() -> None:
    assert work.parse_roster_csv("", GRID_IDS)[1][0].message == "empty file"
    _, errors = work.parse_roster_csv("worker_id,name\nW1,x\n", GRID_IDS)
    assert errors[0].line == 1 and errors[0].column == "type,grid_id"
    assert work.parse_roster_csv("worker_id,name,type,grid_id\n", GRID_IDS)[1][0].message == (
        "no rows"
    )


def test_mask_phone() -> None:
    assert work.mask_phone("13812345678") == "138****5678"
    assert work.mask_phone("138-1234-5678") == "138****5678"
    with pytest.raises(ValueError):
        work.mask_phone("010-12345678")
