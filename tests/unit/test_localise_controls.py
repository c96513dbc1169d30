"""Dash's own words in dropdowns and date pickers come from the catalog (no "Search",
"Start Date" or "Select Date" left in Chinese mode); what a page set itself is kept."""

from __future__ import annotations

import dash_ag_grid as dag
import pytest
from dash import dcc, html

from dashboard.components import localise
from dashboard.i18n import t


def tree() -> html.Div:
    return html.Div(
        [
            html.Div(dcc.Dropdown(id="a", options=[])),
            dcc.DatePickerRange(id="b"),
            html.Div([html.Span("x"), dcc.DatePickerSingle(id="c")]),
            dcc.Dropdown(id="d", options=[], labels={"search": "own"}),
            dcc.DatePickerSingle(id="e", placeholder="own"),
            html.Div(dag.AgGrid(id="g", dashGridOptions={"animateRows": False})),
        ]
    )


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_every_control_gets_the_catalog_words(lang: str) -> None:
    root = localise.controls(tree(), lang)
    found = {c.id: c for c in _walk(root) if getattr(c, "id", None)}
    assert found["a"].labels["search"] == t("dropdown.search", lang)
    assert found["a"].labels["no_options_found"] == t("dropdown.no_options_found", lang)
    assert "{num_selected}" in found["a"].labels["selected_count"]  # Dash fills it in
    assert found["b"].start_date_placeholder_text == t("picker.start", lang)
    assert found["b"].end_date_placeholder_text == t("picker.end", lang)
    assert found["c"].placeholder == t("picker.date", lang)
    assert found["d"].labels == {"search": "own"} and found["e"].placeholder == "own"
    grid = found["g"].dashGridOptions
    assert grid["animateRows"] is False  # the page's own options kept
    assert grid["localeText"]["noRowsToShow"] == t("aggrid.noRowsToShow", lang)


def test_chinese_words_have_no_english() -> None:
    words = [*localise.dropdown_labels("zh-CN").values()]
    words += [t(k, "zh-CN") for k in ("picker.start", "picker.end", "picker.date")]
    words += list(localise.grid_words("zh-CN").values())
    for w in words:
        assert not any("a" <= ch.lower() <= "z" for ch in w.replace("{num_selected}", "")), w


def test_wrap_pages_wraps_each_layout_once() -> None:
    calls: list[str] = []

    def layout(**kw: object) -> html.Div:
        calls.append("x")
        return html.Div(dcc.Dropdown(id="q", options=[]))

    registry = {"p": {"layout": layout}, "static": {"layout": html.Div()}}
    localise.wrap_pages(registry, lambda: "zh-CN")
    localise.wrap_pages(registry, lambda: "zh-CN")  # a second app: not wrapped twice
    out = registry["p"]["layout"]()
    assert calls == ["x"] and out.children.labels["search"] == "搜索"


def _walk(node: object) -> list[object]:
    out: list[object] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list | tuple):
            stack.extend(n)
        elif hasattr(n, "_prop_names"):
            out.append(n)
            children = getattr(n, "children", None)
            if children is not None:  # a component may be falsy (len 0)
                stack.append(children)
    return out
