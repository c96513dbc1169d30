"""Words inside Dash's own controls, in the page's language.

Dash's dropdowns say "Search", "No options found", its date pickers "Start Date /
End Date / Select Date" and AG Grid "No Rows To Show" unless told otherwise.
:func:`controls` gives every dropdown, date picker and grid of a layout the catalog's
words where the page set none;
:func:`wrap_pages` applies it to every registered page's layout (once per app)."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import dash_ag_grid as dag
from dash import dcc

from dashboard.i18n import t

MARK = "_wg_localised"


def dropdown_labels(lang: str) -> dict[str, str]:
    keys = (
        "select_all",
        "deselect_all",
        "selected_count",
        "search",
        "clear_search",
        "clear_selection",
        "no_options_found",
    )
    return {k: t(f"ctl.{k}", lang) for k in keys}


# AG Grid's own words (its overlays and pager) → catalog keys
GRID_WORDS = {
    "noRowsToShow": "ctl.grid.no_rows",
    "loadingOoo": "ctl.grid.loading",
    "page": "ctl.grid.page",
    "of": "ctl.grid.of",
    "to": "ctl.grid.to",
    "more": "ctl.grid.more",
}


def grid_words(lang: str) -> dict[str, str]:
    return {k: t(key, lang) for k, key in GRID_WORDS.items()}


def controls(tree: Any, lang: str) -> Any:
    """``tree`` with the words set on its dropdowns, date pickers and grids (in place)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(node)
            continue
        if not hasattr(node, "_prop_names"):
            continue
        if isinstance(node, dcc.Dropdown):
            _default(node, "labels", dropdown_labels(lang))
        elif isinstance(node, dcc.DatePickerRange):
            _default(node, "start_date_placeholder_text", t("ctl.start_date", lang))
            _default(node, "end_date_placeholder_text", t("ctl.end_date", lang))
        elif isinstance(node, dcc.DatePickerSingle):
            _default(node, "placeholder", t("ctl.date", lang))
        elif isinstance(node, dag.AgGrid):
            options = dict(getattr(node, "dashGridOptions", None) or {})
            options.setdefault("localeText", grid_words(lang))
            node.dashGridOptions = options
        children = getattr(node, "children", None)
        if children is not None:
            stack.append(children)
    return tree


def _default(node: Any, prop: str, value: Any) -> None:
    """Set a component's prop unless the page set it."""
    if getattr(node, prop, None) is None:
        setattr(node, prop, value)


def wrap_pages(registry: MutableMapping[str, Any], lang: Callable[[], str]) -> None:
    """Every page's layout function passes its result through :func:`controls`."""
    for page in registry.values():
        layout = page.get("layout")
        if not callable(layout) or getattr(layout, MARK, False):
            continue

        def localised(*a: Any, _layout: Callable[..., Any] = layout, **kw: Any) -> Any:
            return controls(_layout(*a, **kw), lang())

        setattr(localised, MARK, True)
        page["layout"] = localised
