"""Units (处置单位): CSV import by line, all or nothing, audited; the demo city's units.

Expected errors are written from the column rules in ``parse_units_csv``'s docstring
(type a registry code or its Chinese name; the level one the type serves; the area an
area of that level in the city), with the lines counted here.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from pipelines.city.geography import City, demo_city
from pipelines.dispatch import flows as F
from pipelines.dispatch import units as U
from pipelines.spine import store

NOW = 1_796_000_000_000


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=150)


def _csv(city: City, lines: list[str]) -> str:
    return "\n".join(["unit_id,name,type,level,area_id", *lines]) + "\n"


def test_a_valid_file_is_read_with_chinese_type_names(city: City) -> None:
    d, s = city.ids("district")[0], city.ids("street")[0]
    rows, errors = U.parse_units_csv(
        "\ufeff"
        + _csv(city, [f"p1,某公安分局,公安,district,{d}", f"e1,执法队,enforcement,street,{s}"]),
        city,
    )
    assert errors == []
    assert [(r["unit_id"], r["type"], r["level"], r["area_id"]) for r in rows] == [
        ("p1", "police", "district", d),
        ("e1", "enforcement", "street", s),
    ]


def test_every_problem_is_reported_by_line(city: City) -> None:
    d, s = city.ids("district")[0], city.ids("street")[0]
    lines = [
        f"ok1,好单位,police,district,{d}",  # line 2: fine
        f"ok1,重复,police,district,{d}",  # 3: duplicate id
        f"x2,无类型,army,district,{d}",  # 4: unknown type
        f"x3,层级错,ecology,street,{s}",  # 5: ecology serves city/district, not a street
        f"x4,区域错,police,district,{s}",  # 6: a street id given as a district
        f"bad id!,名称,police,district,{d}",  # 7: id characters
        f"x6,,police,district,{d}",  # 8: no name
        "x7,too,few",  # 9: field count
        f"x8,级别,police,province,{d}",  # 10: unknown level
    ]
    rows, errors = U.parse_units_csv(_csv(city, lines), city)
    got = {(e.line, e.column) for e in errors}
    assert got == {
        (3, "unit_id"),
        (4, "type"),
        (5, "level"),
        (6, "area_id"),
        (7, "unit_id"),
        (8, "name"),
        (9, "-"),
        (10, "level"),
        (10, "area_id"),
    }
    assert [r["unit_id"] for r in rows] == ["ok1"]
    assert "duplicate of line 2" in next(str(e) for e in errors if e.line == 3)


def test_missing_columns_and_empty_files(city: City) -> None:
    assert [str(e) for e in U.parse_units_csv("", city)[1]] == ["line 1: -: empty file"]
    _, errors = U.parse_units_csv("unit_id,name,type\n", city)
    assert [(e.column, e.message) for e in errors] == [("level,area_id", "missing column")]
    assert [e.message for e in U.parse_units_csv(_csv(city, []), city)[1]] == ["no rows"]


def test_import_replaces_or_merges_and_is_audited(engine: Engine, city: City) -> None:
    d = city.ids("district")
    first = [f"a,甲,police,district,{d[0]}", f"b,乙,fire,district,{d[0]}"]
    rows, errors = U.parse_units_csv(_csv(city, first), city)
    assert not errors
    U.import_units(engine, rows, replace=True, actor="admin", now_ms=NOW)
    more, _ = U.parse_units_csv(_csv(city, [f"b,乙改,fire,district,{d[1]}"]), city)
    U.import_units(engine, more, replace=False, actor="admin", now_ms=NOW + 1)
    got = {r["unit_id"]: (r["name"], r["area_id"]) for r in U.list_units(engine)}
    assert got == {"a": ("甲", d[0]), "b": ("乙改", d[1])}
    assert [r["unit_id"] for r in U.list_units(engine, [d[1]])] == ["b"]
    U.import_units(engine, more, replace=True, actor="admin", now_ms=NOW + 2)
    assert [r["unit_id"] for r in U.list_units(engine)] == ["b"]
    with engine.connect() as conn:
        n = conn.execute(
            select(func.count())
            .select_from(store.audit_log)
            .where(store.audit_log.c.action == "units_import")
        ).scalar_one()
    assert n == 3


def test_the_demo_city_has_a_unit_for_every_stage_of_every_flow(city: City) -> None:
    """Whatever a shipped flow names as responsible exists in every street's reach: in
    the street itself, its district or the city."""
    rows = U.demo_units(city)
    assert len({r["unit_id"] for r in rows}) == len(rows)
    parsed, errors = U.parse_units_csv(
        _csv(city, [",".join(str(r[c]) for c in U.UNIT_COLUMNS) for r in rows]), city
    )
    assert errors == [] and len(parsed) == len(rows)  # the seed passes its own import rules
    types_at: dict[str, set[str]] = {}
    for r in rows:
        types_at.setdefault(r["area_id"], set()).add(r["type"])
    needed = {s.unit for f in F.load_flows().flows for s in f.stages}
    for street in city.ids("street"):
        reach = set().union(*(types_at.get(a, set()) for a in city.ancestors(street)))
        assert needed <= reach, (street, needed - reach)
