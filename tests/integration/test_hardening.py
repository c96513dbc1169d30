"""Wall tokens never reach a log (werkzeug's and gunicorn's access logs, the app's own);
a CR LF in a wall URL is a 400 before any session exists; Secure cookies and HSTS for
HTTPS deployments; X-Forwarded-* honoured only from configured proxies."""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from dash import Dash
from sqlalchemy import Engine
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts, audit, wall_tokens
from pipelines.city.geography import City
from pipelines.settings import Settings, child_environ
from tests.conftest import TEST_AUDIT_KEY, stop_processes

pytestmark = pytest.mark.integration

MINE = "320102"
NO_PROXY = {"http": "", "https": ""}


def make_app(settings: Settings, engine: Engine, city: City, r: redis.Redis, **auth: Any) -> Dash:
    if auth:
        settings = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, **auth))
    return create_app(settings, city=city, r=r)


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    now = int(time.time() * 1000)
    accounts.create_user(engine, city, "wall1", "wall", MINE, now_ms=now)
    accounts.create_user(
        engine, city, "cmd", "district_commander", MINE, "pass-word-123", now_ms=now
    )
    return make_app(live_settings, engine, city, rclient)


@pytest.fixture
def token(app: Dash, engine: Engine) -> str:
    return wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=int(time.time() * 1000))


# ------------------------------------------------------------------ tokens in logs


@pytest.fixture
def served(app: Dash) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_werkzeug_access_log_never_shows_a_wall_token(
    served: str, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = requests.Session()
    first = s.get(f"{served}/wall?token={token}&tour=10", allow_redirects=False, proxies=NO_PROXY)
    assert first.status_code == 302 and token not in first.headers["Location"]
    bad = s.get(f"{served}/wall/{MINE}?token=NOT-{token}", proxies=NO_PROXY)
    assert bad.status_code == 401
    lines = [r.getMessage() for r in caplog.records]
    assert any("GET /wall?token=" in line for line in lines), lines  # the access log ran
    assert not any(token in line for line in lines), [ln for ln in lines if token in ln]
    assert any("token=[redacted]" in line for line in lines)


def test_app_logging_never_shows_a_wall_token(app: Dash, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    secret = "Zx9-secret-token-value"
    for name in ("dashboard.app", "pipelines.cli", "werkzeug", "gunicorn.error"):
        logging.getLogger(name).warning("GET /wall?token=%s HTTP/1.1", secret)
    app.server.logger.error("Exception on /wall?tour=5&token=%s", secret)
    assert caplog.records and not any(secret in r.getMessage() for r in caplog.records)


def test_gunicorn_access_log_never_shows_a_wall_token(
    live_settings: Settings, app: Dash, token: str, tmp_path: Path
) -> None:
    """The production server, with its own access log format (request line, referer)."""
    s = live_settings
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "access.log"
    env = child_environ(
        REDIS_URL=s.redis.url,
        WANGGE_REDIS_PREFIX=s.redis.prefix,
        DATABASE_URL=s.database.url,
        WANGGE_DATABASE_SCHEMA=s.database.schema,
        WANGGE_RUN_VAR_DIR=str(tmp_path / "var"),
        WANGGE_GEO_GRIDS="300",
        WANGGE_GEO_CACHE_DIR=str(tmp_path / "geo"),
        WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
    )
    cmd = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}"]
    cmd += ["--access-logfile", str(log), "dashboard.app:server"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=5, proxies=NO_PROXY).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):  # still starting
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.3)
        referer = {"Referer": f"{url}/wall?token={token}"}
        resp = requests.get(
            f"{url}/wall?token={token}", headers=referer, allow_redirects=False, proxies=NO_PROXY
        )
        assert resp.status_code == 302
    finally:
        stop_processes([proc])
    text = log.read_text()
    assert "/wall?token=" in text, text  # the request was logged …
    assert token not in text, text  # … without the token


# ------------------------------------------------------------------ CR LF in a wall URL


@pytest.mark.parametrize(
    "path",
    [
        "/wall?token={t}&tour=%0d%0aSet-Cookie:%20x=1",
        "/wall/%0d%0aLocation:%20//evil?token={t}",
        "/wall?token={t}&lang=%E2%80%AE",
        "/wall?token={t}%0a",
    ],
)
def test_a_control_character_in_a_wall_url_is_a_400_before_any_session(
    app: Dash, token: str, path: str, engine: Engine
) -> None:
    c = app.server.test_client()
    resp = c.get(path.format(t=token))
    assert resp.status_code == 400
    assert "Set-Cookie" not in resp.headers  # no session was started
    assert "wall_login" not in audit.query(engine)["action"].to_list()
    denied = audit.query(engine, action="denied")["target"].to_list()
    assert all("\r" not in t and "\n" not in t for t in denied)


def test_the_wall_redirect_keeps_other_parameters_encoded(app: Dash, token: str) -> None:
    resp = app.server.test_client().get(f"/wall?token={token}&tour=10&lang=en&x=a%26b")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/wall?tour=10&lang=en&x=a%26b"


# ------------------------------------------------------------------ HTTPS, proxies


def _login(c: Any, ip: str = "127.0.0.1", **headers: str) -> Any:
    page = c.get("/login", headers=headers).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    return c.post(
        "/login",
        data={"username": "cmd", "password": "pass-word-123", "csrf": csrf.group(1)},
        headers=headers,
        environ_overrides={"REMOTE_ADDR": ip},
    )


def test_https_setting_makes_cookies_secure_and_sends_hsts(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, app: Dash
) -> None:
    plain = app.server.test_client()  # the default over plain HTTP: neither
    ok = _login(plain)
    assert "Secure" not in ok.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in ok.headers
    https = make_app(live_settings, engine, city, rclient, https=True, hsts_max_age_s=600)
    c = https.server.test_client()
    ok = _login(c)  # still plain HTTP to the app (TLS ends at a proxy in front)
    assert ok.status_code == 302 and "Secure" in ok.headers["Set-Cookie"]
    assert ok.headers["Strict-Transport-Security"] == "max-age=600; includeSubDomains"
    lang = c.get("/lang/en")
    assert "Secure" in lang.headers["Set-Cookie"]


def _last_ip(engine: Engine) -> str:
    import json

    row = audit.query(engine, action="login", limit=1)
    return str(json.loads(row["detail"][0])["ip"])


FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def test_forwarded_headers_are_ignored_by_default(app: Dash, engine: Engine) -> None:
    ok = _login(app.server.test_client(), **FORWARDED)
    assert ok.status_code == 302
    assert _last_ip(engine) == "127.0.0.1"  # the peer, not what it claims
    assert "Secure" not in ok.headers["Set-Cookie"]  # not https because a header says so
    assert "Strict-Transport-Security" not in ok.headers


def test_forwarded_headers_count_only_from_the_configured_proxy(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, app: Dash
) -> None:
    proxied = make_app(
        live_settings, engine, city, rclient, proxy_count=1, trusted_proxies="10.0.0.0/8"
    )
    ok = _login(proxied.server.test_client(), ip="10.1.2.3", **FORWARDED)
    assert ok.status_code == 302 and _last_ip(engine) == "203.0.113.9"
    assert "Secure" in ok.headers["Set-Cookie"]  # X-Forwarded-Proto: https, from the proxy
    ok = _login(proxied.server.test_client(), ip="192.0.2.7", **FORWARDED)
    assert ok.status_code == 302 and _last_ip(engine) == "192.0.2.7"  # not from the proxy
    assert "Secure" not in ok.headers["Set-Cookie"]
