"""Builders of what the early-warning page's callbacks render: level chips, list rows, the
alarm banner and the detail panel with its evidence and timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import dcc, html

from dashboard import auth, ids
from dashboard.backend import Backend
from dashboard.i18n import t
from dashboard.pages.warnings import wording as WW
from pipelines import warnings as W

ACTION_BUTTONS = {
    "acknowledge": ids.WARN_ACK,
    "dispatch": ids.WARN_DISPATCH,
    "resolve": ids.WARN_RESOLVE,
    "dismiss": ids.WARN_DISMISS,
}


def level_chips(counts: dict[str, int], lang: str) -> list[Any]:
    return [
        html.Span(f"{t('warn.' + lv, lang)} {counts[lv]}", className=f"chip {lv}")
        for lv in reversed(W.LEVELS)
    ]


def area_name(b: Backend, area_id: str | None) -> str:
    row = b.city.area(area_id) if area_id else None
    return str(row["name"]) if row else (area_id or "")


def area_span(b: Backend, area_id: str | None, className: str = "") -> html.Span:
    """An area's name, its id on hover."""
    return html.Span(area_name(b, area_id), title=area_id or "", className=className)


def names_of(b: Backend, people: bool) -> dict[str, str]:
    """id → name for everything a warning may list: areas, and rostered workers when the
    viewer may see individuals (``people``: auth.sees_people(); else workers stay ids)."""
    names = dict(b.area_names)
    roster = b.roster() if people else None
    if roster is not None and roster.height:
        ids_, nm = roster["worker_id"].to_list(), roster["name"].to_list()
        names.update({i: n for i, n in zip(ids_, nm, strict=True) if i and n})
    return names


def named_list(pairs: list[tuple[str, str]], lang: str) -> list[Any]:
    """Names separated by commas, each with its id on hover (at most 10, then "…")."""
    out: list[Any] = []
    for i, (name, ident) in enumerate(pairs[:10]):
        out += [", "] if i else []
        out.append(html.Span(name, title=ident, className="wg-named"))
    return out + ([" …"] if len(pairs) > 10 else [])


def when(ms: int | None, b: Backend) -> str:
    if not ms:
        return "—"
    tz = ZoneInfo(b.settings.live.timezone)
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%m-%d %H:%M:%S")


def row_subject(summary: dict[str, Any], lang: str) -> str:
    """What tells two warnings of one rule and one street apart (pure): the categories and
    labels they watch (both sides of a fused one), the feed of a system warning, the
    rule's window."""
    parts = [summary, *(summary.get("parts") or {}).values()]
    what: list[str] = []
    for s in parts:
        for key, prefix in (("category", "cat."), ("label", "label."), ("feed", "feed.")):
            if isinstance(s.get(key), str) and t(prefix + s[key], lang) not in what:
                what.append(t(prefix + s[key], lang))
    wins = [s["window_min"] for s in parts if isinstance(s.get("window_min"), int | float)]
    if wins:
        what.append(t("warn.win_min", lang, n=int(max(wins))))
    elif isinstance(summary.get("days"), int | float):
        what.append(t("warn.win_days", lang, n=int(summary["days"])))
    return " · ".join(what)


def time_span(first_ms: int | None, last_ms: int | None, tz: str) -> str:
    """When a warning was first and last seen, local time (pure): ``12-05 02:51–03:04``."""
    if not last_ms:
        return "—"
    zone = ZoneInfo(tz)
    last = datetime.fromtimestamp(last_ms / 1000, zone)
    first = datetime.fromtimestamp((first_ms or last_ms) / 1000, zone)
    if first.strftime("%H:%M") == last.strftime("%H:%M") and first.date() == last.date():
        return last.strftime("%m-%d %H:%M")
    if first.date() == last.date():
        return f"{first:%m-%d %H:%M}–{last:%H:%M}"
    return f"{first:%m-%d %H:%M}–{last:%m-%d %H:%M}"


def warning_rows(
    items: list[dict[str, Any]], b: Backend, lang: str, selected: str | None
) -> list[Any]:
    if not items:
        return [html.P(t("warn.none", lang), className="wg-muted")]
    out = []
    tz = b.settings.live.timezone
    for w in items[:200]:
        cls = "warn-row" + (" sel" if w["id"] == selected else "")
        subject = row_subject(w.get("summary") or {}, lang)
        out.append(
            html.Div(
                [
                    html.Span(t(f"warn.{w['level']}", lang), className=f"chip {w['level']}"),
                    html.Span(
                        [t(f"rule.{w['rule']}", lang)]
                        + ([html.Span(subject, className="warn-subject")] if subject else []),
                        className="warn-rule",
                    ),
                    area_span(b, w["area_id"], "warn-area"),
                    html.Span(t(f"wstatus.{w['status']}", lang), className="warn-status"),
                    html.Span(
                        time_span(w.get("first_ms"), w["last_ms"], tz),
                        className="wg-muted warn-when",
                    ),
                ],
                id={"type": ids.WARN_ROW, "id": w["id"]},
                n_clicks=0,
                className=cls,
            )
        )
    return out


