"""Metric definitions in words: the configured values, never the settings' names.

A definition in :data:`~pipelines.assessment.metrics.METRICS` is a template with
placeholders (``{accept}``, ``{deadlines}``, …); :func:`definition` fills them from the
settings and the standard flows in force, so the page's tooltip and every export say
"矛盾纠纷、治安 1 小时；消防 15 分钟" / "disputes, public order 1 hour; …", not a setting's
name. Deadlines are grouped by hours, shortest first, each group naming its flows."""

from __future__ import annotations

import functools
from collections.abc import Callable

from pipelines.dispatch.flows import STAGES, Flow, Flows, flows_for
from pipelines.settings import Settings

# incident categories in words (the dashboard's catalog says the same: a unit test checks)
CATEGORY_WORDS: dict[str, tuple[str, str]] = {
    "dispute": ("矛盾纠纷", "disputes"),
    "safety_hazard": ("安全隐患", "safety hazards"),
    "public_order": ("治安", "public order"),
    "sanitation": ("环境卫生", "sanitation"),
    "city_management": ("城市管理", "city management"),
    "livelihood": ("民生服务", "livelihood"),
    "fire": ("消防", "fire"),
    "other": ("其他", "other"),
}


def number(x: float) -> str:
    """1.0 → "1", 1.5 → "1.5" (never "1.0" nor "1.50")."""
    return f"{float(x):g}"


def hours(h: float, lang: str) -> str:
    """A duration given in hours: "2 小时" / "2 hours" (minutes when under an hour)."""
    if 0 < h < 1:
        return minutes(h * 60, lang)
    if lang == "en":
        return f"{number(h)} hour" + ("" if float(h) == 1 else "s")
    return f"{number(h)} 小时"


def minutes(m: float, lang: str) -> str:
    if lang == "en":
        return f"{number(m)} minute" + ("" if float(m) == 1 else "s")
    return f"{number(m)} 分钟"


def seconds(s: float, lang: str) -> str:
    """A duration given in seconds, in the largest whole unit: 600 → "10 分钟"."""
    if s >= 3600 and s % 3600 == 0:
        return hours(s / 3600, lang)
    if s >= 60 and s % 60 == 0:
        return minutes(s / 60, lang)
    return f"{number(s)} seconds" if lang == "en" else f"{number(s)} 秒"


def clock_range(start_h: int, end_h: int) -> str:
    return f"{start_h:02d}:00–{end_h:02d}:00"


def by_flow(flows: Flows, hours_of: Callable[[Flow], float], lang: str) -> str:
    """A deadline of every flow, grouped by hours, shortest first: "消防 15 分钟；矛盾纠纷、
    治安 1 小时" (flows named as in the flow file)."""
    by_h: dict[float, list[str]] = {}
    for f in flows.flows:
        by_h.setdefault(round(hours_of(f), 6), []).append(f.name_en if lang == "en" else f.name_zh)
    if lang == "en":
        return "; ".join(f"{', '.join(n)} {hours(h, lang)}" for h, n in sorted(by_h.items()))
    return "；".join(f"{'、'.join(n)} {hours(h, lang)}" for h, n in sorted(by_h.items()))


def _stage_hours(stage: str, flow: Flow) -> float:
    return flow.stage(stage).hours


def deadlines(settings: Settings, lang: str) -> str:
    """The closure deadline (all stages' hours) of every flow, grouped by hours."""
    return by_flow(flows_for(settings), lambda f: f.total_hours, lang)


def values(settings: Settings, lang: str) -> dict[str, str]:
    """What each placeholder of a definition says, from the settings in force."""
    a, w = settings.assessment, settings.warnings
    flows = flows_for(settings)
    return {
        **{s: by_flow(flows, functools.partial(_stage_hours, s), lang) for s in STAGES},
        "ref": hours(a.handling_ref_hours, lang),
        "slot": minutes(a.online_slot_minutes, lang),
        "work": clock_range(w.work_start_h, w.work_end_h),
        "ack": seconds(w.escalate_after_s, lang),
        "deadlines": deadlines(settings, lang),
    }


def fill(template: str, settings: Settings, lang: str) -> str:
    return template.format(**values(settings, lang))
