"""Metric definitions say the configured values in words, never a settings key.

Generated over every metric in the registry, both languages, and two sets of settings
(the defaults and an unusual one), so a new metric or a new placeholder is covered."""

from __future__ import annotations

import re
from dataclasses import fields, replace

import pytest

from dashboard import i18n
from pipelines import assessment as S
from pipelines.assessment import wording as W
from pipelines.settings import Settings

# a settings key as a person would see it quoted: dotted.key or [section]
KEY_PATTERNS = (
    re.compile(r"\b[a-z_]+\.[a-z_]+(_[a-z]+)+\b"),  # assessment.accept_hours
    re.compile(r"\b(assessment|warnings|deadlines|live|auth)\.[a-z_]+"),
    re.compile(r"\[[a-z_]+\]"),  # [deadlines]
    re.compile(r"[a-z]+_[a-z_]+"),  # any snake_case word (work_end_h, escalate_after_s)
    re.compile(r"\{[a-z_]*\}"),  # a placeholder left unfilled
)


def unusual() -> Settings:
    s = Settings()
    return replace(
        s,
        assessment=replace(
            s.assessment,
            accept_hours=3.5,
            dispatch_hours=7.0,
            handling_ref_hours=36.0,
            online_slot_minutes=45,
        ),
        warnings=replace(s.warnings, work_start_h=9, work_end_h=17, escalate_after_s=900),
        deadlines=replace(s.deadlines, fire=1.5, dispute=96.0),
    )


SETTINGS = {"default": Settings(), "unusual": unusual()}


def expected_values(s: Settings, lang: str) -> dict[str, list[str]]:
    """Per metric, the values its definition must state (written here from the settings,
    not from the code under test)."""
    a, w = s.assessment, s.warnings
    if lang == "en":
        hrs = lambda h: f"{h:g} hour" + ("" if h == 1 else "s")  # noqa: E731
        mins = lambda m: f"{m:g} minutes"  # noqa: E731
    else:
        hrs = lambda h: f"{h:g} 小时"  # noqa: E731
        mins = lambda m: f"{m:g} 分钟"  # noqa: E731
    deadlines = [hrs(s.deadlines.hours(f.name)) for f in fields(s.deadlines)]
    return {
        "accept_ontime": [hrs(a.accept_hours)],
        "dispatch_ontime": [hrs(a.dispatch_hours)],
        "resolve_ontime": deadlines,
        "online_rate": [
            mins(a.online_slot_minutes),
            f"{w.work_start_h:02d}:00–{w.work_end_h:02d}:00",
        ],
        "warning_ack": [mins(w.escalate_after_s / 60)],
    }


CASES = [(mid, lang, name) for mid in S.METRICS for lang in ("zh", "en") for name in SETTINGS]


@pytest.mark.parametrize(("metric", "lang", "which"), CASES)
def test_definition_has_values_not_keys(metric: str, lang: str, which: str) -> None:
    s = SETTINGS[which]
    text = S.METRICS[metric].definition(lang, s)
    for pat in KEY_PATTERNS:
        assert not pat.search(text), (pat.pattern, text)
    for value in expected_values(s, lang).get(metric, []):
        assert value in text, (value, text)


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("which", list(SETTINGS))
def test_score_definition_has_values_not_keys(lang: str, which: str) -> None:
    s = SETTINGS[which]
    text = S.score_definition(lang, s)
    for pat in KEY_PATTERNS:
        assert not pat.search(text), (pat.pattern, text)
    h = s.assessment.handling_ref_hours
    assert (f"{h:g} hours" if lang == "en" else f"{h:g} 小时") in text


def test_every_category_deadline_is_named() -> None:
    s = unusual()
    zh = S.METRICS["resolve_ontime"].definition("zh", s)
    for f in fields(s.deadlines):
        assert i18n.t(f"cat.{f.name}", "zh") in zh
    assert "消防 1.5 小时" in zh and "矛盾纠纷 96 小时" in zh


def test_category_words_match_the_catalog() -> None:
    for cat, (zh, en) in W.CATEGORY_WORDS.items():
        assert i18n.t(f"cat.{cat}", "zh") == zh
        assert i18n.t(f"cat.{cat}", "en").lower() == en


@pytest.mark.parametrize(
    ("value", "fn", "lang", "text"),
    [
        (600, W.seconds, "zh", "10 分钟"),
        (600, W.seconds, "en", "10 minutes"),
        (7200, W.seconds, "en", "2 hours"),
        (45, W.seconds, "zh", "45 秒"),
        (1.0, W.hours, "en", "1 hour"),
        (0.5, W.hours, "zh", "30 分钟"),
        (2.5, W.hours, "zh", "2.5 小时"),
    ],
)
def test_duration_words(value: float, fn: object, lang: str, text: str) -> None:
    assert fn(value, lang) == text  # type: ignore[operator]
