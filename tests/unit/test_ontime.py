"""One definition of "on time": every deadline comes from the standard flow of the
incident's category and severity.

The flow file is written here (``FLOWS``); every expectation is computed in the test from
its hours (a fire of severity 3 takes ``fire_serious``'s), never by the code under test."""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl
import pytest

from dashboard.pages.warnings import wording as WW
from pipelines import assessment as S
from pipelines import warnings as W
from pipelines.assessment.metrics import rules_of
from pipelines.dispatch import ontime
from pipelines.dispatch.flows import parse_flows
from pipelines.spine import aggregate as agg
from pipelines.spine.events import CATEGORIES, SEVERITIES, STEPS
from tests import flowfile
from tests.unit.test_warning_rules import AREAS

pytestmark = pytest.mark.clock

H = 3_600_000
T0 = 1_790_000_000_000

# stage hours: accept, dispatch, handle, verify, close
FIRE = (0.5, 0.5, 2.0, 1.0, 1.0)  # 5 h
FIRE_SERIOUS = (0.1, 0.2, 0.7, 0.5, 0.5)  # 2 h, from severity 3
DISPUTE = (1.0, 2.0, 40.0, 8.0, 5.0)  # 56 h
DOC = flowfile.doc(
    flowfile.flow("fire", "fire", FIRE, name_zh="消防", name_en="Fire"),
    flowfile.flow("fire_serious", "fire", FIRE_SERIOUS, 3, name_zh="火情", name_en="Fires"),
    flowfile.flow("dispute", "dispute", DISPUTE, name_zh="矛盾纠纷", name_en="Disputes"),
)
FLOWS = parse_flows(DOC)
STAGE = dict(zip(flowfile.STAGES, range(5), strict=True))


def hours(stages: tuple[float, ...], stage: str) -> float:
    return stages[STAGE[stage]]


# ---------------------------------------------------------------- tables and expressions


@pytest.mark.parametrize(
    ("category", "severity", "total_h"),
    [
        ("fire", 1, sum(FIRE)),
        ("fire", 2, sum(FIRE)),
        ("fire", 3, sum(FIRE_SERIOUS)),
        ("fire", 4, sum(FIRE_SERIOUS)),
        ("dispute", 4, sum(DISPUTE)),
        ("other", 2, sum(flowfile.DEFAULT_HOURS)),
        ("no_such_category", 1, sum(flowfile.DEFAULT_HOURS)),  # other's
    ],
)
def test_closure_deadline_by_category_and_severity(
    category: str, severity: int, total_h: float
) -> None:
    df = pl.DataFrame({"category": [category], "severity": [severity]})
    got = df.select(ontime.closure_ms(FLOWS))[0, 0]
    assert got == round(total_h * H)


