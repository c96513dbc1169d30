"""Builders of what the incident workbench renders: the queue's columns and rows, the
detail (facts, map marker, timeline, linked alerts and warnings) and the action form."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from dash import dcc, html

from dashboard import ids
from dashboard.components.columns import fit
from dashboard.i18n import prefixed, t
from dashboard.pages.incidents import queries as Q
from pipelines.dispatch.flows import Flows
from pipelines.dispatch.units import UNIT_TYPES

# Which form fields each action may carry: the matrix's RECORDS, what any flow stage it
# ends may require, and the dispatch's optional deadline (the core checks the request).
ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "accept": ("note",),
    "dispatch": ("unit", "handler", "due", "reason", "note"),
    "handle": ("note",),
    "return": ("reason",),
    "escalate": ("reason",),
    "resolve": ("note", "photo"),
    "verify_pass": ("onsite", "note"),
    "verify_fail": ("reason", "onsite"),
    "close": ("level", "note"),
    "merge": ("dup", "reason"),
}
# The core's request field → the form field that records it ("target": a unit or worker).
REQUEST_FIELD = {
    "target": "unit_or_handler",
    "reason": "reason",
    "note": "note",
    "photo_url": "photo",
    "onsite_by": "onsite",
    "level": "level",
    "duplicate_of": "dup",
}
FIELDS = ("unit", "handler", "reason", "note", "photo", "onsite", "level", "dup", "due")


def required_fields(action: str, incident: dict[str, Any], flows: Flows) -> set[str]:
    """The form fields this action must carry on this incident (the core's
    :func:`pipelines.dispatch.actions.required`: the matrix's records plus the
    ``requires`` of the flow stage it ends)."""
    from pipelines.dispatch.actions import required

    return {REQUEST_FIELD[f] for f in required(action, incident, flows) if f in REQUEST_FIELD}


def shown_fields(action: str, incident: dict[str, Any], flows: Flows) -> set[str]:
    """What the form shows: the action's own fields and whatever the flow requires."""
    need = required_fields(action, incident, flows)
    return (
        set(ACTION_FIELDS.get(action, ()))
        | need
        | ({"unit", "handler"} if "unit_or_handler" in need else set())
    )


def stage_word(status: str, lang: str) -> str:
    """A lifecycle step as a stage's name (capitalised in English: it heads a cell)."""
    word = t(f"step.{status}", lang)
    return word[:1].upper() + word[1:] if lang == "en" else word


def when(ms: int | None, tz: str, fmt: str = "%m-%d %H:%M") -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime(fmt)


def columns(lang: str) -> list[dict[str, Any]]:
    """The queue's columns (sorting is the server's: the grid's own is off); the columns
    of catalog words are wide enough for their widest word in this language."""

    def col(field: str, key: str, **kw: Any) -> dict[str, Any]:
        wrap = {"wrapText": True, "autoHeight": True}  # a long name wraps, never "…"
        return {
            "field": field,
            "headerName": t(key, lang),
            "sortable": False,
            "flex": 1,
            **wrap,
            **kw,
        }

    return [
        col(
            "incident_id",
            "inc.col.id",
            cellClass="wg-ident inc-link",
            minWidth=170,
        ),
        col("status", "inc.col.status", minWidth=fit(prefixed("step.", lang).values(), 80)),
        col("clock", "inc.col.clock", minWidth=140, cellClass="inc-clock"),
        col("category", "inc.col.category", minWidth=fit(prefixed("cat.", lang).values(), 90)),
        col("severity", "inc.col.severity", minWidth=fit(prefixed("inc.sev.", lang).values(), 80)),
        col("source", "inc.col.source", minWidth=fit(prefixed("asm.src.", lang).values(), 100)),
        col("area", "inc.col.area", minWidth=130),
        col("reported", "inc.col.reported", minWidth=110),
        col("unit", "inc.col.unit", minWidth=120),
        col("level", "inc.col.level", minWidth=fit(prefixed("level.", lang).values(), 70)),
    ]


ROW_CLASS_RULES = {"inc-overdue": "params.data.overdue === true"}


def row_data(
    frame: pl.DataFrame, lang: str, tz: str, names: dict[str, str], units: dict[str, str]
) -> list[dict[str, Any]]:
    """The page's rows as the grid shows them (pure): localised words, the SLA clock."""
    out = []
    for r in frame.iter_rows(named=True):
        left = r.get("left_ms")
        out.append(
            {
                "id": r["incident_id"],
                "incident_id": r["incident_id"],
                "status": stage_word(str(r["status"]), lang),
                "clock": Q.clock_words(left, lang),
                "overdue": bool(left is not None and left < 0),
                "category": t(f"cat.{r['category']}", lang),
                "severity": t(f"inc.sev.{r['severity']}", lang),
                "source": t(f"asm.src.{r['source']}", lang) if r.get("source") else "—",
                "area": names.get(r.get("grid_id") or "", r.get("grid_id") or "—"),
                "reported": when(r.get("reported_ms"), tz),
                "unit": units.get(r.get("unit_id") or "", r.get("unit_id") or "—"),
                "level": t(f"level.{r['level']}", lang) if r.get("level") else "—",
                "n_events": r.get("n_events"),
            }
        )
    return out


