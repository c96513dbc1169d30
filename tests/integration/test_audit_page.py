"""The audit log page: inside the app's shell, for the administrator only; rows in local
time, actions in words, details as key: value lines; filters by actor, action and days."""

from __future__ import annotations

import time
from typing import Any

import dash
import orjson
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine

from dashboard.app import create_app
from dashboard.backend import EXTENSION
from dashboard.components import localise
from pipelines.access import accounts, audit
from pipelines.city.geography import City
from pipelines.settings import Settings
from tests.conftest import sign_in_client

DISTRICT = "320102"


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    now = int(time.time() * 1000)
    accounts.create_user(
        engine, city, "adm", "admin", city.city_id, password="pw-123456789", now_ms=now
    )
    made = create_app(live_settings, city=city, r=rclient)
    keyed = made.server.extensions[EXTENSION].engine  # carries the audit key
    with audit.transaction(keyed) as conn:
        for actor, action, detail in (
            ("cmd", "login", {"ip": "10.0.0.7", "agent": {"name": "chrome", "v": 120}}),
            ("cmd", "denied", {"kind": "aggregates", "why": "out of scope"}),
            ("sup", "export", {"rows": 12, "sha256": "ab" * 8}),
        ):
            audit.append(
                conn,
                actor=actor,
                role="district_commander",
                scope=DISTRICT,
                action=action,
                target="/geo/area/320104.json",
                detail=detail,
                now_ms=now,
            )
    return made


def drive(c: Any, app: Dash, lang: str = "zh-CN", needle: str = "aud-table", **values: Any) -> Any:
    app.server.test_client().get("/_dash-dependencies")
    key, spec = next((k, v) for k, v in app.callback_map.items() if needle in k)
    inputs = [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in spec["inputs"]]
    state = [{**s, "value": lang} for s in spec.get("state", [])]
    outs = [
        {"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")
    ]
    body = {
        "output": key,
        "outputs": outs,
        "inputs": inputs,
        "state": state,
        "changedPropIds": [f"{i['id']}.{i['property']}" for i in spec["inputs"]],
    }
    return c.post(
        "/_dash-update-component", data=orjson.dumps(body), content_type="application/json"
    )


def test_admin_reads_the_log_in_words_and_local_time(app: Dash, live_settings: Settings) -> None:
    c = sign_in_client(app.server.test_client(), role="admin", scope="320100", username="adm")
    page = c.get("/admin/audit")
    assert page.status_code == 200
    layout = c.get("/_dash-layout").get_data(as_text=True)
    assert "审计日志" in layout  # the shell's menu names the page
    resp = drive(c, app)
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    # actions in words, the scope by name, details as key: value (nested keys dotted)
    assert "登录" in text and "越权访问被拒绝" in text and "导出考核表" in text
    assert "玄武区" in text
    for k, v in (("IP 地址", "10.0.0.7"), ("agent.name", "chrome"), ("行数", "12")):
        assert f'"{k}"' in text and f'"{v}"' in text
    assert '{\\"ip\\"' not in text  # no raw JSON
    # filters: by actor, by action, by a day range (today in the city's zone, ISO)
    only_sup = drive(c, app, **{"aud-actor.value": "sup"}).get_data(as_text=True)
    assert "导出考核表" in only_sup and "越权访问被拒绝" not in only_sup
    only_login = drive(c, app, **{"aud-action.value": "login"}).get_data(as_text=True)
    assert "10.0.0.7" in only_login and "out of scope" not in only_login
    long_ago = drive(
        c, app, **{"aud-range.start_date": "2001-01-01", "aud-range.end_date": "2001-01-31"}
    ).get_data(as_text=True)
    assert "没有符合条件的记录" in long_ago
    english = drive(c, app, lang="en").get_data(as_text=True)
    assert "Access denied" in english and "Signed in" in english
    # the page as the router renders it: Dash's own control words are the catalog's
    routed = drive(
        c, app, needle="_pages_content", **{"_pages_location.pathname": "/admin/audit"}
    ).get_data(as_text=True)
    assert '"search": "\\u641c\\u7d22"' in routed or '"search":"搜索"' in routed, routed[:500]
    assert all(
        getattr(p["layout"], localise.MARK, False)
        for p in dash.page_registry.values()
        if callable(p["layout"])
    )


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        ("city_leader", "320100"),
        ("district_commander", DISTRICT),
        ("supervisor", DISTRICT),
        ("street_operator", None),
        ("wall", DISTRICT),
        (None, None),
    ],
    ids=lambda x: str(x),
)
def test_nobody_else_reads_the_audit_log(
    app: Dash, city: City, role: str | None, scope: Any
) -> None:
    c = app.server.test_client()
    if role:
        scope = scope or city.children(DISTRICT)[0]
        sign_in_client(c, role=role, scope=scope, username=f"u-{role}")
    page = c.get("/admin/audit", headers={"Accept": "text/html"})
    assert page.status_code in (302, 401, 403), page.status_code
    resp = drive(c, app)
    assert resp.status_code in (401, 403), resp.status_code
    assert "10.0.0.7" not in resp.get_data(as_text=True)
    for path in ("/admin/audit", "/admin/audit/", "/ADMIN/audit"):  # the router, too
        routed = drive(c, app, needle="_pages_content", **{"_pages_location.pathname": path})
        assert routed.status_code in (200, 401, 403)
        assert "aud-table" not in routed.get_data(as_text=True), path
