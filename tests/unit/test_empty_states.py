"""Every chart, list and tile of the dashboard, empty and sparse: an empty input gives the
empty state (暂无数据 / "No data", no axes — never Plotly's −1…1), a count axis has whole
ticks, and a rate without a sample is grey, not green.

The figure functions are found by name (every ``*_figure`` in dashboard/), so a new chart
fails here until it has a row in FIGURE_INPUTS."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dash
import pytest

import dashboard
from dashboard.components import charts
from dashboard.components.panels import hotspot_list, kpi_tiles, ticker_list
from dashboard.pages.work.components import activity_table
from dashboard.pages.work.components import kpi_tiles as work_tiles

TZ = "Asia/Shanghai"
HOURS = [497_000 + i for i in range(4)]  # epoch hours

# name → (empty input, sparse counts input, the counts drawn on a count axis)
FIGURE_INPUTS: dict[str, tuple[Callable[[str], Any], Callable[[str], Any], str | None]] = {
    "trend_figure": (
        lambda lang: ({"hours": [], "reports": [], "video": []}, lang, TZ),
        lambda lang: ({"hours": HOURS, "reports": [0, 1, 3, 2], "video": [0, 0, 1, 0]}, lang, TZ),
        "yaxis",
    ),
    "category_figure": (
        lambda lang: ({}, lang),
        lambda lang: ({"fire": 1, "dispute": 3}, lang),
        "xaxis",
    ),
    "label_figure": (
        lambda lang: ({}, lang),
        lambda lang: ({"smoke_fire": 2}, lang),
        None,  # a pie: no axis
    ),
}


def registers_a_page(mod: pkgutil.ModuleInfo) -> bool:
    """A page module (it calls ``dash.register_page``): importing it here, under its
    package name, would add it to Dash's page registry a second time once an app exists
    (the app imports its pages folder as ``pages.*``) and break later tests' apps."""
    spec = mod.module_finder.find_spec(mod.name, None)  # type: ignore[call-arg]
    origin = spec.origin if spec else None
    return bool(origin) and "register_page(" in Path(origin).read_text(encoding="utf-8")


def figure_functions() -> dict[str, Callable[..., Any]]:
    """Every public ``*_figure`` function defined in the dashboard package."""
    found: dict[str, Callable[..., Any]] = {}
    for mod in pkgutil.walk_packages(dashboard.__path__, "dashboard."):
        if mod.name.endswith(("app", "wsgi")) or registers_a_page(mod):
            continue  # figures live in components / queries
        m = importlib.import_module(mod.name)
        for name, fn in inspect.getmembers(m, inspect.isfunction):
            if name.endswith("_figure") and fn.__module__ == m.__name__:
                found[name] = fn
    return found


FIGURES = figure_functions()


def test_every_figure_function_has_inputs_here() -> None:
    assert set(FIGURES) - {"empty_figure", "blank_figure"} == set(FIGURE_INPUTS)