def marker(incident: dict[str, Any]) -> dict[str, Any]:
    """The incident as one map point (red when overdue)."""
    props = {"k": "inc", "id": incident["incident_id"], "r": 9, "c": "#eb5757"}
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [float(incident["lon"]), float(incident["lat"])],
                },
                "properties": props,
            }
        ],
    }


def _dl(facts: list[tuple[str, Any]]) -> html.Dl:
    return html.Dl([x for k, v in facts for x in (html.Dt(k), html.Dd(v))], className="warn-dl")


def _link(url: str | None) -> Any:
    if not url or not str(url).startswith(("http://", "https://")):
        return "—"
    return html.A(str(url)[:80], href=str(url), target="_blank", rel="noopener noreferrer")


def person(pid: str | None, names: dict[str, str], sees_names: bool, lang: str) -> str:
    """A person as the viewer may see them: a rostered worker's name (with the id) for
    roles that see names, else "a grid worker"; any other actor (an account) as is."""
    if not pid:
        return "—"
    if pid in names:
        return f"{names[pid]}（{pid}）" if sees_names else t("inc.worker", lang)
    return pid


def detail_panel(
    incident: dict[str, Any],
    events: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    warnings: list[dict[str, Any]],
    *,
    lang: str,
    tz: str,
    left_ms: int | None,
    due_ms: int | None,
    area_names: dict[str, str],
    workers: dict[str, str],
    sees_names: bool,
    units: dict[str, str],
) -> tuple[list[Any], list[Any]]:
    """The incident's facts (above the actions); its timeline, photos, linked alerts and
    warnings (below them)."""

    def who(pid: str | None) -> str:
        return person(pid, workers, sees_names, lang)

    grid = str(incident.get("grid_id") or "")
    facts: list[tuple[str, Any]] = [
        (t("inc.field.status", lang), stage_word(str(incident["status"]), lang)),
        (
            t("inc.field.clock", lang),
            html.Span(
                Q.clock_words(left_ms, lang),
                className="inc-clock" + (" late" if left_ms is not None and left_ms < 0 else ""),
            ),
        ),
        (t("inc.field.due", lang), when(due_ms, tz)),
        (t("inc.field.category", lang), t(f"cat.{incident['category']}", lang)),
        (t("inc.field.severity", lang), t(f"inc.sev.{incident['severity']}", lang)),
        (
            t("inc.field.source", lang),
            t(f"asm.src.{incident['source']}", lang) if incident.get("source") else "—",
        ),
        (t("inc.field.reporter", lang), who(incident.get("reporter_id"))),
        (t("inc.field.reported", lang), when(incident.get("reported_ms"), tz, "%Y-%m-%d %H:%M")),
        (
            t("inc.field.area", lang),
            dcc.Link(area_names.get(grid, grid), href=f"/area/{grid}", title=grid),
        ),
    ]
    if incident.get("unit_id"):
        unit = str(incident["unit_id"])
        facts.append((t("inc.field.unit", lang), units.get(unit, unit)))
    if incident.get("handler_id"):
        facts.append((t("inc.field.handler", lang), who(incident.get("handler_id"))))
    if incident.get("level"):
        facts.append((t("inc.field.level", lang), t(f"level.{incident['level']}", lang)))
    if incident.get("duplicate_of"):
        dup = str(incident["duplicate_of"])
        facts.append((t("inc.field.dup", lang), dcc.Link(dup, href=f"/incidents/{dup}")))
    if incident.get("description"):
        facts.append((t("inc.field.description", lang), str(incident["description"])[:500]))
    timeline = [_event(e, lang, tz, who, units) for e in events]
    photos = [e["photo_url"] for e in events if e.get("photo_url")]
    head = [
        html.H3(
            [
                html.Span(incident["incident_id"], className="wg-ident"),
                " ",
                html.Span(t(f"step.{incident['status']}", lang), className="chip blue"),
            ]
        ),
        _dl(facts),
    ]
    return head, [
        html.H4(t("inc.timeline", lang)),
        html.Ol(timeline, className="warn-timeline inc-timeline"),
        html.H4(t("inc.media", lang)),
        html.Ul([html.Li(_link(u)) for u in photos])
        if photos
        else html.P(t("inc.none", lang), className="wg-muted"),
        html.H4(t("inc.video", lang, n=len(alerts))),
        html.Ul(
            [
                html.Li(
                    [
                        html.Span(when(a["ts_ms"], tz, "%H:%M:%S"), className="wg-muted"),
                        f" {t('label.' + a['label'], lang)} · ",
                        html.Span(a["camera_id"], className="wg-ident"),
                        f" · {float(a['score']):.2f}",
                    ]
                )
                for a in alerts
            ]
        )
        if alerts
        else html.P(t("inc.none", lang), className="wg-muted"),
        html.H4(t("inc.warnings", lang, n=len(warnings))),
        html.Ul(
            [
                html.Li(
                    [
                        html.Span(t(f"warn.{w['level']}", lang), className=f"chip {w['level']}"),
                        " ",
                        dcc.Link(
                            t(f"rule.{w['rule']}", lang),
                            href=f"/warnings?id={w['warning_id']}",
                        ),
                        f" · {area_names.get(w['area_id'], w['area_id'])}",
                        f" · {t('wstatus.' + w['status'], lang)}",
                        f" · {t('inc.names_it', lang)}" if w.get("names_it") else "",
                    ]
                )
                for w in warnings
            ]
        )
        if warnings
        else html.P(t("inc.none", lang), className="wg-muted"),
    ]


