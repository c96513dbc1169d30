"""Grid-work tables show areas, grids and workers by name, the id on hover (title)."""

from __future__ import annotations

from typing import Any

from dashboard.pages.work import components as C

NAMES = {"320102001": "梅园新村街道", "320102-001-007": "梅园新村街道第7网格"}


def titled(node: Any) -> dict[str, str]:
    """text → title of every component with a title, anywhere in the tree."""
    out: dict[str, str] = {}
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list | tuple):
            stack.extend(n)
            continue
        if not hasattr(n, "_prop_names"):
            continue
        children = getattr(n, "children", None)
        if getattr(n, "title", None):
            parts = children if isinstance(children, list) else [children]
            out[" ".join(str(p) for p in parts if isinstance(p, str))] = n.title
        if children is not None:
            stack.append(children)
    return out


def test_children_table_names_with_ids() -> None:
    rows = [{"area_id": "320102001", "on_duty": 3, "online": 2, "patrolled": 1, "grids": 4}]
    got = titled(C.children_table(rows, NAMES, "zh-CN", "street"))
    assert got == {"梅园新村街道": "320102001"}


def test_activity_table_names_with_ids() -> None:
    rows = [
        {
            "worker_id": "W0042",
            "name": "张伟",
            "type": "full_time",
            "grid_id": "320102-001-007",
            "phone_masked": "138****0000",
            "reports": 1,
            "handled": 0,
            "distance_m": 1200.0,
            "own_grid_ms": 3_600_000,
            "last_seen_ms": None,
            "online": True,
        }
    ]
    got = titled(C.activity_table(rows, NAMES, "zh-CN", "Asia/Shanghai"))
    assert got["张伟"] == "W0042" and got["梅园新村街道第7网格"] == "320102-001-007"