def test_live_overdue_mark_is_the_report_plus_the_flow() -> None:
    """The live state's deadline (field 11) is the report's time plus the flow's hours."""
    rows = [
        ("f1", T0, "1-0", "reported", "fire", 3),
        ("f1", T0 + H // 10, "2-0", "accepted", "fire", 3),
        ("f2", T0 + 5, "3-0", "reported", "fire", 1),
        ("d1", T0 + 7, "4-0", "reported", "dispute", 4),
    ]
    events = pl.DataFrame(
        [
            {
                "incident_id": i, "ts_ms": ts, "entry_id": e, "step": st, "category": c,
                "severity": sv, "grid_id": "g1", "street_id": "s1", "district_id": "d1",
                "lon": 118.8, "lat": 32.0, "level": None,
            }
            for i, ts, e, st, c, sv in rows
        ],
        schema_overrides={"level": pl.String},
    )  # fmt: skip
    states = agg.incident_states(events, "c", "Asia/Shanghai", FLOWS)
    assert int(states["f1"][11]) == T0 + round(sum(FIRE_SERIOUS) * H)
    assert int(states["f2"][11]) == T0 + 5 + round(sum(FIRE) * H)
    assert int(states["d1"][11]) == T0 + 7 + round(sum(DISPUTE) * H)


# ---------------------------------------------------------------- the sla rule

NOW = T0 + 1000 * H
CFG = dataclasses.replace(W.RuleConfig(), flows=FLOWS, sla_min_count=1)


def open_cases(n: int, status: str, since_h: float, cat: str = "dispute", sev: int = 1,
               **extra: int | None) -> W.RuleInputs:  # fmt: skip
    """n open cases of one street that entered ``status`` ``since_h`` hours before NOW."""
    df = pl.DataFrame(
        [
            {
                "incident_id": f"i{k}", "status": status, "category": cat, "severity": sev,
                "grid_id": "g1", "street_id": "s1", "reported_ms": NOW - 900 * H,
                "last_ms": NOW - round(since_h * H), **extra,
            }
            for k in range(n)
        ],
        schema={**W.INCIDENTS_SCHEMA, **{k: pl.Int64 for k in extra}},
    )  # fmt: skip
    return W.RuleInputs(areas=AREAS, incidents=df)


def sla(data: W.RuleInputs) -> dict[str, str]:
    return {f.key: f.level for f in W.RULES["sla"](data, CFG, NOW)}


def test_sla_fires_past_the_stage_deadline_and_not_before() -> None:
    accept = hours(DISPUTE, "accept")  # a reported dispute has 1 h to be accepted
    assert sla(open_cases(3, "reported", accept * CFG.sla_warn_share * 0.9)) == {}
    assert sla(open_cases(3, "reported", accept * 1.01)) == {"sla:s1": "red"}  # all breached
    handle = hours(DISPUTE, "handle")  # dispatched / handling: 40 h
    assert sla(open_cases(3, "handling", handle * 0.5)) == {}
    assert sla(open_cases(3, "dispatched", handle + 0.1)) == {"sla:s1": "red"}


def test_sla_takes_the_serious_flow_by_severity() -> None:
    """A severity-3 fire reported 15 minutes ago is past fire_serious's 6-minute accept
    deadline; a severity-1 one (fire: 30 minutes) is not yet due, nor about to be."""
    assert sla(open_cases(2, "reported", 0.25, cat="fire", sev=3)) == {"sla:s1": "red"}
    assert sla(open_cases(2, "reported", 0.25 * CFG.sla_warn_share, cat="fire", sev=1)) == {}


def test_sla_counts_from_entering_the_stage_and_honours_the_dispatch_deadline() -> None:
    """``stage_ms`` (when it entered its status) beats ``last_ms``; a dispatch's ``due_ms``
    replaces the handle stage's hours."""
    handle_ms = round(hours(DISPUTE, "handle") * H)
    late = open_cases(3, "handling", 1.0, stage_ms=NOW - handle_ms - H)
    assert sla(late) == {"sla:s1": "red"}
    early_due = open_cases(3, "handling", 1.0, due_ms=NOW - 1)
    assert sla(early_due) == {"sla:s1": "red"}
    later_due = open_cases(3, "handling", handle_ms / H + 1, due_ms=NOW + 100 * H)
    assert sla(later_due) == {}


def test_sla_summary_quotes_the_flow() -> None:
    (f,) = W.RULES["sla"](open_cases(3, "reported", 2.0), CFG, NOW)
    d = f.summary["deadline"]
    assert d == {"stage": "accept", "hours": 1.0, "flow_zh": "矛盾纠纷", "flow_en": "Disputes"}
    assert WW.deadline_text(d, "zh-CN") == "受理时限 1 小时（标准流程：矛盾纠纷）"
    assert WW.deadline_text(d, "en") == "Accept within 1 hour (Disputes flow)"


# ---------------------------------------------------------------- scorecards


def incidents(rows: list[dict], extra: dict[str, Any] | None = None) -> pl.LazyFrame:
    schema = {**S.INCIDENT_SCHEMA, **(extra or {})}
    base = dict.fromkeys(schema) | {"severity": 1, "street_id": "s1", "source": "hotline"}
    return pl.LazyFrame([base | r for r in rows], schema=schema)


def stage_rates(inc: pl.LazyFrame, as_of: int) -> dict:
    flags = S.incident_flags(inc, as_of, FLOWS)
    (row,) = S.incident_metrics(flags, "street_id").collect().iter_rows(named=True)
    return row


def test_on_time_per_stage_on_hand_made_incidents() -> None:
    """Dispute stages (h): accept 1, dispatch 2, handle 40, verify 8, close 5; each is
    due when the previous one was left plus its hours."""
    a = dict(
        incident_id="a",
        category="dispute",
        reported_ms=T0,
        left_accept_ms=T0 + H // 2,  # accepted in 0.5 h: on time
        left_dispatch_ms=T0 + 3 * H,  # dispatched 2.5 h after: late
        left_handle_ms=T0 + 30 * H,  # resolved 27 h after: on time
        left_verify_ms=T0 + 40 * H,  # verified 10 h after: late
        closed_ms=T0 + 41 * H,
        closed_level="grid",
    )  # closed 1 h after: on time
    # b: accepted late (2 h), dispatched 1 h later (on time), still handling, past 40 h
    b = dict(
        incident_id="b",
        category="dispute",
        reported_ms=T0,
        left_accept_ms=T0 + 2 * H,
        left_dispatch_ms=T0 + 3 * H,
    )
    # c: handled on the spot (went from reported straight to handling): it never stopped
    #    in the dispatch stage, so it counts for accept (on time) but not for dispatch
    c = dict(
        incident_id="c",
        category="dispute",
        reported_ms=T0,
        left_accept_ms=T0 + H // 4,
        left_dispatch_ms=T0 + H // 4,
    )
    # d: a severity-3 fire, accepted after 9 minutes: fire_serious allows 6 → late
    d = dict(
        incident_id="d",
        category="fire",
        severity=3,
        reported_ms=T0,
        left_accept_ms=T0 + 9 * H // 60,
    )
    # e: reported just before as-of: not yet due for anything
    as_of = T0 + 100 * H
    e = dict(incident_id="e", category="dispute", reported_ms=as_of - H // 2)
    row = stage_rates(incidents([a, b, c, d, e]), as_of)
    assert row["stage_accept"] == pytest.approx(2 / 4)  # a, c on time; b, d late
    assert row["stage_dispatch"] == pytest.approx(1 / 3)  # b; a late; d past due; not c
    assert row["n_stage_dispatch"] == 3
    assert row["stage_handle"] == pytest.approx(1 / 3)  # a on time; b, c past 40 h
    assert row["stage_verify"] == pytest.approx(0.0)  # a late
    assert row["stage_close"] == pytest.approx(1.0)  # a


def test_scorecard_deadlines_are_the_flows() -> None:
    """accept due at report + accept h; dispatch due at acceptance + dispatch h; closure
    at report + the flow's total; a severity-3 fire takes fire_serious's hours."""
    serious = sum(FIRE_SERIOUS)
    rows = [
        # closed 1.5 h after report: within fire_serious's 2 h
        dict(incident_id="f1", category="fire", severity=3, reported_ms=T0,
             first_action_ms=T0 + H // 20, accepted_ms=T0 + H // 20,
             dispatched_ms=T0 + H // 20 + 11 * H // 60,  # 11 min after acceptance: ok
             closed_ms=T0 + 3 * H // 2, closed_level="grid"),
        # closed 2.5 h after report: over 2 h (serious) although within fire's 5 h
        dict(incident_id="f2", category="fire", severity=4, reported_ms=T0,
             first_action_ms=T0 + H // 5,  # 12 min: over the 6-minute accept deadline
             accepted_ms=T0 + H // 5, dispatched_ms=T0 + H // 5 + 13 * H // 60,  # 13 min: late
             closed_ms=T0 + 5 * H // 2, closed_level="street"),
    ]  # fmt: skip
    row = stage_rates(incidents(rows), T0 + 100 * H)
    assert serious == pytest.approx(2.0)
    assert row["resolve_ontime"] == pytest.approx(1 / 2) and row["overdue"] == 1
    assert row["accept_ontime"] == pytest.approx(1 / 2)
    assert row["dispatch_ontime"] == pytest.approx(1 / 2)


def test_merged_duplicates_count_in_no_on_time_rate_nor_level() -> None:
    """An incident closed as a duplicate of another (``duplicate_of``) is left out of the
    on-time rates and of 小事不出网格; the grid share comes from the closure's level."""
    extra = {"duplicate_of": pl.String}
    rows = [
        dict(incident_id="x", category="dispute", reported_ms=T0, first_action_ms=T0 + H // 2,
             left_accept_ms=T0 + H // 2, closed_ms=T0 + 10 * H, closed_level="street"),
        dict(incident_id="y", category="dispute", reported_ms=T0, first_action_ms=T0 + 5 * H,
             left_accept_ms=T0 + 5 * H, closed_ms=T0 + 99 * H, closed_level="grid",
             duplicate_of="x"),
        dict(incident_id="z", category="dispute", reported_ms=T0, first_action_ms=T0 + H // 3,
             left_accept_ms=T0 + H // 3, closed_ms=T0 + 9 * H, closed_level="grid"),
    ]  # fmt: skip
    row = stage_rates(incidents(rows, extra), T0 + 100 * H)
    assert row["reports"] == 3
    assert row["accept_ontime"] == pytest.approx(1.0) and row["n_accept_ontime"] == 2
    assert row["stage_accept"] == pytest.approx(1.0) and row["n_stage_accept"] == 2
    assert row["resolve_ontime"] == pytest.approx(1.0) and row["overdue"] == 0
    assert row["grid_level"] == pytest.approx(1 / 2)  # z of x, z (y left out)
    assert row["mean_hours"] == pytest.approx((10 + 9) / 2)


def test_snapshot_rules_record_the_flows(tmp_path) -> None:
    s = flowfile.settings_for(flowfile.write(tmp_path / "f.toml", DOC))
    rules = rules_of(s)
    assert "deadlines" not in rules
    assert rules["flows"]["source"] == str(tmp_path / "f.toml")
    stage_hours = rules["flows"]["stage_hours"]
    assert stage_hours["fire_serious"] == dict(zip(flowfile.STAGES, FIRE_SERIOUS, strict=True))
    assert stage_hours["dispute"]["handle"] == hours(DISPUTE, "handle")


def test_vectorised_deadlines_agree_with_the_flow_methods() -> None:
    """Every status × category × severity, with and without a dispatch deadline: the
    frame's stage deadline is ``Flow.stage_due_ms`` and its closure ``closure_due_ms``."""
    rows = [
        (st, c, sv, T0 + k, due)
        for k, (st, c, sv, due) in enumerate(
            (st, c, sv, due)
            for st in STEPS
            for c in CATEGORIES
            for sv in SEVERITIES
            for due in (None, T0 + 77 * H)
        )
    ]
    df = pl.DataFrame(
        rows, schema=["status", "category", "severity", "stage_ms", "due_ms"], orient="row"
    ).with_columns(last_ms=pl.lit(0, pl.Int64), reported_ms=pl.col("stage_ms") - H)
    got = ontime.with_stage_due(df, FLOWS).with_columns(closure=ontime.closure_ms(FLOWS))
    for r in got.iter_rows(named=True):
        flow = FLOWS.select(r["category"], r["severity"])
        assert r["flow_id"] == flow.id
        assert r["due_ms_stage"] == flow.stage_due_ms(r["status"], r["stage_ms"], r["due_ms"])
        assert r["reported_ms"] + r["closure"] == flow.closure_due_ms(r["reported_ms"])