def alarm_banner(
    alarm_ids: list[str], items: list[dict[str, Any]], b: Backend, lang: str
) -> html.Div:
    by_id = {w["id"]: w for w in items}
    worst = max((by_id[i] for i in alarm_ids), key=lambda w: W.RANK[w["level"]])
    text = t(
        "warn.alarm",
        lang,
        level=t(f"warn.{worst['level']}", lang),
        rule=t(f"rule.{worst['rule']}", lang),
        area=area_name(b, worst["area_id"]),
        n=len(alarm_ids),
    )
    return html.Div(f"⚠ {text}", className=f"warn-alarm {worst['level']}")


def evidence_incidents(b: Backend, evidence: list[str]) -> set[str]:
    """The evidence ids that are incidents (they open in the incident workbench)."""
    from sqlalchemy import select

    from pipelines.spine import store

    ids_ = [e for e in evidence if isinstance(e, str)][:500]
    if not ids_ or not auth.may("incidents"):
        return set()
    t_ = store.incidents
    with b.engine.connect() as conn:
        rows = conn.execute(select(t_.c.incident_id).where(t_.c.incident_id.in_(ids_)))
        return {r[0] for r in rows}


def detail_panel(row: dict[str, Any], b: Backend, lang: str) -> html.Div:
    names = names_of(b, auth.sees_people())
    incidents = evidence_incidents(b, row["evidence"])
    summary = [
        html.Li([f"{k}: ", *(named_list(v, lang) if isinstance(v, list) else [v])])
        for k, v in WW.summary_items(row["summary"], row["rule"], names, b.settings, lang, _fmt)
    ]
    timeline = [
        html.Li(
            [
                html.Span(when(a["at_ms"], b), className="wg-muted"),
                f" {t('waction.' + a['action'], lang)} · {_actor(a['actor'], lang)}",
                f" · {_note(a['action'], a['note'], b, lang)}" if a["note"] else "",
            ]
        )
        for a in row["timeline"]
    ]
    facts: list[tuple[str, Any]] = [
        (t("wfield.rule", lang), t(f"rule.{row['rule']}", lang)),
        (t("wfield.area", lang), area_span(b, row["area_id"])),
        (t("wfield.status", lang), t(f"wstatus.{row['status']}", lang)),
        (t("wfield.first", lang), when(row["first_seen_ms"], b)),
        (t("wfield.last", lang), when(row["last_seen_ms"], b)),
    ]
    if row.get("escalated_to"):
        facts.append((t("wfield.escalated", lang), area_span(b, row["escalated_to"])))
    if row.get("assigned_to"):
        facts.append((t("wfield.assigned", lang), row["assigned_to"]))
    if row.get("close_note"):
        facts.append((t("wfield.reason", lang), row["close_note"]))
    return html.Div(
        [
            html.H3(
                [
                    html.Span(t(f"warn.{row['level']}", lang), className=f"chip {row['level']}"),
                    " ",
                    t(f"rule.{row['rule']}", lang),
                ]
            ),
            html.Dl([x for k, v in facts for x in (html.Dt(k), html.Dd(v))], className="warn-dl"),
            html.H4(t("warn.summary", lang)),
            html.Ul(summary),
            html.H4(t("warn.evidence", lang, n=len(row["evidence"]))),
            html.Div(
                [
                    dcc.Link(
                        names.get(e, e),
                        href=f"/incidents/{e}" if e in incidents else f"/area/{row['area_id']}",
                        title=e,
                        className="warn-ev",
                    )
                    for e in row["evidence"]
                ],
                className="warn-evs",
            ),
            dcc.Link(
                t("inc.open_warning", lang),
                href=f"/incidents?area={row['area_id']}",
                className="warn-inc-link",
            )
            if auth.may("incidents")
            else html.Span(),
            html.H4(t("warn.timeline", lang)),
            html.Ul(timeline, className="warn-timeline"),
        ]
    )


def _actor(actor: str, lang: str) -> str:
    return t("warn.engine", lang) if actor == "engine" else actor


def _note(action: str, note: str, b: Backend, lang: str) -> str:
    if action in ("open", "level"):
        return t(f"warn.{note}", lang)  # the level it opened at, or changed to
    if action == "escalate":
        return area_name(b, note)
    return note


def _fmt(v: Any, lang: str) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x, lang) for x in v[:10]) + (" …" if len(v) > 10 else "")
    if isinstance(v, dict):
        return ", ".join(f"{_fmt(k, lang)} {_fmt(x, lang)}" for k, x in v.items())
    text = str(v)
    for prefix in ("cat.", "label.", "step.", "feed.", "stale."):
        got = t(prefix + text, lang)
        if got != prefix + text:
            return got
    return text
