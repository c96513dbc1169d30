"""Who the header says you are, and where "back" goes after a refusal.

From the rules: the header shows "name · role" with the role once (a demo account is
named like a person, not like its role; an older database's role-named demo accounts are
renamed); a viewer refused an area goes back to their own area (a district commander to
their district, on the page they were on), a city-wide viewer to the city."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from dash import Dash, dcc
from sqlalchemy import Engine

from dashboard.app import create_app, page_module, user_label
from dashboard.i18n import t
from pipelines.access import accounts, audit, demo
from pipelines.city.geography import City
from pipelines.settings import Settings
from tests.clock import Clock, named
from tests.conftest import signed_in

pytestmark = pytest.mark.integration

CLOCK = Clock(named("thu-10:00").ms)
MINE, OTHER = "320102", "320104"
LANGS = ("zh-CN", "en")


@pytest.fixture
def app(live_settings: Settings, city: City, rclient: redis.Redis) -> Dash:
    return create_app(live_settings, city=city, r=rclient, clock=CLOCK)


def role_words() -> set[str]:
    return {t(f"role.{r}", lg) for r in accounts.ROLES for lg in LANGS}


def test_demo_accounts_are_named_like_people_and_the_role_reads_once(
    engine: Engine, city: City
) -> None:
    rows = demo.demo_accounts(engine, city, CLOCK.now_ms)
    assert {role for _, role, _, _ in rows} == set(accounts.ROLES)
    for username, role, _, _ in rows:
        user = accounts.get_user(engine, username)
        assert user is not None
        assert not any(w in user.display_name for w in role_words()), user.display_name
        assert "网格员" not in user.display_name  # no second word for the operator's role
        for lang in LANGS:
            label = user_label(user.display_name, username, role, lang)
            assert label.count(t(f"role.{role}", lang)) == 1, label
            assert label.startswith(user.display_name)


def test_role_named_demo_accounts_of_an_older_database_are_renamed(
    engine: Engine, city: City
) -> None:
    now = CLOCK.now_ms
    accounts.create_user(
        engine, city, "leader", "city_leader", city.city_id, "pass-word-123", "市领导 (demo)",
        now_ms=now,
    )  # fmt: skip
    assert user_label("市领导 (demo)", "leader", "city_leader", "zh-CN") == "leader · 市领导"
    demo.demo_accounts(engine, city, now + 1)
    user = accounts.get_user(engine, "leader")
    assert user is not None and user.display_name == demo.DEMO_NAMES["city_leader"]
    renamed = audit.query(engine, action="user_renamed")
    assert renamed.height == 1 and renamed["target"].to_list() == ["leader"]
    assert audit.verify(engine).ok


def links(component: Any) -> list[tuple[str, str]]:
    """(href, text) of every dcc.Link in a component tree."""
    found = []
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, dcc.Link):
            found.append((c.href, c.children))
        kids = getattr(c, "children", None)
        if isinstance(kids, list):
            stack.extend(kids)
        elif kids is not None and not isinstance(kids, str):
            stack.append(kids)
    return found


@pytest.mark.parametrize(("page", "base"), [("panorama", "/area/"), ("work", "/work/")])
def test_a_refused_commander_goes_back_to_their_own_area(app: Dash, page: str, base: str) -> None:
    layout = page_module(page, "layout").layout
    with signed_in(app, role="district_commander", scope=MINE, username="cmd"):
        ((href, text),) = links(layout(area_id=OTHER))
        assert href == f"{base}{MINE}" and text == "返回本辖区"
    street = app.server.extensions["wangge"].city.children(MINE)[0]
    with signed_in(app, role="street_operator", scope=street, username="op"):
        ((href, _),) = links(layout(area_id=OTHER))
        assert href == f"{base}{street}"
