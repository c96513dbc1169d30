"""Units (处置单位): the departments and bodies incidents are dispatched to.

A unit has a type from :data:`UNIT_TYPES` (the registry the flows name as "responsible"),
a level (city / district / street) and the area it serves at that level. The table is a
city table: it names area ids, so a city switch clears it (``city.binding``).

The CSV import works like the roster's: a header, one unit per line, every problem
reported by line number, and nothing written unless the whole file is valid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Column, Engine, String, Table, select

from pipelines.access.text import clean_name
from pipelines.city.geography import City
from pipelines.spine import store
from pipelines.spine.csvimport import RowError, read_rows, write_register


class UnitType(NamedTuple):
    zh: str
    en: str
    levels: tuple[str, ...]  # the area levels a unit of this type may serve


# The registry of unit types. Flows name these as the unit responsible for a stage; the
# command-centre tiers (grid / community / street / district) are types too, so a stage
# can be "the street centre" as well as "the fire brigade".
UNIT_TYPES: dict[str, UnitType] = {
    "grid": UnitType("网格员", "Grid worker", ("street",)),
    "community": UnitType("社区", "Community", ("street",)),
    "street": UnitType("街道指挥中心", "Street command centre", ("street",)),
    "district": UnitType("区指挥中心", "District command centre", ("district",)),
    "hotline": UnitType("12345 热线", "12345 hotline", ("city", "district")),
    "city_management": UnitType("城管", "City management", ("city", "district", "street")),
    "enforcement": UnitType("综合执法", "Law enforcement", ("district", "street")),
    "police": UnitType("公安", "Police", ("city", "district", "street")),
    "fire": UnitType("消防", "Fire and rescue", ("city", "district", "street")),
    "emergency": UnitType("应急管理", "Emergency management", ("city", "district")),
    "market": UnitType("市场监管", "Market regulation", ("city", "district", "street")),
    "ecology": UnitType("生态环境", "Ecology and environment", ("city", "district")),
    "housing": UnitType("住建", "Housing and construction", ("city", "district")),
    "transport": UnitType("交通", "Transport", ("city", "district")),
    "water": UnitType("水务", "Water", ("city", "district")),
    "health": UnitType("卫健", "Health", ("city", "district")),
    "civil_affairs": UnitType("民政", "Civil affairs", ("city", "district")),
    "justice": UnitType("司法", "Justice", ("city", "district", "street")),
}
# Chinese names accepted in a CSV's type column, as for the roster's worker types.
TYPE_ALIASES = {t.zh: code for code, t in UNIT_TYPES.items()}
UNIT_LEVELS = ("city", "district", "street")
UNIT_COLUMNS = ("unit_id", "name", "type", "level", "area_id")
UNIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

units = Table(
    "units",
    store.metadata,
    Column("unit_id", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("type", String(32), nullable=False, index=True),
    Column("level", String(16), nullable=False),
    Column("area_id", String(32), nullable=False, index=True),
)


def parse_units_csv(text: str, city: City) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Rows ready for :data:`units` and every problem found, by line number.

    Columns (header required, any order): unit_id, name, type (a code of
    :data:`UNIT_TYPES` or its Chinese name), level (city / district / street) and
    area_id (an area of that level in the city, served by a unit of that type).
    """
    lines, errors = read_rows(text, UNIT_COLUMNS, UNIT_COLUMNS)
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for line, get in lines:
        row, problems = _unit_row(get, city)
        uid = get["unit_id"]
        if uid in first_line:
            problems.insert(0, ("unit_id", f"duplicate of line {first_line[uid]}"))
        elif UNIT_ID.match(uid):
            first_line[uid] = line
        errors.extend(RowError(line, c, m) for c, m in problems)
        if not problems:
            rows.append(row)
    return rows, sorted(errors, key=lambda e: e.line)  # file order (stable per line)


def _unit_row(get: dict[str, str], city: City) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    name = clean_name(get["name"])  # no bidi or control characters on screen
    if not UNIT_ID.match(get["unit_id"]):
        problems.append(("unit_id", "letters, digits, _ . - (1–64)"))
    if not name or len(name) > 64:
        problems.append(("name", "required, at most 64 characters"))
    code = TYPE_ALIASES.get(get["type"], get["type"].lower())
    level, area_id = get["level"].lower(), get["area_id"]
    if code not in UNIT_TYPES:
        problems.append(("type", f"unknown type {get['type']!r}"))
    if level not in UNIT_LEVELS:
        problems.append(("level", f"one of {', '.join(UNIT_LEVELS)}"))
    elif code in UNIT_TYPES and level not in UNIT_TYPES[code].levels:
        allowed = ", ".join(UNIT_TYPES[code].levels)
        problems.append(("level", f"a {code} unit serves a {allowed}"))
    if city.level_of(area_id) != level:
        problems.append(("area_id", f"no {level} {area_id!r} in this city"))
    row = {"unit_id": get["unit_id"], "name": name, "type": code, "level": level}
    return row | {"area_id": area_id}, problems


def import_units(
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    *,
    replace: bool,
    actor: str,
    now_ms: int,
) -> int:
    """Write the rows in one transaction (all or nothing) and audit the import
    (``replace``: the file is the whole list; otherwise add or update by unit_id)."""
    return write_register(
        engine,
        units,
        rows,
        key="unit_id",
        replace=replace,
        actor=actor,
        action="units_import",
        now_ms=now_ms,
    )


def list_units(engine: Engine, area_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every unit (or those serving one of ``area_ids``), by level, area, type, id."""
    q = select(units)
    if area_ids is not None:
        q = q.where(units.c.area_id.in_(list(area_ids)))
    order = {lvl: i for i, lvl in enumerate(UNIT_LEVELS)}
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return sorted(rows, key=lambda r: (order[r["level"]], r["area_id"], r["type"], r["unit_id"]))


# Demo seeding: which unit types the demo city has at each level, and their name suffixes.
_DEMO: dict[str, tuple[tuple[str, str], ...]] = {
    "city": (("hotline", "12345 政务服务热线"), ("emergency", "应急管理局")),
    "district": (
        ("district", "社会治理指挥中心"),
        ("city_management", "城市管理局"),
        ("enforcement", "综合行政执法局"),
        ("police", "公安分局"),
        ("fire", "消防救援大队"),
        ("emergency", "应急管理局"),
        ("market", "市场监督管理局"),
        ("ecology", "生态环境局"),
        ("housing", "住房和城乡建设局"),
        ("transport", "交通运输局"),
        ("water", "水务局"),
        ("health", "卫生健康委员会"),
        ("civil_affairs", "民政局"),
        ("justice", "司法局"),
    ),
    "street": (
        ("street", "网格化服务管理中心"),
        ("community", "社区工作站"),
        ("enforcement", "综合执法队"),
        ("police", "派出所"),
        ("grid", "网格工作站"),
    ),
}


def demo_units(city: City) -> list[dict[str, Any]]:
    """One unit of each demo type per area of its level, named after the area."""
    rows: list[dict[str, Any]] = []
    for level, kinds in _DEMO.items():
        for area_id in city.ids(level):
            area = city.area(area_id) or {}
            for code, suffix in kinds:
                rows.append(
                    {
                        "unit_id": f"{area_id}-{code}",
                        "name": f"{area.get('name', area_id)}{suffix}"[:64],
                        "type": code,
                        "level": level,
                        "area_id": area_id,
                    }
                )
    return rows
