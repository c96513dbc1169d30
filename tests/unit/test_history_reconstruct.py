"""The time machine's pure functions on hand-built histories: what the live state held at
a moment, derived by hand from the rules (lifecycle, deadlines, day counters, warnings'
stories, positions, patrols, the ``?at=`` value)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from pipelines.dispatch.flows import load_flows
from pipelines.history import reconstruct as rc
from pipelines.history.moment import At, day_start_ms, format_at, parse_at
from pipelines.spine.store import frame_schema, incident_events, track_points, video_alerts

TZ = "Asia/Shanghai"
MIN, H = 60_000, 3_600_000
# 2026-12-03 09:00 Asia/Shanghai = 01:00 UTC
T0 = int(datetime(2026, 12, 3, 1, 0, tzinfo=UTC).timestamp() * 1000)
FLOWS = load_flows()
GRIDS = pl.DataFrame(
    {
        "grid_id": ["g1", "g2", "g3"],
        "street_id": ["s1", "s1", "s2"],
        "district_id": ["d1", "d1", "d1"],
        "city_id": ["c", "c", "c"],
    }
)
CHAIN_OF = {
    "g1": ["g1", "s1", "d1", "c"],
    "g2": ["g2", "s1", "d1", "c"],
    "g3": ["g3", "s2", "d1", "c"],
}
SEQ = iter(range(1, 10_000))


def ev(inc: str, step: str, ts: int, grid: str = "g1", cat: str = "sanitation", **kw: Any) -> dict:
    g = GRIDS.filter(pl.col("grid_id") == grid).row(0, named=True)
    return {
        "event_id": f"{inc}-{step}-{ts}",
        "incident_id": inc,
        "step": step,
        "ts_ms": ts,
        "category": cat,
        "severity": 2,
        "grid_id": grid,
        "street_id": g["street_id"],
        "district_id": g["district_id"],
        "lon": 118.8,
        "lat": 32.0,
        "entry_id": f"{ts}-{next(SEQ)}",
        "level": kw.get("level"),
        "duplicate_of": kw.get("duplicate_of"),
    }


def frame(rows: list[dict], table: Any) -> pl.DataFrame:
    schema = frame_schema(table)
    full = [{c: r.get(c) for c in schema} for r in rows]
    return pl.DataFrame(full, schema=schema, orient="row")


def history() -> pl.DataFrame:
    return frame(
        [
            ev("I1", "reported", T0),
            ev("I1", "accepted", T0 + 5 * MIN),
            ev("I1", "resolved", T0 + 20 * MIN),
            ev("I1", "closed", T0 + 30 * MIN, level="street"),
            ev("I2", "reported", T0 + 10 * MIN, grid="g3", cat="fire"),
            ev("I2", "accepted", T0 + 12 * MIN, grid="g3", cat="fire"),
            # the day before (08:00 local on 12-02): still open, reported yesterday
            ev("I3", "reported", T0 - 25 * H, grid="g2", cat="dispute"),
        ],
        incident_events,
    )


def counters(at: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    inc = rc.incidents_at(history(), at, "c", TZ, FLOWS)
    return inc, rc.incident_effects(inc)


def test_open_and_day_counters_follow_the_events_up_to_the_moment() -> None:
    inc, eff = counters(T0 + 15 * MIN)  # I1 accepted, I2 reported, I3 open since yesterday
    opened = inc.filter(pl.col("open") == "1")
    assert sorted(opened["incident_id"]) == ["I1", "I2", "I3"]
    assert rc.per_area(opened) == {"g1": 1, "g2": 1, "g3": 1, "s1": 2, "s2": 1, "d1": 3, "c": 3}
    assert rc.per_area(opened, "cat")["c|fire"] == 1
    assert rc.per_area(opened, "cat")["s1|dispute"] == 1
    today = eff.filter((pl.col("day") == "20261203") & (pl.col("step") == "reported"))
    assert rc.per_area(today) == {"g1": 1, "s1": 1, "g3": 1, "s2": 1, "d1": 2, "c": 2}
    assert eff.filter(pl.col("step") == "closed").is_empty()

    inc, eff = counters(T0 + 30 * MIN)  # I1 closed at this very ms, at street level
    assert inc.filter(pl.col("incident_id") == "I1")["status"].to_list() == ["closed"]
    closed = eff.filter(pl.col("step") == "closed")
    assert rc.per_area(closed, "level") == {f"{a}|street": 1 for a in CHAIN_OF["g1"]}
    assert rc.per_area(inc.filter(pl.col("open") == "1"))["c"] == 2


def test_overdue_once_the_flow_deadline_has_passed() -> None:
    # the deadline is the report's time plus the flow's total for the category and severity
    fire_dl = T0 + 10 * MIN + int(FLOWS.select("fire", 2).total_hours * H)
    before, _ = counters(fire_dl - 1)
    at, _ = counters(fire_dl)
    i2 = lambda df: df.filter(pl.col("incident_id") == "I2")["overdue"][0]  # noqa: E731
    assert i2(before) == "0" and i2(at) == "1"
    # I1 was closed before its deadline: never overdue
    later, _ = counters(T0 + 400 * H)
    assert later.filter(pl.col("incident_id") == "I1")["overdue"][0] == "0"


def test_nothing_exists_before_it_happened() -> None:
    inc, eff = counters(T0 - 26 * H)
    assert inc.is_empty() and eff.is_empty()
    assert rc.per_area(inc) == {}


def test_tickers_are_newest_first_per_area_and_cut_at_the_moment() -> None:
    alerts = frame(
        [
            {
                "alert_id": "A1",
                "camera_id": "C1",
                "label": "fall",
                "score": 0.9,
                "ts_ms": T0 + 11 * MIN,
                "lon": 118.8,
                "lat": 32.0,
                "grid_id": "g3",
                "street_id": "s2",
                "district_id": "d1",
                "entry_id": f"{T0 + 11 * MIN}-0",
            }
        ],
        video_alerts,
    )
    got = rc.tickers_at(history(), alerts, T0 + 12 * MIN, "c", length=3)
    city = [(x["k"], x["ts"]) for x in got["c"]]
    assert city == [("report", T0 + 12 * MIN), ("video", T0 + 11 * MIN), ("report", T0 + 10 * MIN)]
    assert [x["ts"] for x in got["s1"]] == [T0 + 5 * MIN, T0, T0 - 25 * H]
    assert "g1" not in got  # tickers are kept per street, district and city
    day = rc.alerts_at(alerts, T0 + 12 * MIN, "c", TZ)
    assert day["day"].to_list() == ["20261203"] and rc.per_area(day, "label")["s2|fall"] == 1
    assert rc.alerts_at(alerts, T0 + 10 * MIN, "c", TZ).is_empty()


def test_positions_online_and_patrols_at_the_moment() -> None:
    pts = frame(
        [
            {"worker_id": "W1", "slot": 1, "ts_ms": T0, "lon": 1.0, "lat": 2.0, "grid_id": "g1"},
            {
                "worker_id": "W1",
                "slot": 2,
                "ts_ms": T0 + 20 * MIN,
                "lon": 3.0,
                "lat": 4.0,
                "grid_id": "g3",
            },
            {
                "worker_id": "W2",
                "slot": 1,
                "ts_ms": T0 - 30 * MIN,
                "lon": 5.0,
                "lat": 6.0,
                "grid_id": "g2",
            },
        ],
        track_points,
    )
    pos = rc.positions_at(pts, T0 + 5 * MIN)
    assert pos["W1"][0] == T0 and pos["W1"][1].split(",")[3] == "g1"
    assert pos["W2"][1].split(",")[3] == "g2"
    # online: seen within 10 minutes, counted where last seen (W2 was 35 minutes ago)
    assert rc.online_at(pos, T0 + 5 * MIN, 10, GRIDS) == {"g1": 1, "s1": 1, "d1": 1, "c": 1}
    pos = rc.positions_at(pts, T0 + 25 * MIN)
    assert rc.online_at(pos, T0 + 25 * MIN, 10, GRIDS) == {"g3": 1, "s2": 1, "d1": 1, "c": 1}
    patrols = pl.DataFrame(
        {"day": ["20261203", "20261203", "20261202"], "grid_id": ["g1", "g3", "g2"],
         "first_ms": [T0, T0 + 20 * MIN, T0 - 20 * H]}
    )  # fmt: skip
    assert rc.patrolled_at(patrols, T0 + 5 * MIN, "20261203") == {"g1"}
    assert rc.patrolled_at(patrols, T0 + 25 * MIN, "20261203") == {"g1", "g3"}


def warning_rows() -> tuple[pl.DataFrame, pl.DataFrame]:
    common = {"key": "k", "rule": "sla", "evidence": "[]", "summary": "{}", "aliases": "[]"}
    rows = pl.DataFrame(
        [
            {**common, "warning_id": "W1", "area_id": "g1", "level": "red", "status": "resolved",
             "first_seen_ms": 100, "last_seen_ms": 280, "closed_ms": 300},
            {**common, "warning_id": "W2", "area_id": "s2", "level": "blue", "status": "new",
             "first_seen_ms": 400, "last_seen_ms": 600, "closed_ms": None},
            {**common, "warning_id": "W3", "area_id": "g2", "level": "orange", "status": "new",
             "first_seen_ms": 50, "last_seen_ms": 600, "closed_ms": None},
        ]
    )  # fmt: skip
    acts = pl.DataFrame(
        [
            {"warning_id": "W1", "id": 1, "at_ms": 100, "action": "open", "note": "yellow"},
            {"warning_id": "W1", "id": 2, "at_ms": 200, "action": "level", "note": "red"},
            {"warning_id": "W1", "id": 3, "at_ms": 210, "action": "escalate", "note": "s1"},
            {"warning_id": "W1", "id": 4, "at_ms": 250, "action": "acknowledge", "note": None},
            {"warning_id": "W1", "id": 5, "at_ms": 300, "action": "resolve", "note": "done"},
            {"warning_id": "W2", "id": 6, "at_ms": 500, "action": "open", "note": "blue"},
        ]
    )
    return rows, acts


def test_a_warning_replays_its_story() -> None:
    rows, acts = warning_rows()
    by = lambda at: {w.warning_id: w for w in rc.warnings_at(rows, acts, at)}  # noqa: E731
    w = by(150)
    # W3 has no story (kept before actions were): open from its first time at its level
    assert set(w) == {"W1", "W3"} and w["W3"].level == "orange"
    assert (w["W1"].level, w["W1"].status, w["W1"].escalated_to) == ("yellow", "new", None)
    w = by(220)["W1"]
    assert (w.level, w.status, w.escalated_to, w.last_seen_ms) == ("red", "new", "s1", 220)
    assert by(260)["W1"].status == "acknowledged"
    # resolved at 300; W2's evidence starts at 400 but it opened only at 500
    assert set(by(300)) == {"W3"} and set(by(450)) == {"W3"}
    assert set(by(500)) == {"W2", "W3"}
    ancestors = lambda a: {**CHAIN_OF, "s2": ["s2", "d1", "c"]}[a]  # noqa: E731
    counts, top = rc.warning_tables(rc.warnings_at(rows, acts, 220), ancestors)
    assert counts == {"g1|red": 1, "s1|red": 1, "d1|red": 1, "c|red": 1, "g2|orange": 1,
                      "s1|orange": 1, "d1|orange": 1, "c|orange": 1}  # fmt: skip
    assert top == {"g1": 4, "s1": 4, "d1": 4, "c": 4, "g2": 3}


def test_the_at_value() -> None:
    now = T0 + 3 * H
    # 09:40 local on 2026-12-03 is 01:40 UTC
    assert parse_at("2026-12-03T09:40", TZ, now) == At(T0 + 40 * MIN)
    assert parse_at("2026-12-03 09:40:30", TZ, now) == At(T0 + 40 * MIN + 30_000)
    assert parse_at(None, TZ, now) == At(None) and parse_at(" ", TZ, now) == At(None)
    assert parse_at("yesterday", TZ, now) == At(None, "bad")
    assert parse_at("2026-13-03T09:40", TZ, now) == At(None, "bad")
    assert parse_at(["x"], TZ, now) == At(None, "bad")
    assert parse_at("2026-12-03T12:00", TZ, now) == At(None, "future")  # == now: live
    assert format_at(T0 + 40 * MIN, TZ) == "2026-12-03T09:40"
    assert format_at(T0 + 40 * MIN + 30_000, TZ) == "2026-12-03T09:40:30"
    assert day_start_ms(T0 + 40 * MIN, TZ) == T0 - 9 * H


def test_the_picture_puts_it_together() -> None:
    rows = rc.Rows(
        events=history(),
        alerts=frame([], video_alerts),
        points=frame([], track_points),
        patrols=pl.DataFrame({"day": ["20261203"], "grid_id": ["g3"], "first_ms": [T0]}),
        warnings=warning_rows()[0],
        actions=warning_rows()[1],
    )
    pic = rc.picture(
        rows,
        T0 + 15 * MIN,
        city_id="c",
        grids=GRIDS,
        tz=TZ,
        flows=FLOWS,
        online_minutes=10,
        ticker_length=50,
        ancestors=lambda a: CHAIN_OF.get(a, ["c"]),
        window_ms=26 * H,
    )
    assert pic.day == "20261203"
    assert pic.live["open"]["c"] == 3 and pic.days["reports"]["c"] == 2
    assert pic.days["coverage"] == {"g3": 1, "s2": 1, "d1": 1, "c": 1}
    # hourly: reports of 09:00 local (epoch hour of T0) and I3's the day before
    assert pic.hours[T0 // H] == {"r|g1": 1, "r|s1": 1, "r|g3": 1, "r|s2": 1, "r|d1": 2, "r|c": 2}
    assert pic.hours[(T0 - 25 * H) // H]["r|c"] == 1
    assert orjson.loads(orjson.dumps(pic.meta))["tick_ms"] == str(T0 + 15 * MIN)


def test_the_view_at_control_rules() -> None:
    from dashboard.components.timemachine import FRAME_MS, go_href, next_frame, with_at

    # the moment goes into the URL, other query values stay; None takes it out
    assert with_at("/area/320102", "?metric=open", "2026-12-03T09:40") == (
        "/area/320102?metric=open&at=2026-12-03T09:40"
    )
    assert with_at("/", "?at=2026-12-03T09:40&lang=en", None) == "/?lang=en"
    assert with_at("/work", None, None) == "/work"
    # go: only a click or Enter moves; drawing the bar (no click, no Enter) keeps the
    # address, even a bad ``at`` whose note the bar shows
    assert go_href(0, None, "", "/", "?at=yesterday-ish") is None
    assert go_href(None, None, "2026-12-03T09:40", "/", "?at=2026-12-03T09:40") is None
    assert go_href(1, None, "", "/", "?at=yesterday-ish") == "/"
    assert go_href(0, 1, " 2026-12-03T09:40 ", "/work", None) == "/work?at=2026-12-03T09:40"
    # play: speed × a frame per frame; it stops before reaching now (now is live)
    now = T0 + 3 * H
    assert next_frame(T0, 60, now) == (T0 + 60 * FRAME_MS, True)
    assert next_frame(now - 30 * FRAME_MS, 60, now) == (now - 30 * FRAME_MS, False)
