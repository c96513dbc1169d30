"""Ids with control or bidirectional characters are refused wherever they enter the
dashboard (URLs, callback inputs) and the command line; free text is stored neutralised.
The incident id of the report, ``INC-\\u202egpj.exe``, is the example."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine, select

from dashboard.app import create_app
from pipelines import warnings as W
from pipelines.access import accounts, audit
from pipelines.city.geography import City
from pipelines.settings import Settings, child_environ
from pipelines.spine import store
from tests.conftest import TEST_AUDIT_KEY, sign_in_client

pytestmark = pytest.mark.integration

MINE = "320102"
EVIL = "INC-\u202egpj.exe"


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    accounts.create_user(engine, city, "cmd", "district_commander", MINE, "pass-word-123", now_ms=1)
    return create_app(live_settings, city=city, r=rclient)


@pytest.mark.parametrize(
    "path",
    [
        f"/area/{MINE}{EVIL}",
        f"/work/{EVIL}",
        f"/geo/area/{EVIL}.json",
        f"/export/track/{EVIL}.csv",
        f"/assessment?area={EVIL}",
        f"/warnings?id={EVIL}",
        f"/area/{MINE}%0d%0a",
    ],
)
def test_ids_in_urls_are_refused(app: Dash, engine: Engine, path: str) -> None:
    c = sign_in_client(app.server.test_client(), "district_commander", MINE, "cmd")
    resp = c.get(quote(path, safe="/?=%"), headers={"Accept": "application/json"})
    assert resp.status_code == 400 and resp.json["error"] == "bad request"
    row = audit.query(engine, action="denied", limit=1).row(0, named=True)
    assert "\u202e" not in row["target"] and "\r" not in row["target"]  # recorded escaped


def _pan_body(app: Dash, area: str) -> bytes:
    app.server.test_client().get("/_dash-dependencies")
    key, spec = next((k, v) for k, v in app.callback_map.items() if k.startswith("..pan-geo"))
    values = {"pan-tick": 1, "pan-metric": "open", "pan-allgrids": [], "pan-area": area}
    return orjson.dumps(
        {
            "output": key,
            "outputs": [
                {"id": o.split(".")[0], "property": o.split(".")[1]}
                for o in key.strip(".").split("...")
            ],
            "inputs": [{**i, "value": values.get(i["id"])} for i in spec["inputs"]],
            "state": [{**s, "value": values.get(s["id"])} for s in spec["state"]],
        }
    )


def test_ids_in_callback_inputs_are_refused(app: Dash) -> None:
    c = sign_in_client(app.server.test_client(), "district_commander", MINE, "cmd")
    ok = c.post(
        "/_dash-update-component", data=_pan_body(app, MINE), content_type="application/json"
    )
    assert ok.status_code == 200
    for bad in (f"{MINE}\u202e", f"{MINE}\u2066", f"{MINE}\r\n", f"{MINE}\x00"):
        resp = c.post(
            "/_dash-update-component",
            data=_pan_body(app, bad),
            content_type="application/json",
        )
        assert resp.status_code == 400, repr(bad)


def test_free_text_of_a_warning_action_is_stored_neutralised(engine: Engine) -> None:
    now = int(time.time() * 1000)
    finding = W.Finding("surge", f"{MINE}-001", "red", "surge:text", ("x",), {"n": 1})
    new, _, _ = W.update_open([], [finding], now, W.RuleConfig())
    W.persist(engine, new, [], [], now)
    wid = new[0].warning_id
    assert W.act(
        engine,
        wid,
        "dispatch",
        "cmd",
        now + 1,
        note="ok \u202eevil\u2069\r\nnext",
        assignee="队\u202e伍\n1",
    )
    with engine.connect() as conn:
        t = store.warning_actions
        note = conn.execute(
            select(t.c.note).where(t.c.warning_id == wid, t.c.action == "dispatch")
        ).scalar_one()
    assert note == "队伍 1: ok evil\nnext"
    detail = json.loads(audit.query(engine, action="warning_dispatch")["detail"][0])
    assert detail == {"note": "ok evil\nnext", "assignee": "队伍 1"}


def test_the_command_line_refuses_such_ids_and_cleans_names(
    db_url: tuple[str, str | None], tmp_path: Path
) -> None:
    url, schema = db_url
    env = child_environ(
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_RUN_VAR_DIR=str(tmp_path / "var"),
        WANGGE_GEO_GRIDS="300",
        WANGGE_GEO_CACHE_DIR=str(tmp_path / "geo"),
        WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
    )

    def wangge(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            env=env,
            input=stdin,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )

    add = ("users", "add", "zhao", "--role", "district_commander", "--password-stdin")
    bad = wangge(*add, "--scope", f"{MINE}\u202e", stdin="pass-word-123\n")
    assert bad.returncode == 2 and "U+202E" in bad.stderr and "Traceback" not in bad.stderr
    res = wangge(*add, "--scope", MINE, "--name", "赵\u202e主任", stdin="pass-word-123\n")
    assert res.returncode == 0, res.stderr
    listed = wangge("users", "list")
    assert "赵主任" in listed.stdout and "\u202e" not in listed.stdout
