"""Scorecard snapshots: a snapshot written before the flows (its rules list per-category
"deadlines", its metrics no per-stage rates) still reads; a new one records the flows."""

from __future__ import annotations

import json
import tomllib

import pytest
from sqlalchemy import Engine, select

from pipelines import assessment as S
from pipelines.assessment.metrics import rules_of
from pipelines.assessment.scorecards import read_snapshot, write_snapshot
from pipelines.dispatch.flows import DEFAULT_FILE
from pipelines.settings import Settings
from pipelines.spine import store

pytestmark = pytest.mark.integration

OLD_METRICS = {"reports": 12, "resolve_ontime": 0.75, "n_resolve_ontime": 8, "overdue": 2}
OLD_RULES = {"assessment": {"accept_hours": 1.0}, "deadlines": {"fire": 2.0, "other": 72.0}}


def test_a_snapshot_from_before_the_flows_still_reads(engine: Engine) -> None:
    period = S.parse_period("2026-09")
    row = {
        "period_key": period.key, "level": "street", "row_id": "s1", "name": "某街道",
        "parent_id": "d1", "parent": "某区", "metrics": json.dumps(OLD_METRICS),
        "score": 81.5, "rules": json.dumps(OLD_RULES), "computed_ms": 1,
    }  # fmt: skip
    with engine.begin() as c:
        store.insert_ignore(c, store.scorecard_snapshots, [row])
    snap = read_snapshot(engine, period, "street")
    assert snap is not None
    (got,) = snap.to_dicts()
    assert got["reports"] == 12 and got["resolve_ontime"] == 0.75 and got["score"] == 81.5
    assert got["stage_accept"] is None and got["n_stage_accept"] is None  # not measured then
    # a snapshot written now records the flow file and each flow's stage hours
    write_snapshot(engine, S.parse_period("2026-08"), "street", snap, rules_of(Settings()), 2)
    with engine.connect() as c:
        rules = json.loads(
            c.execute(
                select(store.scorecard_snapshots.c.rules).where(
                    store.scorecard_snapshots.c.period_key == "2026-08"
                )
            ).scalar_one()
        )
    shipped = tomllib.loads(DEFAULT_FILE.read_text(encoding="utf-8"))["flow"]
    assert "deadlines" not in rules and rules["flows"]["source"] == str(DEFAULT_FILE)
    assert rules["flows"]["stage_hours"] == {
        f["id"]: {st: v["hours"] for st, v in f["stages"].items()} for f in shipped
    }
