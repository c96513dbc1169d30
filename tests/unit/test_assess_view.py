"""The assessment page's pure helpers: the view from a URL (clamped to the scope),
drill-down, crumbs, colour bands, formula neutralisation and cell text."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dashboard.pages.assessment import export_jobs as J
from dashboard.pages.assessment import queries as A
from pipelines import assessment as S
from pipelines.assessment import exports as E
from pipelines.city.geography import City, demo_city
from pipelines.settings import load_settings

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)

NOW = S.parse_period("2026-11-15").start_ms + 3_600_000
TZ = "Asia/Shanghai"


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def test_view_is_clamped_to_the_scope(city: City) -> None:
    street = city.children("320102")[0]
    v = A.view_of(city, "320102", {"level": "grid", "period": "2026-10", "area": street}, NOW, TZ)
    assert (v.level, v.period.key, v.area) == ("grid", "2026-10", street)
    # another district, a junk area, a junk level, a bad period: safe defaults inside scope
    v = A.view_of(city, "320102", {"area": "320104", "level": "x", "period": "bad"}, NOW, TZ)
    assert (v.area, v.level, v.period.key) == ("320102", "street", "2026-11")
    # a level above the area: the next level below it
    v = A.view_of(city, "320102", {"area": street, "level": "district"}, NOW, TZ)
    assert v.level == "grid"
    grid = city.children(street)[0]
    assert A.view_of(city, grid, {}, NOW, TZ).level == "grid"
    assert A.levels_below(city, "320100") == list(S.LEVELS)
    assert A.levels_below(city, street) == ["street", "grid", "worker"]
    assert A.View("street", S.parse_period("2026-10"), "320102").search() == (
        "?level=street&period=2026-10&area=320102"
    )


def test_drill_and_crumbs(city: City) -> None:
    period = S.parse_period("2026-10")
    street = city.children("320102")[0]
    v = A.View("street", period, "320102")
    assert A.drill(city, v, street) == A.View("grid", period, street)
    assert A.drill(city, A.View("worker", period, street), "W1") is None
    assert A.drill(city, v, "nope") is None
    names = [n for n, _ in A.crumbs(city, "320100", A.View("grid", period, street))]
    assert names == [city.name, city.area("320102")["name"], city.area(street)["name"]]
    # never above the user's own scope
    assert len(A.crumbs(city, "320102", A.View("grid", period, street))) == 2


def test_bands_mark_the_best_and_worst_fifth_by_direction() -> None:
    rows = [{"score": float(i), "overdue": 10 - i, "reports": i} for i in range(10)]
    for r in rows:
        for m in S.METRIC_IDS:
            r.setdefault(m, None)

    def by(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        """(column, colour) → the condition's comparison, e.g. ``>= 8.0``."""
        return {
            (col, "green" if c["style"] is A.BEST_STYLE else "red"): c["condition"].split(
                "params.value "
            )[-1]
            for col, conds in A.bands(rows).items()
            for c in conds
        }

    got = by(rows)
    assert got[("score", "green")] == ">= 8.0" and got[("score", "red")] == "<= 1.0"
    # fewer overdue is better
    assert got[("overdue", "green")] == "<= 2.0" and got[("overdue", "red")] == ">= 9.0"
    assert not [k for k in got if k[0] == "accept_ontime"]  # no data
    assert A.bands(rows[:4]) == {}  # too few rows to band
    # ties: nine rows share the best score, one is worse → only that one is red
    tied = by([{**r, "score": 100.0 if i else 50.0} for i, r in enumerate(rows)])
    assert tied[("score", "red")] == "< 100.0" and tied[("score", "green")] == ">= 100.0"
    # ... and nine share the worst: only the one better row is green
    low = by([{**r, "score": 50.0 if i else 100.0} for i, r in enumerate(rows)])
    assert low[("score", "green")] == "> 50.0" and low[("score", "red")] == "<= 50.0"


@pytest.mark.parametrize(
    ("value", "out"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("＝1", "'＝1"),
        ("＋1", "'＋1"),
        ("－1", "'－1"),
        ("＠x", "'＠x"),
        ("\tx", "'\tx"),
        ("玄武区", "玄武区"),
        (-2.5, -2.5),
        (None, None),
    ],
)
def test_neutralise(value: object, out: object) -> None:
    assert E.neutralise(value) == out


def test_cell_text_matches_the_table_formats() -> None:
    assert E.cell_text("num1", 100) == "100.0"
    assert E.cell_text("int", 7.0) == "7"
    assert E.cell_text("signed1", 0.0) == "+0.0" and E.cell_text("signed1", -0.0) == "+0.0"
    assert E.cell_text("signed1", -3.26) == "-3.3" and E.cell_text("signed1", 1.04) == "+1.0"
    assert E.cell_text("num1", None) == "—"
    kinds = {c: E.column_kind(c) for c in S.shown_columns("street")}
    assert kinds["rank"] == "int" and kinds["overdue"] == "int" and kinds["change"] == "signed1"
    assert kinds["name"] == "text" and kinds["accept_ontime"] == "num1"


def _big_shown(n: int) -> S.Shown:
    """A street table of ``n`` made-up rows (more than two progress chunks)."""
    rows = []
    for i in range(n):
        row: dict = {"row_id": f"r{i}", "rank": i + 1, "name": f"街道{i}", "parent": "玄武区"}
        row |= {"score": 50.0 + i % 50, "change": -1.5 + i % 3, "trend": "▁▃▅"}
        row |= {m: float(i % 97) for m in S.METRIC_IDS}
        rows.append(row)
    return S.Shown("street", S.parse_period("2026-10"), "320102", True, NOW, rows)


@pytest.mark.parametrize("fmt", sorted(E.EXPORTS))
def test_writers_report_progress_up_to_100_and_write_the_same_bytes(
    fmt: str, city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("reportlab.rl_config.invariant", 1)  # no time in the PDF's ID
    settings = load_settings(environ={})
    shown = _big_shown(2 * E.CHUNK + 77)
    calls: list[tuple[str, int, int]] = []
    with_progress = E.export_shown(shown, city, settings, fmt, progress=lambda *c: calls.append(c))
    without = E.export_shown(shown, city, settings, fmt)
    assert with_progress.data == without.data and with_progress.sha256 == without.sha256
    percents = [E.percent(*c) for c in calls]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100
    stages = [s for s, _, _ in calls]
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    slow = "pages" if fmt == "pdf" else "pack"
    assert order == ["table", "rows", slow, "hash"]
    rows = [(d, n) for s, d, n in calls if s == "rows"]
    assert rows == [(0, len(shown.rows)), (500, 1077), (1000, 1077), (1077, 1077)]
    assert all(0 <= d <= n for _, d, n in calls)


def test_stage_text_in_both_languages() -> None:
    job = J.Job("j", "sup", "xlsx", "running", "rows", 500, 1077, 27, NOW)
    assert J.stage_text(job, "zh-CN") == "正在写入第 500/1077 行"
    assert J.stage_text(job, "en") == "Writing rows 500/1077"
    failed = dataclasses.replace(job, state="error", error="failed")
    assert J.stage_text(failed, "zh-CN") == "导出失败，请重试"
    for stage in E.STAGES:  # every stage has its words
        assert J.stage_text(dataclasses.replace(job, stage=stage), "en")
