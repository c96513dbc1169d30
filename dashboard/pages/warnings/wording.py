"""A warning's summary in words: names instead of ids, a baseline as a sentence.

Pure: the caller passes the id → name map (the city's areas, the roster's workers) and
the settings; :func:`summary_items` returns, per field, its label and either text or a
list of ``(name, id)`` pairs (shown as the name, the id on hover)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dashboard.i18n import t
from pipelines.assessment.wording import hours
from pipelines.settings import Settings

Named = list[tuple[str, str]]  # (what a person reads, the id behind it)

ID_FIELDS = ("grids", "workers", "offline", "cameras_ids")  # summary fields that hold ids


def named(ident: str, names: Mapping[str, str]) -> tuple[str, str]:
    """(name, id): the name when known, else the id itself."""
    return (names.get(ident) or ident, ident)


def amount(x: float, lang: str) -> str:
    """A small expected count for a person: 2 decimals under 1, 1 under 10, else whole."""
    if x < 0.005:
        return t("wbase.under", lang)
    return t("wbase.about", lang, x=f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 10 else f"{x:.0f}")


def baseline_text(
    rule: str, expected: float, window_min: int | None, settings: Settings, lang: str
) -> str:
    """What ``expected`` means for the rule that computed it, in one sentence.

    surge: the street × category's reports in the same time-of-day window, averaged over
    the past ``surge_baseline_days`` days (pulled toward a prior while history is short).
    video_cluster: alerts per window at the street × label's rate over the trailing
    ``video_baseline_h`` hours."""
    cfg = settings.warnings
    if rule == "video_cluster":
        w = window_min or cfg.video_window_min
        return t("wbase.video", lang, x=amount(expected, lang), w=w, h=cfg.video_baseline_h)
    w = window_min or cfg.surge_window_min
    return t("wbase.surge", lang, x=amount(expected, lang), w=w, d=cfg.surge_baseline_days)


def flat(summary: Mapping[str, Any], rule: str) -> list[tuple[str, Any, str]]:
    """(field, value, rule it belongs to); a fused situation's parts after its own fields."""
    out = [(k, v, rule) for k, v in summary.items() if k != "parts"]
    for part_key, part in (summary.get("parts") or {}).items():
        if isinstance(part, dict):  # keyed by the part's finding key, "<rule>:<street>:…"
            out += [(k, v, str(part_key).split(":")[0]) for k, v in part.items()]
    return out


def summary_items(
    summary: Mapping[str, Any],
    rule: str,
    names: Mapping[str, str],
    settings: Settings,
    lang: str,
    fmt: Any,
) -> list[tuple[str, str | Named]]:
    """Each summary field as (label, text or named ids); ``fmt`` writes any other value."""
    out: list[tuple[str, str | Named]] = []
    fields = flat(summary, rule)
    for key, value, of in fields:
        label = field_label(key, lang)
        if key in ID_FIELDS and isinstance(value, list):
            out.append((label, [named(str(v), names) for v in value]))
        elif key == "p" and isinstance(value, int | float) and value > 0:
            out.append((label, chance_text(float(value), lang)))
        elif key == "deadline" and isinstance(value, Mapping):
            out.append((label, deadline_text(value, lang)))
        elif key == "expected" and isinstance(value, int | float):
            window = next((v for k, v, r in fields if k == "window_min" and r == of), None)
            out.append((label, baseline_text(of, float(value), window, settings, lang)))
        else:
            out.append((label, fmt(value, lang)))
    return out


def deadline_text(d: Mapping[str, Any], lang: str) -> str:
    """The sla rule's deadline quoted from the flow: "受理时限 1 小时（标准流程：矛盾纠纷）"."""
    stage = t(f"fstage.{d.get('stage')}", lang)
    flow = d.get("flow_en" if lang == "en" else "flow_zh") or ""
    h = d.get("hours")
    when = hours(float(h), lang) if isinstance(h, int | float) else "?"
    return t("wsla.deadline", lang, stage=stage, hours=when, flow=flow)


RAREST = 1e10  # beyond "1 in ten billion" the number says nothing more to a reader


def chance_text(p: float, lang: str) -> str:
    """A tail probability in words: how rarely a count like this happens by chance."""
    if p >= 0.5:
        return t("warn.chance.common", lang)
    odds = 1.0 / p
    if odds > RAREST:
        return t("warn.chance.rarest", lang, n=f"{RAREST:,.0f}")
    return t("warn.chance.one_in", lang, n=f"{odds:,.0f}")


def field_label(key: str, lang: str) -> str:
    got = t("wfield." + key, lang)
    return key if got == "wfield." + key else got
