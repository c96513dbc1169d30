"""事件工作台 — the incident workbench of the command centres: the queue of open incidents
in the viewer's scope (filters, SLA clock, server-side paging and sorting), one
incident's detail (timeline, map, linked video alerts and warnings) and the actions
(``pipelines.dispatch.actions``; offered and re-checked on the server).

``/incidents`` (``?area=…&due=overdue&status=…``) and ``/incidents/<incident_id>`` (or
``?id=``) for one incident's detail. Thin callbacks over
``dashboard.pages.incidents.queries`` and ``.detail`` (pure)."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import denied_panel, leaflet_map
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.assessment.components import grid
from dashboard.pages.incidents import queries as Q
from dashboard.pages.incidents.components import ROW_CLASS_RULES, columns, form_fields
from pipelines.spine.events import CATEGORIES, SEVERITIES, SOURCES

dash.register_page(
    __name__, path="/incidents", path_template="/incidents/<incident_id>", name="incidents"
)

SOON_HOURS = (1, 2, 4, 8, 24)


def view_of(query: dict[str, Any], incident_id: str | None) -> dict[str, Any]:
    """What the URL asks for (checked again by every callback): area, due, status, id."""
    out: dict[str, Any] = {}
    for key in ("area", "due", "status", "id"):
        v = query.get(key)
        if isinstance(v, str) and 0 < len(v) <= 64:
            out[key] = v
    if incident_id:
        out["id"] = incident_id
    return out


def _incident_area(b: Any, incident_id: str) -> str | None:
    """The incident's grid when the session may see it (refusals audited), else None."""
    from dashboard.pages.incidents.detail import incident_row

    iid = auth.clean_id(incident_id)
    row = incident_row(b.engine, iid) if iid else None
    if row is None:
        auth.refused("incidents", incident_id, "unknown incident")
        return None
    grant = auth.authorize(row["grid_id"], "incidents", target=iid)
    return grant.area_id if grant.granted else None