def graph_calls() -> list[tuple[str, int, set[str]]]:
    """Every ``dcc.Graph(...)`` written in dashboard/: file, line and keyword names."""
    out = []
    for path in sorted(Path(dashboard.__path__[0]).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "Graph":
                assert isinstance(node, ast.Call)
                out.append((path.name, node.lineno, {k.arg or "" for k in node.keywords}))
    return out


def test_every_graph_starts_blank_not_as_plotlys_white_box() -> None:
    """Before its first answer a graph shows its ``figure``; without one Plotly draws a white
    box with axes from 0 to 6 on the dark screen, for as long as the first refresh takes
    (seconds on a loaded server, as on a time-machine moment)."""
    calls = graph_calls()
    assert len(calls) >= 2
    assert [(f, n) for f, n, kw in calls if "figure" not in kw] == []
    fig = charts.blank_figure()
    lay = fig["layout"]
    assert fig["data"] == [] and "annotations" not in lay
    assert lay["paper_bgcolor"] == lay["plot_bgcolor"] == "rgba(0,0,0,0)"
    assert lay["xaxis"]["visible"] is False and lay["yaxis"]["visible"] is False


def test_finding_the_figures_registered_no_page() -> None:
    """(A page registered here as ``dashboard.pages.*`` would duplicate the app's
    ``pages.*`` and break every later test's app, depending on the order tests run in.)"""
    assert not [k for k in dash.page_registry if k.startswith("dashboard.")]


def is_empty_state(fig: dict[str, Any], word: str) -> bool:
    lay = fig["layout"]
    texts = [a.get("text") for a in lay.get("annotations", [])]
    return (
        not fig["data"]
        and word in texts
        and lay["xaxis"].get("visible") is False
        and lay["yaxis"].get("visible") is False
    )


@pytest.mark.parametrize("lang,word", [("zh-CN", "暂无数据"), ("en", "No data")])
@pytest.mark.parametrize("name", sorted(FIGURE_INPUTS))
def test_empty_input_gives_the_empty_state(name: str, lang: str, word: str) -> None:
    empty, _sparse, _axis = FIGURE_INPUTS[name]
    fig = FIGURES[name](*empty(lang))
    assert is_empty_state(fig, word), json.dumps(fig, ensure_ascii=False)[:400]
    assert "[-1, 1]" not in json.dumps(fig)


@pytest.mark.parametrize("name", sorted(FIGURE_INPUTS))
def test_sparse_counts_draw_with_whole_ticks(name: str) -> None:
    _empty, sparse, axis = FIGURE_INPUTS[name]
    fig = FIGURES[name](*sparse("zh-CN"))
    assert fig["data"] and not is_empty_state(fig, "暂无数据")
    if axis is None:
        return
    ax = fig["layout"][axis]
    assert ax["tickformat"] == ",d" and ax["tick0"] == 0
    assert isinstance(ax["dtick"], int) and ax["dtick"] == 1  # counts up to 3: 0 1 2 3
    assert ax["range"][0] == 0 and ax["rangemode"] == "nonnegative"


@pytest.mark.parametrize(
    "top,step", [(0, 1), (1, 1), (5, 1), (6, 2), (11, 5), (40, 10), (483, 100), (1864, 500)]
)
def test_count_axis_steps_are_whole(top: int, step: int) -> None:
    # about five ticks of 1, 2 or 5 × 10^k, never below 1
    assert charts.nice_step(top) == step
    ax = charts.count_axis([top])
    assert ax["dtick"] == step and ax["range"][1] >= top


def texts(component: Any) -> list[str]:
    out: list[str] = []

    def walk(c: Any) -> None:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list | tuple):
            for x in c:
                walk(x)
        elif hasattr(c, "children"):
            walk(c.children)

    walk(component)
    return out


@pytest.mark.parametrize("lang,word", [("zh-CN", "暂无数据"), ("en", "No data")])
def test_empty_lists_and_tables_say_no_data(lang: str, word: str) -> None:
    assert word in texts(hotspot_list([], "open", lang=lang))
    assert word in texts(ticker_list([], lang))
    assert word in texts(activity_table([], {}, lang, TZ))


def classes(tiles: list[Any]) -> dict[str, str]:
    """label → the value's class, for every tile."""
    out = {}
    for tile in tiles:
        kids = tile.children if isinstance(tile.children, list) else []
        if len(kids) >= 2 and hasattr(kids[1], "className"):
            out[str(kids[0].children)] = kids[1].className
    return out


@pytest.mark.parametrize(
    "share,closed,cls",
    [
        (None, 0, "value nodata"),  # nothing closed: no sample, grey (was green "0.0%")
        (0.0, 0, "value nodata"),
        (0.0, 12, "value bad"),  # 0 of 12 closed inside the grid: red
        (0.45, 20, "value "),  # between the two targets: neutral
        (0.75, 20, "value good"),
    ],
)
def test_grid_share_colour_means_the_right_thing(share: Any, closed: int, cls: str) -> None:
    k = {"grid_share": share, "closed": closed, "coverage": 0.9, "grids": 10}
    got = classes(kpi_tiles(k, "zh-CN"))
    assert got["小事不出网格"] == cls


def test_work_tiles_without_people_or_grids_are_grey() -> None:
    k = {"on_duty": 0, "online": 0, "offline": 0, "in_own": 0, "coverage": None}
    k |= {"patrolled": 0, "grids": 0, "unpatrolled": 0}
    got = classes(work_tiles(k, "zh-CN"))
    assert got["在线"].endswith("nodata") and got["今日未巡查网格"].endswith("nodata"), got