def _event(e: dict[str, Any], lang: str, tz: str, who: Any, units: dict[str, str]) -> html.Li:
    parts: list[Any] = [
        html.Span(when(e["ts_ms"], tz, "%m-%d %H:%M:%S"), className="wg-muted"),
        " ",
        html.B(t(f"step.{e['step']}", lang)),
    ]
    actor = e.get("actor_id") or (e.get("reporter_id") if e["step"] == "reported" else None)
    bits: list[tuple[str, Any]] = []
    if actor:
        bits.append((t("inc.tl.actor", lang), who(actor)))
    if e.get("unit_id"):
        bits.append((t("inc.tl.unit", lang), units.get(e["unit_id"], e["unit_id"])))
    if e.get("handler_id") and e["step"] in ("dispatched", "handling"):
        bits.append((t("inc.tl.worker", lang), who(e["handler_id"])))
    if e.get("due_ms"):
        bits.append((t("inc.tl.due", lang), when(e["due_ms"], tz)))
    if e.get("onsite_by"):
        bits.append((t("inc.tl.onsite", lang), who(e["onsite_by"])))
    if e.get("level") and e["step"] in ("escalated", "closed"):
        bits.append((t("inc.tl.level", lang), t(f"level.{e['level']}", lang)))
    if e.get("duplicate_of"):
        bits.append((t("inc.tl.dup", lang), e["duplicate_of"]))
    if e.get("reason"):
        bits.append((t("inc.tl.reason", lang), e["reason"]))
    if e.get("note"):
        bits.append((t("inc.tl.note", lang), e["note"]))
    for label, value in bits:
        parts += [" · ", f"{label} ", value]
    if e.get("photo_url"):
        parts += [" · ", _link(e["photo_url"])]
    return html.Li(parts, className=f"inc-step {e['step']}")


def unit_label(u: dict[str, Any], lang: str) -> str:
    kind = UNIT_TYPES.get(str(u.get("type")))
    kind_name = (kind.en if lang == "en" else kind.zh) if kind else str(u.get("type"))
    return f"{u['name']} · {kind_name}"


def form_fields(lang: str) -> list[Any]:
    """Every field an action may ask for, hidden until an action opens the form."""
    hidden = {"display": "none"}

    def box(name: str, control: Any) -> html.Div:
        return html.Div(
            [html.Label(t(f"inca.{name}", lang), className="wg-muted"), control],
            id=f"inca-f-{name}",
            className="inca-field",
            style=hidden,
        )

    dropdown: dict[str, Any] = {"style": {"minWidth": 220, "color": "#111"}, "clearable": True}
    return [
        box("unit", dcc.Dropdown(id=ids.INCA_UNIT, options=[], **dropdown)),
        box("handler", dcc.Dropdown(id=ids.INCA_HANDLER, options=[], **dropdown)),
        box("reason", dcc.Input(id=ids.INCA_REASON, type="text", maxLength=500)),
        box("note", dcc.Textarea(id=ids.INCA_NOTE, maxLength=2000)),
        box("photo", dcc.Input(id=ids.INCA_PHOTO, type="url", maxLength=512)),
        box("onsite", dcc.Dropdown(id=ids.INCA_ONSITE, options=[], **dropdown)),
        box("level", dcc.Dropdown(id=ids.INCA_LEVEL, options=[], **dropdown)),
        box("dup", dcc.Input(id=ids.INCA_DUP, type="text", maxLength=64)),
        box("due", dcc.Input(id=ids.INCA_DUE, type="number", min=0.25, max=2160, step=0.25)),
    ]
