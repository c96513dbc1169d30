"""Assessment metrics on hand-built tables: every metric, the score, ranks and periods."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from pipelines import assessment as S
from pipelines.dispatch.flows import parse_flows
from tests import flowfile

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)

H = S.HOUR_MS
T0 = 1_790_000_000_000  # some instant; every time below is T0 + hours
# Stage hours (accept, dispatch, handle, verify, close): accept 1 h and dispatch 2 h in
# every flow; closure fire 4 h, dispute 72 h, other (flowfile's default) 20 h.
FLOWS = parse_flows(
    flowfile.doc(
        flowfile.flow("fire", "fire", (1, 2, 0.5, 0.25, 0.25)),
        flowfile.flow("dispute", "dispute", (1, 2, 60, 5, 4)),
    )
)


def incidents(rows: list[dict]) -> pl.LazyFrame:
    base = {c: None for c in S.INCIDENT_SCHEMA} | {"severity": 1}
    full = [{**base, **r} for r in rows]
    return pl.LazyFrame(full, schema=S.INCIDENT_SCHEMA)


def hand_built() -> pl.LazyFrame:
    """Six incidents in two streets; as of T0 + 100 h; accept 1 h, dispatch 2 h."""
    return incidents(
        [
            # a: worker-found fire, handled on the spot, closed at grid level in 1.5 h
            dict(incident_id="a", category="fire", source="worker", street_id="s1",
                 worker_id="w1", reported_ms=T0, first_action_ms=T0 + H // 2,
                 first_resolved_ms=T0 + H, n_verified=1, closed_ms=T0 + 3 * H // 2,
                 closed_level="grid"),
            # b: dispute, accepted after 2 h (late), dispatched 1 h later (on time), returned
            #    after resolution (rework), closed at street level after 80 h (overdue)
            dict(incident_id="b", category="dispute", source="hotline", street_id="s1",
                 worker_id="w1", reported_ms=T0, first_action_ms=T0 + 2 * H,
                 accepted_ms=T0 + 2 * H, dispatched_ms=T0 + 3 * H,
                 first_resolved_ms=T0 + 10 * H, last_returned_ms=T0 + 20 * H, n_returned=1,
                 n_verified=1, closed_ms=T0 + 80 * H, closed_level="street"),
            # c: fire still open, never acted on: accept and resolve deadlines passed
            dict(incident_id="c", category="fire", source="camera", street_id="s1",
                 worker_id="w2", reported_ms=T0 + 10 * H),
            # d: dispute reported 99.5 h in, nothing yet: no deadline passed (not counted)
            dict(incident_id="d", category="dispute", source="resident", street_id="s1",
                 worker_id="w2", reported_ms=T0 + 99 * H + H // 2),
            # e: other, accepted in 30 min, dispatched 3 h after acceptance (late), closed at
            #    district level in 10 h, no verification
            dict(incident_id="e", category="other", source="hotline", street_id="s2",
                 worker_id="w3", reported_ms=T0, first_action_ms=T0 + H // 2,
                 accepted_ms=T0 + H // 2, dispatched_ms=T0 + 7 * H // 2,
                 first_resolved_ms=T0 + 9 * H, closed_ms=T0 + 10 * H,
                 closed_level="district"),
            # f: unknown category → the "other" deadline; returned before any resolution
            dict(incident_id="f", category="weird", source="worker", street_id="s2",
                 worker_id="w3", reported_ms=T0, first_action_ms=T0 + H,
                 last_returned_ms=T0 + 2 * H, n_returned=1),
        ]
    )  # fmt: skip


def metrics_of(key: str = "street_id") -> dict[str, dict]:
    flags = S.incident_flags(hand_built(), T0 + 100 * H, FLOWS)
    out = S.incident_metrics(flags, key).collect()
    return {r[key]: r for r in out.iter_rows(named=True)}


def test_every_incident_metric_on_a_hand_built_table() -> None:
    s1, s2 = metrics_of()["s1"], metrics_of()["s2"]
    assert s1["reports"] == 4 and s2["reports"] == 2
    assert s1["self_found"] == pytest.approx(1 / 4)  # a
    # accept: a on time; b late; c past deadline unacted; d not yet due → 1/3
    assert s1["accept_ontime"] == pytest.approx(1 / 3)
    assert s2["accept_ontime"] == pytest.approx(1.0)  # e 0.5 h, f exactly 1 h
    # dispatch: b 1 h after acceptance → on time; e 3 h after → late
    assert s1["dispatch_ontime"] == pytest.approx(1.0)
    assert s2["dispatch_ontime"] == pytest.approx(0.0)
    # resolve: a 1.5 h ≤ 4 h ok; b 80 h > 72 h late; c fire open 90 h > 4 h late; d not due
    assert s1["resolve_ontime"] == pytest.approx(1 / 3)
    assert s1["overdue"] == 2
    # s2: e 10 h ≤ 20 ok; f open 100 h > 20 (other) → overdue
    assert s2["resolve_ontime"] == pytest.approx(1 / 2) and s2["overdue"] == 1
    assert s1["mean_hours"] == pytest.approx((1.5 + 80) / 2)
    # p90 of [1.5, 80] with linear interpolation: 1.5 + 0.9 × 78.5
    assert s1["p90_hours"] == pytest.approx(1.5 + 0.9 * 78.5)
    assert s1["returned"] == pytest.approx(1 / 4) and s2["returned"] == pytest.approx(1 / 2)
    # verification: a verified, passed; b returned after resolution → failed first check
    assert s1["verify_pass"] == pytest.approx(1 / 2)
    # s2: e never verified, f returned before resolution: nobody checked → no value
    assert s2["verify_pass"] is None
    assert s1["grid_level"] == pytest.approx(1 / 2) and s1["local_level"] == pytest.approx(1.0)
    assert s2["grid_level"] == pytest.approx(0.0) and s2["local_level"] == pytest.approx(0.0)


def test_worker_attribution() -> None:
    by_worker = metrics_of("worker_id")
    assert {w: r["reports"] for w, r in by_worker.items()} == {"w1": 2, "w2": 2, "w3": 2}
    assert by_worker["w1"]["overdue"] == 1 and by_worker["w2"]["overdue"] == 1


def test_patrol_coverage_online_rate_and_warning_ack() -> None:
    grids = pl.LazyFrame({"grid_id": ["g1", "g2", "g3"], "k": ["a", "a", "b"]})
    visits = pl.LazyFrame(
        {"day": ["d1", "d1", "d2", "d1", "d1"], "grid_id": ["g1", "g1", "g1", "g2", "g9"]}
    )
    cov = S.patrol_coverage(visits, grids, "k", n_days=2).collect().sort("k")
    assert cov["patrol_coverage"].to_list() == [pytest.approx(3 / 4), pytest.approx(0.0)]
    roster = pl.LazyFrame({"worker_id": ["w1", "w2", "w3"], "k": ["a", "a", "b"]})
    slots = pl.LazyFrame({"worker_id": ["w1", "w3", "wX"], "online_slots": [10, 5, 99]})
    on = S.online_rate(slots, roster, "k", shift_slots=10).collect().sort("k")
    assert on["online_rate"].to_list() == [pytest.approx(10 / 20), pytest.approx(5 / 10)]
    m = 60_000
    warns = pl.LazyFrame(
        {
            "k": ["a", "a", "a", "a", "a", "b"],
            "first_seen_ms": [0, 0, 0, 0, 90 * m, 0],
            "acked_ms": [5 * m, 20 * m, None, None, None, None],
            "closed_ms": [None, None, None, 3 * m, None, None],
        },
        schema_overrides={"acked_ms": pl.Int64, "closed_ms": pl.Int64},
    )
    # deadline 10 min, as of 95 min: on time · late · unacked past due · cleared before
    # its deadline (not counted) · not yet due (not counted); b: unacked past due
    ack = S.warning_ack(warns, "k", 95 * m, 600).collect().sort("k")
    assert ack["warning_ack"].to_list() == [pytest.approx(1 / 3), pytest.approx(0.0)]


def test_score_is_the_weighted_mean_of_goodness_over_metrics_with_data() -> None:
    frame = pl.LazyFrame(
        {
            "reports": [10, 10],
            "overdue": [2, 0],
            "resolve_ontime": [0.8, None],
            "mean_hours": [12.0, 60.0],
            "returned": [0.1, 0.0],
        }
    )
    w = {"reports": 0.0, "overdue": 10.0, "resolve_ontime": 20.0, "mean_hours": 10.0}
    w["returned"] = 5.0
    out = S.with_score(frame, w, ref_hours=48.0).collect()["score"].to_list()
    first = 100 * (10 * 0.8 + 20 * 0.8 + 10 * (1 - 12 / 48) + 5 * 0.9) / 45
    second = 100 * (10 * 1.0 + 10 * 0.0 + 5 * 1.0) / 25  # no resolve value: weight left out
    assert out == [pytest.approx(first), pytest.approx(second)]


def test_rank_ties_share_the_best_rank_and_missing_scores_go_last() -> None:
    f = pl.DataFrame(
        {
            "row_id": ["a", "b", "c", "d"],
            "name": ["A", "B", "C", "D"],
            "score": [80.04, None, 80.01, 90.0],
        }
    )
    out = S.rank_rows(f)
    assert out["row_id"].to_list() == ["d", "a", "c", "b"]
    assert out["rank"].to_list() == [1, 2, 2, None]


@pytest.mark.parametrize(
    ("text", "kind", "first", "last"),
    [
        ("2026-10", "month", date(2026, 10, 1), date(2026, 10, 31)),
        ("2026-02", "month", date(2026, 2, 1), date(2026, 2, 28)),
        ("2026-W44", "week", date(2026, 10, 26), date(2026, 11, 1)),
        ("2026-w1", "week", date(2025, 12, 29), date(2026, 1, 4)),
        ("2026-10-05", "day", date(2026, 10, 5), date(2026, 10, 5)),
        ("2026-10-01..2026-10-15", "range", date(2026, 10, 1), date(2026, 10, 15)),
    ],
)
def test_periods_parse(text: str, kind: str, first: date, last: date) -> None:
    p = S.parse_period(text)
    assert (p.kind, p.first, p.last) == (kind, first, last)
    assert p.end_ms - p.start_ms == p.days * S.DAY_MS  # Asia/Shanghai has no DST
    assert S.parse_period(p.key) == p


def test_period_arithmetic_and_bad_input() -> None:
    assert S.parse_period("2026-01").previous().key == "2025-12"
    assert S.parse_period("2026-W01").previous().key == "2025-W52"
    assert S.parse_period("2026-03-01").previous().key == "2026-02-28"
    r = S.parse_period("2026-10-01..2026-10-15").previous()
    assert (r.first, r.last) == (date(2026, 9, 16), date(2026, 9, 30))
    assert [p.key for p in S.parse_period("2026-02").recent(3)] == ["2025-12", "2026-01", "2026-02"]
    # local midnight in Shanghai is 16:00 UTC the day before
    assert S.parse_period("2026-10").start_ms == 1_790_784_000_000
    for bad in ("2026-13", "2026-W60", "2026-10-32", "2026-10-05..2026-10-01", "x", ""):
        with pytest.raises(S.PeriodError):
            S.parse_period(bad)


def test_elapsed_days_and_shift_slots() -> None:
    p = S.parse_period("2026-10-01..2026-10-03")
    assert S.elapsed_days(p, p.start_ms) == 0
    assert S.elapsed_days(p, p.start_ms + 1) == 1
    assert S.elapsed_days(p, p.end_ms + S.DAY_MS) == 3
    # 08:00–18:00 in 60-min slots: 10 per day; as of 09:30 on day 2 → 10 + 2
    assert S.shift_slots(p, p.end_ms, 8, 18, 60) == 30
    assert S.shift_slots(p, p.start_ms + S.DAY_MS + 9 * H + H // 2, 8, 18, 60) == 12
    assert S.shift_slots(p, p.end_ms, 8, 18, 30) == 60
    # Positions began to arrive on day 2 at 12:30: days count from day 2, slots from the
    # 12:00 slot (the one it falls in) — before that nothing could be on the record.
    since = p.start_ms + S.DAY_MS + 12 * H + H // 2
    assert S.elapsed_days(p, p.end_ms, since) == 2
    assert S.shift_slots(p, p.end_ms, 8, 18, 60, since) == 6 + 10
    assert S.elapsed_days(p, p.end_ms, p.start_ms - S.DAY_MS) == 3  # earlier: the period
    assert S.shift_slots(p, p.end_ms, 8, 18, 60, p.start_ms - S.DAY_MS) == 30
    assert S.elapsed_days(p, since, p.end_ms + 1) == 0  # positions only after as_of


def test_display_values_and_sparkline() -> None:
    assert S.display_value("accept_ontime", 0.33333) == 33.3
    assert S.display_value("mean_hours", 40.75) == 40.8
    assert S.display_value("overdue", 3) == 3
    assert S.display_value("verify_pass", None) is None
    assert S.sparkline([0.0, 50.0, 100.0, None]) == "▁▅█·"


def test_every_metric_is_documented_and_weighted() -> None:
    from pipelines.settings import Settings

    w = S.weights(Settings())
    assert sum(w.values()) == pytest.approx(100.0)
    for m in S.METRICS.values():
        assert m.definition_zh and m.definition_en and m.zh and m.en
        assert m.unit in ("count", "pct", "hours")
        assert (m.id in S.INCIDENT_AGGS) == (m.source == "incidents")
        assert m.source != "incidents" or m.flag is not None
