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

from dashboard.i18n import prefixed, t

MARK = "_wg_localised"


def dropdown_labels(lang: str) -> Any:
    """dcc.Dropdown's own texts (its ``labels``), from the catalog's ``dropdown.*`` keys."""
    return prefixed("dropdown.", lang)


def grid_words(lang: str) -> dict[str, str]:
    """AG Grid's own texts (its ``localeText``), from the catalog's ``aggrid.*`` keys."""
    return prefixed("aggrid.", lang)


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
            _default(node, "start_date_placeholder_text", t("picker.start", lang))
            _default(node, "end_date_placeholder_text", t("picker.end", lang))
        elif isinstance(node, dcc.DatePickerSingle):
            _default(node, "placeholder", t("picker.date", lang))
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
