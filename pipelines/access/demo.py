"""The demo accounts `wangge run` seeds: one per role, named like people, scoped to the
demo city's areas, plus a wall account with its token."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine

from pipelines.access.accounts import (
    create_user,
    get_user,
    set_display_name,
    set_password,
    set_role,
)
from pipelines.access.wall_tokens import issue_wall_token
from pipelines.city.geography import City

# Demo accounts are named like people (the header shows "name · role": a name that is the
# role would read twice); the wall is a screen of the command hall.
DEMO_NAMES = {
    "city_leader": "王建国（演示）",
    "district_commander": "李明（演示）",
    "street_operator": "张丽（演示）",
    "supervisor": "陈静（演示）",
    "admin": "刘洋（演示）",
    "wall": "指挥大厅 1 号屏（演示）",
}


LEGACY_DEMO_SUFFIX = " (demo)"  # earlier demo names were the role's ("市领导 (demo)")


def demo_areas(city: City) -> tuple[str, str]:
    """The demo commander's district and the demo operator's street (`wangge run` points
    the simulator's dispute surge there, so the operator has something to handle)."""
    district = "320102" if city.level_of("320102") == "district" else city.ids("district")[0]
    streets = [s for s in city.children(district) if city.level_of(s) == "street"]
    return district, streets[0] if streets else city.ids("street")[0]


def demo_accounts(
    engine: Engine,
    city: City,
    now_ms: int,
    *,
    reset_passwords: bool = True,
    wall_days: int = 365,
) -> list[tuple[str, str, str, str]]:
    """One account per role for ``make run``: ``(username, role, scope, password_or_token)``.

    Idempotent: missing accounts are created; existing ones keep their role (and their
    scope, unless it is no area of ``city``: then the plan's scope in ``city``). With
    ``reset_passwords`` they get a fresh random password (so what is printed works) —
    only for the laptop demo, never against a production database. The wall account
    gets a new token each call (older ones stay valid until they expire).
    """
    district, street = demo_areas(city)
    plan = [
        ("leader", "city_leader", city.city_id, DEMO_NAMES["city_leader"]),
        (
            "xuanwu" if district == "320102" else "commander",
            "district_commander",
            district,
            DEMO_NAMES["district_commander"],
        ),
        ("operator", "street_operator", street, DEMO_NAMES["street_operator"]),
        ("supervisor", "supervisor", city.city_id, DEMO_NAMES["supervisor"]),
        ("admin", "admin", city.city_id, DEMO_NAMES["admin"]),
        ("wall", "wall", city.city_id, DEMO_NAMES["wall"]),
    ]
    out: list[tuple[str, str, str, str]] = []
    actor = "system:demo"
    for username, role, scope, name in plan:
        existing = get_user(engine, username)
        if existing and existing.display_name.endswith(LEGACY_DEMO_SUFFIX):
            existing = set_display_name(engine, username, name, now_ms=now_ms, actor=actor)
        if existing and existing.role == role and city.level_of(existing.scope_area_id) is None:
            # scoped to an area of another city (the database was rebound): follow this one
            existing = set_role(engine, city, username, role, scope, now_ms=now_ms, actor=actor)
        secret = ""
        if role == "wall":
            if existing is None:
                create_user(
                    engine, city, username, role, scope, None, name, now_ms=now_ms, actor=actor
                )
            elif existing.role != "wall" or existing.disabled:
                out.append((username, existing.role, existing.scope_area_id, ""))
                continue
            secret = issue_wall_token(engine, username, wall_days, now_ms, actor=actor)
        else:
            password = secrets.token_urlsafe(9)  # 12 characters
            if existing is None:
                create_user(
                    engine, city, username, role, scope, password, name, now_ms=now_ms, actor=actor
                )
                secret = password
            elif reset_passwords and existing.role != "wall":
                set_password(engine, username, password, now_ms=now_ms, actor=actor)
                secret = password
            role, scope = (existing.role, existing.scope_area_id) if existing else (role, scope)
        out.append((username, role, scope, secret))
    return out