def layout(incident_id: str | None = None, **query: Any) -> Any:
    b = current()
    lang = L.lang()
    p = auth.principal()
    if p is None or p.wall or not auth.may("incidents"):
        return denied_panel(lang, auth.home_href(b.city))
    view = view_of(query, incident_id)
    if "id" in view and _incident_area(b, view["id"]) is None:
        view.pop("id")  # unknown or outside the scope (audited): the queue alone
    s = b.settings.dashboard
    row = b.city.area(p.scope)
    assert row is not None
    dd = {"color": "#111"}
    area_opts = [{"label": n, "value": a} for a, n, _ in Q.area_options(b.city, p.scope)]
    wanted = view.get("area")
    if (
        isinstance(wanted, str)
        and b.city.area(wanted) is not None
        and auth.allowed(b.city, wanted)
        and wanted not in {o["value"] for o in area_opts}
    ):  # a grid (from a link): offered as well
        area_opts.append({"label": b.area_names.get(wanted, wanted), "value": wanted})
    status0 = [view["status"]] if view.get("status") in Q.OPEN_STATUSES else []
    filters = html.Div(
        [
            dcc.Dropdown(
                id=ids.INC_STATUS,
                options=[{"label": t(f"step.{x}", lang), "value": x} for x in Q.OPEN_STATUSES],
                value=status0,
                multi=True,
                placeholder=t("inc.f.status", lang),
                style={"minWidth": 160, **dd},
            ),
            dcc.RadioItems(
                id=ids.INC_DUE,
                options=[
                    {"label": t(f"inc.due.{x}", lang), "value": x} for x in ("all", *Q.DUE_FILTERS)
                ],
                value=view.get("due") if view.get("due") in Q.DUE_FILTERS else "all",
                inline=True,
                className="inc-due",
            ),
            dcc.Dropdown(
                id=ids.INC_SOON,
                options=[{"label": f"{h} {t('inc.f.soon', lang)}", "value": h} for h in SOON_HOURS],
                value=2,
                clearable=False,
                searchable=False,
                style={"minWidth": 110, **dd},
            ),
            dcc.Dropdown(
                id=ids.INC_CATS,
                options=[{"label": t(f"cat.{c}", lang), "value": c} for c in CATEGORIES],
                multi=True,
                placeholder=t("inc.f.cats", lang),
                style={"minWidth": 150, **dd},
            ),
            dcc.Dropdown(
                id=ids.INC_SEV,
                options=[{"label": t(f"inc.sev.{v}", lang), "value": v} for v in SEVERITIES],
                multi=True,
                placeholder=t("inc.f.sev", lang),
                style={"minWidth": 120, **dd},
            ),
            dcc.Dropdown(
                id=ids.INC_SOURCES,
                options=[{"label": t(f"asm.src.{x}", lang), "value": x} for x in SOURCES],
                multi=True,
                placeholder=t("inc.f.sources", lang),
                style={"minWidth": 130, **dd},
            ),
            dcc.Dropdown(
                id=ids.INC_UNIT,
                options=[],
                placeholder=t("inc.f.unit", lang),
                style={"minWidth": 180, **dd},
            ),
            dcc.Dropdown(
                id=ids.INC_AREA,
                options=area_opts,
                value=view.get("area")
                if view.get("area") in {o["value"] for o in area_opts}
                else None,
                placeholder=t("inc.f.area", lang),
                style={"minWidth": 160, **dd},
            ),
            dcc.DatePickerRange(
                id=ids.INC_RANGE,
                className="asm-range inc-range",
                display_format="YYYY-MM-DD",
                first_day_of_week=1,
                month_format="YYYY年M月" if lang != "en" else "MMMM YYYY",
                start_date_placeholder_text=t("picker.start", lang),
                end_date_placeholder_text=t("picker.end", lang),
                clearable=True,
            ),
            dcc.Dropdown(
                id=ids.INC_SORT,
                options=[{"label": t(f"inc.sort.{c}", lang), "value": c} for c in Q.SORTS],
                value="due_ms",
                clearable=False,
                searchable=False,
                style={"minWidth": 140, **dd},
            ),
            dcc.Checklist(
                id=ids.INC_DESC,
                options=[{"label": " " + t("inc.f.desc", lang), "value": "desc"}],
                value=[],
                inline=True,
            ),
        ],
        className="pan-toolbar inc-filters",
    )
    pager = html.Div(
        [
            html.Button(t("inc.prev", lang), id=ids.INC_PREV, n_clicks=0, className="asm-btn"),
            html.Span(id=ids.INC_INFO, className="wg-muted inc-info"),
            html.Button(t("inc.next", lang), id=ids.INC_NEXT, n_clicks=0, className="asm-btn"),
            html.Span(t("inc.f.size", lang), className="wg-muted"),
            dcc.Dropdown(
                id=ids.INC_SIZE,
                options=[{"label": str(n), "value": n} for n in Q.PAGE_SIZES],
                value=50,
                clearable=False,
                searchable=False,
                style={"minWidth": 80, **dd},
            ),
        ],
        className="inc-pager",
    )
    can_act = auth.may("incident_actions")
    bulk = html.Div(
        [
            html.Span(id=ids.INCA_BULK_MSG, className="wg-muted"),
            dcc.Dropdown(
                id=ids.INCA_BULK_UNIT,
                options=[],
                placeholder=t("inca.unit", lang),
                style={"minWidth": 220, **dd},
            ),
            dcc.Dropdown(
                id=ids.INCA_BULK_HANDLER,
                options=[],
                placeholder=t("inca.handler", lang),
                style={"minWidth": 180, **dd},
            ),
            html.Button(
                t("inca.bulk.go", lang), id=ids.INCA_BULK_GO, n_clicks=0, className="asm-btn"
            ),
            dcc.Store(id=ids.INCA_BULK_FORM, data=None),
        ],
        className="inc-bulk",
    )
    selection: dict[str, Any] = (
        {"rowSelection": {"mode": "multiRow", "enableClickSelection": False}} if can_act else {}
    )  # rows are picked for a bulk dispatch only by those who may dispatch
    table = grid(
        ids.INC_GRID, columns(lang), "100%", row_class_rules=ROW_CLASS_RULES, lang=lang, **selection
    )
    the_map = leaflet_map(
        ids.INC_MAP,
        "inc-geo",
        f"/geo/area/{p.scope}.json",
        (row["lon"], row["lat"]),
        13,
        s.tile_url,
        s.tile_crs == "gcj02",
        markers_id=ids.INC_MARKER,
    )
    actions = html.Div(
        [
            html.H4(t("inca.title", lang)),
            html.Div(id=ids.INCA_BTNS, className="warn-btns"),
            dcc.Store(id=ids.INCA_FORM, data=None),
            dcc.Store(id=ids.INCA_PENDING, data=None),
            html.Div(
                [
                    *form_fields(lang),
                    html.Div(
                        [
                            html.Button(
                                t("inca.submit", lang),
                                id=ids.INCA_SUBMIT,
                                n_clicks=0,
                                className="warn-btn",
                            ),
                            html.Button(
                                t("inca.cancel", lang),
                                id=ids.INCA_CANCEL,
                                n_clicks=0,
                                className="warn-btn",
                            ),
                        ],
                        className="warn-btns",
                    ),
                ],
                id=ids.INCA_FIELDS,
                className="inca-form",
                style={"display": "none"},
            ),
            html.Div(id=ids.INCA_MSG, className="warn-msg"),
        ],
        id=ids.INCA_BOX,
        className="inca-box",
    )
    if not can_act:  # a role that may not act gets no action components at all
        bulk = actions = html.Div()
    return html.Div(
        [
            dcc.Interval(id=ids.INC_TICK, interval=int(s.refresh_s * 1000), n_intervals=0),
            dcc.Store(id=ids.INC_VIEW, data=view),
            dcc.Store(id=ids.INC_SEL, data=view.get("id")),
            dcc.Store(id=ids.INC_PAGE, data=0),
            dcc.Store(id=ids.INC_NPAGES, data=1),
            dcc.Store(id=ids.INC_SHOWN, data=None),
            dcc.Store(id=ids.INC_DONE, data=0),
            html.Div([html.H2(t("nav.incidents", lang))], className="warn-head"),
            filters,
            html.Div(
                [
                    html.Div(
                        [
                            html.Div([html.H3(t("inc.queue", lang)), pager], className="inc-qhead"),
                            html.Div(table, className="inc-table-wrap"),
                            bulk,
                        ],
                        className="wg-panel inc-queue",
                    ),
                    html.Div(
                        [
                            html.Div(the_map, id=ids.INC_MAPBOX, className="inc-map"),
                            html.Div(
                                html.P(t("inc.pick", lang), className="wg-muted"),
                                id=ids.INC_DETAIL,
                            ),
                            actions,
                            html.Div(id=ids.INC_MORE),
                        ],
                        className="wg-panel inc-detail",
                    ),
                ],
                className="inc-grid",
            ),
        ],
        className="inc-page",
    )


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
