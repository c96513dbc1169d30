"""Dates shown or exported are unambiguous in both languages: ISO (2026-12-05) or
2026年12月05日, never 05/12/2026 or 12/05/2026; times in the city's zone."""

from __future__ import annotations

import re

import pytest

from pipelines.assessment.periods import parse_period

SLASHED = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}")
ZH_DAY = re.compile(r"\d{4}年\d{2}月\d{2}日")


@pytest.mark.parametrize(
    ("key", "zh", "en"),
    [
        ("2026-12-05", "2026年12月05日", "2026-12-05"),
        ("2026-03-09", "2026年03月09日", "2026-03-09"),
        ("2026-12", "2026年12月", "December 2026"),
        ("2026-W49", "2026年第49周（11-30–12-06）", "Week 49, 2026 (11-30–12-06)"),
        ("2026-12-01..2026-12-05", "2026-12-01 至 2026-12-05", "2026-12-01 to 2026-12-05"),
    ],
)
def test_period_labels(key: str, zh: str, en: str) -> None:
    p = parse_period(key)
    assert p.label("zh-CN") == zh and p.label("en") == en
    for text in (p.label("zh-CN"), p.label("en")):
        assert not SLASHED.search(text)


def test_every_python_date_format_in_the_code_is_unambiguous() -> None:
    """No strftime pattern anywhere in the app puts day and month around a slash, and
    none leads with the day (%d before %m)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bad = []
    for folder in ("dashboard", "pipelines"):
        for path in (root / folder).rglob("*.py"):
            for fmt in re.findall(r"strftime\(\s*\"([^\"]+)\"", path.read_text("utf-8")):
                if "/" in fmt or (
                    "%d" in fmt and "%m" in fmt and fmt.index("%d") < fmt.index("%m")
                ):
                    bad.append((path.name, fmt))
    assert bad == []


def test_date_pickers_display_iso() -> None:
    """Every Dash date picker in the pages says display_format YYYY-MM-DD."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "dashboard"
    for path in root.rglob("*.py"):
        src = path.read_text("utf-8")
        for m in re.finditer(r"dcc\.DatePicker(Range|Single)\(", src):
            call = src[m.end() : m.end() + 600]  # the call's arguments
            assert 'display_format="YYYY-MM-DD"' in call, (path.name, call[:200])
