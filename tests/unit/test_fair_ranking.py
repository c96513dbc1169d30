"""The fair-ranking rule on hand-built areas: a rate counts from ``min_sample`` incidents,
a score needs metrics with data worth ``min_score_weight`` of the weight, areas without a
score come last, unranked; thin and empty cells say why and are never banded.

Every expected number below is worked out by hand from the incidents and the rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl
import pytest

from dashboard.pages.assessment import queries as A
from pipelines import assessment as S
from pipelines.assessment import exports as E
from pipelines.assessment.scorecards import Scorecard
from pipelines.dispatch.flows import parse_flows
from pipelines.settings import load_settings
from tests import flowfile

SETTINGS = load_settings(environ={})

pytestmark = pytest.mark.clock

H = S.HOUR_MS
T0 = 1_790_000_000_000
AS_OF = T0 + 100 * H  # the "other" flow takes 20 h: an open incident from T0 is overdue
FLOWS = parse_flows(flowfile.doc())  # every flow: 1 + 2 + 10 + 4 + 3 = 20 h
W = {"resolve_ontime": 10.0, "grid_level": 5.0, "patrol_coverage": 5.0}  # of 20
MIN_SAMPLE, MIN_WEIGHT = 5, 0.5

# kinds of incident: closed on time at grid level · closed on time at street level ·
# open past its deadline · reported 10 h ago (counts in no rate yet)
KINDS: dict[str, dict[str, Any]] = {
    "grid": dict(reported_ms=T0, first_action_ms=T0 + H // 2, closed_ms=T0 + 10 * H,
                 closed_level="grid"),
    "street": dict(reported_ms=T0, first_action_ms=T0 + H // 2, closed_ms=T0 + 10 * H,
                   closed_level="street"),
    "late": dict(reported_ms=T0),
    "fresh": dict(reported_ms=T0 + 90 * H),
}  # fmt: skip

# area → (its incidents, its patrol coverage)
AREAS: dict[str, tuple[dict[str, int], float | None]] = {
    "a-zero": ({}, 1.0),  # no reports at all, fully patrolled
    "b-one": ({"grid": 1}, 1.0),  # one perfect incident
    "c-four": ({"grid": 4}, 1.0),  # just below the threshold
    "d-five": ({"grid": 3, "street": 2}, 0.5),  # just at it
    "e-late": ({"late": 5}, None),  # only the resolve rate has data: exactly half the weight
    "f-busy": ({"grid": 6, "late": 4, "fresh": 3}, 0.8),
    "g-mixed": ({"late": 5, "grid": 4}, 1.0),  # resolve counts (9), grid level is thin (4)
}

# By the rule, by hand:
#   d-five: resolve 5/5, grid 3/5, coverage .5 → 100 × (10·1 + 5·.6 + 5·.5) / 20 = 77.5
#   f-busy: resolve 6/10, grid 6/6, coverage .8 → 100 × (10·.6 + 5·1 + 5·.8) / 20 = 75
#   g-mixed: resolve 4/9, grid thin, coverage 1 → 100 × (10·4/9 + 5·1) / 15
#   e-late: resolve 0/5, grid none (nothing closed), no coverage → 10/20 = half: 0
#   a-zero, b-one, c-four: only coverage has data (5/20 < half) → unranked, by name
EXPECTED_SCORE = {
    "d-five": 77.5,
    "f-busy": 75.0,
    "g-mixed": 100 * (10 * 4 / 9 + 5) / 15,
    "e-late": 0.0,
    "a-zero": None,
    "b-one": None,
    "c-four": None,
}
EXPECTED_ORDER = ["d-five", "f-busy", "g-mixed", "e-late", "a-zero", "b-one", "c-four"]
EXPECTED_RANK = [1, 2, 3, 4, None, None, None]
# sampled metric cells: thin (1..4 in the denominator) or none (0)
EXPECTED_GAPS = {
    ("a-zero", "resolve_ontime"): "none",
    ("a-zero", "grid_level"): "none",
    ("b-one", "resolve_ontime"): "thin",
    ("b-one", "grid_level"): "thin",
    ("c-four", "resolve_ontime"): "thin",
    ("c-four", "grid_level"): "thin",
    ("e-late", "grid_level"): "none",
    ("g-mixed", "grid_level"): "thin",
}


def incidents() -> pl.LazyFrame:
    rows = []
    for area, (kinds, _cov) in AREAS.items():
        for kind, n in kinds.items():
            for i in range(n):
                rows.append(
                    {c: None for c in S.INCIDENT_SCHEMA}
                    | {"incident_id": f"{area}-{kind}-{i}", "category": "other", "severity": 1}
                    | {"source": "worker", "street_id": area, **KINDS[kind]}
                )
    return pl.LazyFrame(rows, schema=S.INCIDENT_SCHEMA)


def scored() -> pl.DataFrame:
    flags = S.incident_flags(incidents(), AS_OF, FLOWS)
    inc = S.incident_metrics(flags, "street_id").rename({"street_id": "row_id"})
    base = pl.LazyFrame(
        {
            "row_id": list(AREAS),
            "name": list(AREAS),
            "patrol_coverage": [cov for _k, cov in AREAS.values()],
        },
        schema={"row_id": pl.String, "name": pl.String, "patrol_coverage": pl.Float64},
    )
    frame = base.join(inc, on="row_id", how="left").with_columns(pl.col("reports").fill_null(0))
    frame = S.thin_out(frame, MIN_SAMPLE)
    return S.rank_rows(S.with_score(frame, W, 48.0, MIN_WEIGHT).collect())


def shown_rows() -> list[dict[str, Any]]:
    rows = scored()
    for m in S.METRIC_IDS:  # the metrics this test leaves out have no data
        if m not in rows.columns:
            rows = rows.with_columns(pl.lit(None, pl.Float64).alias(m))
    rows = rows.with_columns(
        parent=pl.lit(""), change=pl.lit(None, pl.Float64), trend=pl.lit(None, pl.List(pl.Float64))
    )
    period = S.parse_period("2026-10")
    card = Scorecard("street", period, "320100", rows, [period], True, AS_OF)
    return S.Shown.of(card).rows


def test_scores_and_ranks_follow_the_rule() -> None:
    out = scored()
    assert out["row_id"].to_list() == EXPECTED_ORDER
    assert out["rank"].to_list() == EXPECTED_RANK
    for row_id, score in zip(out["row_id"], out["score"], strict=True):
        want = EXPECTED_SCORE[row_id]
        assert score == (None if want is None else pytest.approx(want)), row_id


def test_thin_and_empty_cells_say_why_on_the_page_and_in_the_exports() -> None:
    rows = {r["row_id"]: r for r in shown_rows()}
    for (row_id, metric), gap in EXPECTED_GAPS.items():
        r = rows[row_id]
        assert r[metric] is None and S.gap_of(r, metric) == gap, (row_id, metric)
        assert E.shown_cell(r, metric, "zh-CN") == {"thin": "样本不足", "none": "无数据"}[gap]
        assert E.shown_cell(r, metric, "en") == {"thin": "Too few", "none": "No data"}[gap]
    for row_id, r in rows.items():
        unranked = EXPECTED_SCORE[row_id] is None
        assert E.shown_cell(r, "rank", "zh-CN") == ("未排名" if unranked else r["rank"])
        assert E.shown_cell(r, "score", "en") == ("Not enough data" if unranked else r["score"])
    # a value at the threshold is a number, not words
    assert rows["d-five"]["resolve_ontime"] == 100.0 and rows["d-five"]["grid_level"] == 60.0


def test_banding_never_touches_a_cell_without_data() -> None:
    rows = shown_rows()
    bands = A.bands(rows)
    for conds in bands.values():
        assert all(c["condition"].startswith("params.value != null && ") for c in conds)
    # the score band only ever sees the four scored rows (fewer than five: no band at all)
    assert "score" not in bands
    cols = {c["field"]: c for c in A.columns("street", "zh-CN", SETTINGS, bands)}
    for m in [*S.METRIC_IDS, "score", "rank", "change"]:
        first = cols[m]["cellStyle"]["styleConditions"][0]
        assert first == {"condition": "params.value == null", "style": A.GAP_STYLE}
        fmt = cols[m]["valueFormatter"]["function"]
        assert fmt.startswith("params.value == null ? ")
        assert ("样本不足" in fmt) == (m in S.METRICS and S.METRICS[m].sampled)
    # no previous period: the change reads as the exports write it, not as a blank cell
    assert cols["change"]["valueFormatter"]["function"].startswith("params.value == null ? '—' :")


def test_only_scored_metrics_are_banded() -> None:
    rows = [{"row_id": str(i), "score": float(i), "reports": i, "resolve_ontime": i * 10.0}
            for i in range(10)]  # fmt: skip
    banded = A.bands(rows, {"reports": 0.0, "resolve_ontime": 10.0})
    assert set(banded) == {"score", "resolve_ontime"}  # reports count for nothing


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_the_rule_is_written_into_the_definitions(lang: str) -> None:
    a = dataclasses.replace(SETTINGS.assessment, min_sample=7, min_score_weight=0.6)
    settings = dataclasses.replace(SETTINGS, assessment=a)
    tips = A.header_tooltips(lang, settings)
    for m in S.METRICS.values():
        longer = len(tips[m.id]) > len(m.definition(lang, settings))
        assert ("7" in tips[m.id] and longer) == m.sampled
    assert "60%" in tips["score"]
