"""Metric definitions say the configured values in words, never a settings key.

Generated over every metric in the registry, both languages, and two sets of settings
(the defaults and an unusual one), so a new metric or a new placeholder is covered."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from dashboard import i18n
from pipelines import assessment as S
from pipelines.assessment import wording as W
from pipelines.settings import Settings
from tests import flowfile

# a settings key as a person would see it quoted: dotted.key or [section]
KEY_PATTERNS = (
    re.compile(r"\b[a-z_]+\.[a-z_]+(_[a-z]+)+\b"),  # assessment.accept_hours
    re.compile(r"\b(assessment|warnings|deadlines|live|auth)\.[a-z_]+"),
    re.compile(r"\[[a-z_]+\]"),  # [deadlines]
    re.compile(r"[a-z]+_[a-z_]+"),  # any snake_case word (work_end_h, escalate_after_s)
    re.compile(r"\{[a-z_]*\}"),  # a placeholder left unfilled
)


# The unusual flows: disputes 3.5 + 7 + 70 + 10 + 5.5 = 96 h, fire 15 + 15 + 30 + 15 + 15
# minutes = 1.5 h; every other category flowfile's default 1 + 2 + 10 + 4 + 3 = 20 h.
UNUSUAL_FLOWS = flowfile.doc(
    flowfile.flow(
        "dispute", "dispute", (3.5, 7, 70, 10, 5.5), name_zh="矛盾纠纷", name_en="Disputes"
    ),
    flowfile.flow("fire", "fire", (0.25, 0.25, 0.5, 0.25, 0.25), name_zh="消防", name_en="Fire"),
)


def unusual(tmp: Path) -> Settings:
    s = flowfile.settings_for(flowfile.write(tmp / "flows.toml", UNUSUAL_FLOWS))
    return replace(
        s,
        assessment=replace(s.assessment, handling_ref_hours=36.0, online_slot_minutes=45),
        warnings=replace(s.warnings, work_start_h=9, work_end_h=17, escalate_after_s=900),
    )


@pytest.fixture(scope="module")
def settings_of(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Settings]:
    return {"default": Settings(), "unusual": unusual(tmp_path_factory.mktemp("flows"))}


SETTINGS = ("default", "unusual")
STAGES = ("accept", "dispatch", "handle", "verify", "close")


def expected_values(which: str, s: Settings, lang: str) -> dict[str, list[str]]:
    """Per metric, the values its definition must state (written here from the settings
    and the flow file, not from the code under test)."""
    a, w = s.assessment, s.warnings
    if lang == "en":
        hrs = lambda h: f"{h:g} hour" + ("" if h == 1 else "s")  # noqa: E731
        mins = lambda m: f"{m:g} minutes"  # noqa: E731
        dispute, fire = "Disputes", "Fire"
    else:
        hrs = lambda h: f"{h:g} 小时"  # noqa: E731
        mins = lambda m: f"{m:g} 分钟"  # noqa: E731
        dispute, fire = "矛盾纠纷", "消防"
    out = {
        "online_rate": [
            mins(a.online_slot_minutes),
            f"{w.work_start_h:02d}:00–{w.work_end_h:02d}:00",
        ],
        "warning_ack": [mins(w.escalate_after_s / 60)],
    }
    if which == "unusual":
        hours = dict(zip(STAGES, (3.5, 7, 70, 10, 5.5), strict=True))
        for st, h in hours.items():
            # fire's stages are all ≤ 30 min (in minutes), disputes' in hours
            out[f"stage_{st}"] = [
                f"{dispute} {hrs(h)}",
                f"{fire} {mins(30 if st == 'handle' else 15)}",
            ]
        out["accept_ontime"] = [f"{dispute} {hrs(3.5)}", f"{fire} {mins(15)}", hrs(1)]
        out["dispatch_ontime"] = [f"{dispute} {hrs(7)}", f"{fire} {mins(15)}", hrs(2)]
        out["resolve_ontime"] = [f"{fire} {hrs(1.5)}", hrs(20), f"{dispute} {hrs(96)}"]
    return out


CASES = [(mid, lang, name) for mid in S.METRICS for lang in ("zh", "en") for name in SETTINGS]


@pytest.mark.parametrize(("metric", "lang", "which"), CASES)
def test_definition_has_values_not_keys(
    metric: str, lang: str, which: str, settings_of: dict[str, Settings]
) -> None:
    s = settings_of[which]
    text = S.METRICS[metric].definition(lang, s)
    for pat in KEY_PATTERNS:
        assert not pat.search(text), (pat.pattern, text)
    for value in expected_values(which, s, lang).get(metric, []):
        assert value in text, (value, text)


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("which", list(SETTINGS))
def test_score_definition_has_values_not_keys(
    lang: str, which: str, settings_of: dict[str, Settings]
) -> None:
    s = settings_of[which]
    text = S.score_definition(lang, s)
    for pat in KEY_PATTERNS:
        assert not pat.search(text), (pat.pattern, text)
    h = s.assessment.handling_ref_hours
    assert (f"{h:g} hours" if lang == "en" else f"{h:g} 小时") in text


def test_every_flow_deadline_is_named(settings_of: dict[str, Settings]) -> None:
    """The closure hours are grouped by hours, shortest first, each group naming its flows."""
    zh = S.METRICS["resolve_ontime"].definition("zh", settings_of["unusual"])
    assert "消防 1.5 小时" in zh and "矛盾纠纷 96 小时" in zh
    assert zh.index("消防 1.5 小时") < zh.index(" 20 小时") < zh.index("矛盾纠纷 96 小时")
    for f in UNUSUAL_FLOWS["flow"]:
        assert f["name_zh"] in zh


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
