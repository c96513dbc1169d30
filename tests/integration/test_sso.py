"""Single sign-on (OpenID Connect) against a real, minimal OpenID provider.

The provider below is a small Flask app served over HTTP on 127.0.0.1 by werkzeug in a
thread; it signs RS256 ID tokens with authlib's JOSE and checks PKCE (S256). Wangge is
driven with Flask's test client; the browser's hops to the provider are made with
``requests``. Nothing of Wangge is mocked: its authlib client talks HTTP to the provider
(discovery, token exchange, JWKS) exactly as it would to a real one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import requests
from dash import Dash
from flask import Flask, jsonify, redirect, request
from sqlalchemy import Engine
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts, audit
from pipelines.city.geography import City
from pipelines.settings import Settings

with warnings.catch_warnings():  # authlib.jose is deprecated in favour of joserfc (authlib 2)
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, jwt

pytestmark = pytest.mark.integration

MINE, OTHER = "320102", "320104"
CLIENT_ID, CLIENT_SECRET = "wangge-test", "s3cret-for-tests"
NO_PROXY = {"http": "", "https": ""}  # the provider is local; never go through a proxy


# ------------------------------------------------------------------ a tiny OpenID provider


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _new_key(kid: str) -> Any:
    return JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": kid})


@dataclass
class Provider:
    """Which user signs in next, and how the next ID token is (mis)made."""

    url: str = ""
    key: Any = None
    username: str = "cmd"
    sign_with: Any = None  # another private key: a forged token
    claims: dict[str, Any] = field(default_factory=dict)  # overrides of ID token claims
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        self.username, self.sign_with = "cmd", None
        self.claims.clear()
        self.codes.clear()
        self.token_requests.clear()

    def app(self) -> Flask:
        idp = Flask("test-idp")

        @idp.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(
                issuer=self.url,
                authorization_endpoint=f"{self.url}/authorize",
                token_endpoint=f"{self.url}/token",
                jwks_uri=f"{self.url}/jwks",
                response_types_supported=["code"],
                subject_types_supported=["public"],
                id_token_signing_alg_values_supported=["RS256"],
                code_challenge_methods_supported=["S256"],
                token_endpoint_auth_methods_supported=["client_secret_basic"],
                scopes_supported=["openid", "profile", "email"],
            )

        @idp.get("/jwks")
        def jwks() -> Any:
            return jsonify(keys=[self.key.as_dict(is_private=False)])

        @idp.get("/authorize")
        def authorize() -> Any:
            a = request.args
            if (
                a.get("client_id") != CLIENT_ID
                or a.get("response_type") != "code"
                or "openid" not in a.get("scope", "").split()
                or a.get("code_challenge_method") != "S256"
                or not a.get("code_challenge")
                or not a.get("redirect_uri")
            ):
                return jsonify(error="invalid_request", args=dict(a)), 400
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "challenge": a["code_challenge"],
                "redirect_uri": a["redirect_uri"],
                "nonce": a.get("nonce"),
                "username": self.username,
            }
            query = urlencode({"code": code, "state": a.get("state", "")})
            return redirect(f"{a['redirect_uri']}?{query}")

        @idp.post("/token")
        def token() -> Any:
            f = request.form
            self.token_requests.append(dict(f))
            auth = request.authorization
            if auth is None or (auth.username, auth.password) != (CLIENT_ID, CLIENT_SECRET):
                return jsonify(error="invalid_client"), 401
            grant = self.codes.pop(f.get("code", ""), None)  # single use
            if f.get("grant_type") != "authorization_code" or grant is None:
                return jsonify(error="invalid_grant"), 400
            if f.get("redirect_uri") != grant["redirect_uri"]:
                return jsonify(error="invalid_grant", why="redirect_uri"), 400
            verifier = f.get("code_verifier", "")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
                return jsonify(error="invalid_grant", why="pkce"), 400
            now = int(time.time())
            claims = {
                "iss": self.url,
                "aud": CLIENT_ID,
                "sub": f"sub-{grant['username']}",
                "iat": now,
                "exp": now + 300,
                "nonce": grant["nonce"],
                "preferred_username": grant["username"].upper(),  # Wangge lower-cases it
                "name": grant["username"],
                # what the IdP believes must not matter: Wangge takes role/scope locally
                "role": "admin",
                "groups": ["admin", "city_leader"],
                "scope_area_id": OTHER,
            }
            claims.update(self.claims)
            claims = {k: v for k, v in claims.items() if v is not None}  # None: leave out
            signer = self.sign_with or self.key
            header = {"alg": "RS256", "kid": signer.as_dict()["kid"]}
            id_token = jwt.encode(header, claims, signer)
            return jsonify(
                access_token=secrets.token_urlsafe(24),
                token_type="Bearer",
                expires_in=300,
                id_token=id_token.decode("ascii"),
            )

        return idp


@pytest.fixture(scope="module")
def idp() -> Iterator[Provider]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        provider = Provider(key=_new_key("idp-1"))
    server = make_server("127.0.0.1", 0, provider.app(), threaded=True)
    provider.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def provider(idp: Provider, monkeypatch: pytest.MonkeyPatch) -> Provider:
    idp.reset()
    # Wangge's authlib client uses requests, which honours *_PROXY; the IdP is local
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return idp


# ------------------------------------------------------------------ Wangge


def _users(engine: Engine, city: City) -> None:
    now = int(time.time() * 1000)
    pw = "pass-word-123"
    accounts.create_user(engine, city, "cmd", "district_commander", MINE, password=pw, now_ms=now)
    street = city.children(MINE)[0]
    accounts.create_user(engine, city, "gone", "street_operator", street, password=pw, now_ms=now)
    accounts.disable_user(engine, "gone", now_ms=now)
    accounts.create_user(engine, city, "wall1", "wall", MINE, now_ms=now)


def _app(settings: Settings, city: City, rclient: redis.Redis, **auth: str) -> Dash:
    settings = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, **auth))
    return create_app(settings, city=city, r=rclient)


@pytest.fixture
def app_off(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
) -> Dash:
    _users(engine, city)
    return _app(live_settings, city, rclient)


@pytest.fixture
def app(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
    provider: Provider,
) -> Dash:
    _users(engine, city)
    return _app(
        live_settings,
        city,
        rclient,
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
    )


def _to_idp(c: Any, provider: Provider, next_url: str = f"/area/{MINE}") -> str:
    """Start SSO in Wangge and let the provider answer; returns the callback URL."""
    start = c.get("/sso/login", query_string={"next": next_url})
    assert start.status_code == 302, start.get_data(as_text=True)[:300]
    location = start.headers["Location"]
    assert location.startswith(f"{provider.url}/authorize?")
    sent = parse_qs(urlsplit(location).query)
    assert sent["code_challenge_method"] == ["S256"] and sent["nonce"][0]
    assert sent["scope"] == ["openid profile email"]
    back = requests.get(location, allow_redirects=False, timeout=10, proxies=NO_PROXY)
    assert back.status_code == 302, back.text[:300]
    return str(back.headers["Location"])


def _callback(c: Any, url: str) -> Any:
    parts = urlsplit(url)
    assert parts.path == "/sso/callback"
    return c.get(f"{parts.path}?{parts.query}")


def _failures(engine: Engine) -> list[str]:
    return audit.query(engine, action="sso_login_failed")["detail"].to_list()


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port with nothing listening on it (bound, never listened on)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


# ------------------------------------------------------------------ tests


def test_sso_is_off_by_default(app_off: Dash) -> None:
    c = app_off.server.test_client()
    page = c.get("/login").get_data(as_text=True)
    assert "/sso/login" not in page and "Sign in with SSO" not in page
    assert c.get("/sso/login").status_code == 404
    assert c.get("/sso/callback?code=x&state=y").status_code == 404


def test_configuring_sso_touches_no_network(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building the app with an unreachable IdP works (no network at start-up); the link
    shows, and starting SSO fails politely."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with closed_port() as port:
        app = _app(
            live_settings,
            city,
            rclient,
            oidc_issuer=f"http://127.0.0.1:{port}",
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
        )
        c = app.server.test_client()
        page = c.get("/login?next=/area/320102").get_data(as_text=True)
        assert 'href="/sso/login?next=/area/320102"' in page
        assert "统一身份认证登录 · Sign in with SSO" in page
        down = c.get("/sso/login")
        text = down.get_data(as_text=True)
        assert down.status_code == 502 and "Traceback" not in text
        assert "统一身份认证服务暂时不可用" in text
    assert any("idp_unreachable" in d for d in _failures(engine))


def test_sso_signs_in_a_local_user_with_the_local_role_and_scope(
    app: Dash, provider: Provider, engine: Engine
) -> None:
    c = app.server.test_client()
    page = c.get("/login").get_data(as_text=True)
    assert "统一身份认证登录 · Sign in with SSO" in page and 'href="/sso/login?next=/"' in page
    done = _callback(c, _to_idp(c, provider))
    assert done.status_code == 302, done.get_data(as_text=True)[:300]
    assert done.headers["Location"] == f"/area/{MINE}"
    # PKCE really happened: the token request carried the verifier (the IdP checked it)
    assert provider.token_requests and provider.token_requests[-1].get("code_verifier")
    with c.session_transaction() as sess:
        assert set(sess) == {"sid"}  # authlib's state is gone; the cookie holds only the id
        guard = app.server.extensions["wangge.guard"]
        s = guard.sessions.load(sess["sid"], guard.now_ms())
        assert s is not None
        p = {"username": s.username, "role": s.role, "scope": s.scope}
    # role and scope come from Wangge's table, not from the IdP's "role": "admin"
    assert (p["username"], p["role"], p["scope"]) == ("cmd", "district_commander", MINE)
    assert c.get(f"/area/{MINE}").status_code == 200
    assert c.get(f"/geo/area/{MINE}.json").status_code == 200
    assert c.get(f"/geo/area/{OTHER}.json").status_code == 403
    assert c.get("/admin/audit", headers={"Accept": "application/json"}).status_code == 403
    rows = audit.query(engine, action="sso_login")
    assert (
        rows.height == 1 and rows["actor"][0] == "cmd" and rows["role"][0] == ("district_commander")
    )
    assert audit.verify(engine).ok


def test_next_is_kept_local(app: Dash, provider: Provider) -> None:
    c = app.server.test_client()
    done = _callback(c, _to_idp(c, provider, next_url="https://evil.example/x"))
    assert done.status_code == 302 and done.headers["Location"] == "/"
    c2 = app.server.test_client()
    done = _callback(c2, _to_idp(c2, provider, next_url="/\\evil.example"))
    assert done.status_code == 302 and done.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("username", "reason", "zh", "en"),
    [
        ("stranger", "unknown_user", "本平台没有对应账号", "no Wangge account"),
        ("gone", "disabled", "账号已停用", "disabled"),
        ("wall1", "wall", "大屏账号不能使用统一身份认证", "Wall-screen accounts"),
    ],
)
def test_refused_identities_get_a_clear_message_and_an_audit_row(
    app: Dash, provider: Provider, engine: Engine, username: str, reason: str, zh: str, en: str
) -> None:
    provider.username = username
    c = app.server.test_client()
    resp = _callback(c, _to_idp(c, provider))
    text = resp.get_data(as_text=True)
    assert resp.status_code == 403 and zh in text and "Traceback" not in text
    with c.session_transaction() as sess:
        assert "p" not in sess
    assert c.get(f"/area/{MINE}").status_code == 302  # still anonymous → login page
    rows = audit.query(engine, action="sso_login_failed")
    assert rows.height == 1 and rows["target"][0] == username
    assert f'"reason":"{reason}"' in rows["detail"][0].replace(" ", "")
    # the same in English
    provider.username = username
    c_en = app.server.test_client()
    c_en.set_cookie("wg_lang", "en")
    english = _callback(c_en, _to_idp(c_en, provider)).get_data(as_text=True)
    assert en in english


def test_tampered_state_is_refused(app: Dash, provider: Provider, engine: Engine) -> None:
    c = app.server.test_client()
    url = _to_idp(c, provider)
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    forged = urlencode({"code": q["code"][0], "state": q["state"][0] + "x"})
    resp = c.get(f"/sso/callback?{forged}")
    text = resp.get_data(as_text=True)
    assert resp.status_code in (400, 401) and "Traceback" not in text
    assert "统一身份认证请求已失效" in text
    with c.session_transaction() as sess:
        assert "p" not in sess
    # no state at all, or a callback in another browser (no session), also fails
    assert c.get("/sso/callback?code=abc").status_code in (400, 401)
    other = app.server.test_client()
    assert _callback(other, url).status_code in (400, 401)
    assert any('"state"' in d for d in _failures(engine))


@pytest.mark.parametrize(
    "forgery",
    [
        "other_key",
        "other_key_other_kid",
        "wrong_nonce",
        "wrong_audience",
        "wrong_issuer",
        "expired",
        "no_nonce",
        "audience_only_in_azp",
    ],
)
def test_a_bad_id_token_is_refused(
    app: Dash, provider: Provider, engine: Engine, forgery: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if forgery == "other_key":  # same kid as the IdP's key: only the signature differs
            provider.sign_with = _new_key("idp-1")
        elif forgery == "other_key_other_kid":
            provider.sign_with = _new_key("attacker")
    now = int(time.time())
    overrides: dict[str, dict[str, Any]] = {
        "wrong_nonce": {"nonce": "not-the-nonce"},
        "wrong_audience": {"aud": "another-client"},
        "wrong_issuer": {"iss": "http://127.0.0.1:1"},
        "expired": {"iat": now - 3600, "exp": now - 1800},
        "no_nonce": {"nonce": None},
        # a token minted for another client that names us only as authorised party
        "audience_only_in_azp": {"aud": "another-client", "azp": CLIENT_ID},
    }
    provider.claims.update(overrides.get(forgery, {}))
    c = app.server.test_client()
    resp = _callback(c, _to_idp(c, provider))
    text = resp.get_data(as_text=True)
    assert resp.status_code == 401, text[:300]
    assert "统一身份认证未通过" in text and "Traceback" not in text
    with c.session_transaction() as sess:
        assert "p" not in sess
    assert audit.query(engine, action="sso_login").height == 0
    assert any('"token"' in d for d in _failures(engine))


def test_the_idp_saying_no_is_refused(app: Dash, provider: Provider, engine: Engine) -> None:
    c = app.server.test_client()
    _to_idp(c, provider)
    resp = c.get("/sso/callback?error=access_denied&state=whatever")
    assert resp.status_code == 401 and "Traceback" not in resp.get_data(as_text=True)
    assert any("access_denied" in d for d in _failures(engine))


def test_sso_routes_have_policies(app: Dash) -> None:
    from dashboard.auth import ROUTE_POLICIES

    endpoints = {r.endpoint for r in app.server.url_map.iter_rules()}
    assert {"sso_login", "sso_callback"} <= endpoints
    assert {r for r in endpoints if r not in ROUTE_POLICIES} == set()
