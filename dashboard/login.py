"""Login and logout: a small server-rendered form (no Dash), zh-CN / English.

Signing in starts a server-side session (``Guard.start_session``); signing out ends every
session of the user, on every browser (``Guard.end_sessions``). After signing in, a
``next`` page the role may not open is replaced by the role's home page (the admin's is
the audit log)."""

from __future__ import annotations

import hmac
from html import escape
from urllib.parse import urlparse

from flask import Flask, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from dashboard import sso
from dashboard.auth import csrf_token, principal
from dashboard.guard import Guard
from dashboard.i18n import current_lang
from pipelines.access import accounts, policy

TEXT = {
    "title": ("登录 · 网格化社会治理态势感知平台", "Sign in · Grid Governance Platform"),
    "user": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "submit": ("登录", "Sign in"),
    "bad": ("用户名或密码错误。", "Wrong username or password."),
    "locked": ("登录失败次数过多，请稍后再试。", "Too many failed attempts; try again later."),
    "limited": ("请求过于频繁，请稍后再试。", "Too many attempts; try again in a minute."),
    "expired": ("会话已失效，请重新登录。", "Your session expired; please sign in again."),
}


def _t(key: str, lang: str) -> str:
    zh, en = TEXT[key]
    return en if lang == "en" else zh


def _safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else becomes ``/``.

    Backslashes and control characters are refused too: browsers read ``/\\evil`` and
    ``/<TAB>/evil`` as ``//evil`` (another host)."""
    target = target or "/"
    if "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parsed = urlparse(target)
    if (
        parsed.scheme
        or parsed.netloc
        or not parsed.path.startswith("/")
        or parsed.path.startswith("//")
    ):
        return "/"
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def _csrf() -> str:
    return csrf_token()


def landing(role: str, next_url: str) -> str:
    """Where to go after signing in: ``next_url`` when the role may open its page, else
    the role's home page."""
    page = policy.page_of(urlparse(next_url).path)
    if page is not None and not policy.may_open(role, page):
        return policy.home(role)
    return next_url


def page(lang: str, error: str = "", next_url: str = "/", sso_link: bool = False) -> Response:
    """The login form; ``sso_link`` adds the single sign-on link (when SSO is on)."""
    body = f"""<!doctype html><html lang="{"en" if lang == "en" else "zh-CN"}"><head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(_t("title", lang))}</title><link rel="stylesheet" href="/assets/theme.css">
</head><body><div class="wg-panel notfound login" id="login">
<h2>{escape(_t("title", lang))}</h2>
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{escape(_csrf())}">
<input type="hidden" name="next" value="{escape(next_url)}">
<p><label>{escape(_t("user", lang))}<br>
<input name="username" id="username" autocomplete="username" required></label></p>
<p><label>{escape(_t("password", lang))}<br>
<input name="password" id="password" type="password" autocomplete="current-password" required>
</label></p>
<p class="wg-error" id="login-error">{escape(error)}</p>
<p><button type="submit" id="login-submit">{escape(_t("submit", lang))}</button></p>
</form>{sso.link_html(next_url) if sso_link else ""}</div></body></html>"""
    resp = Response(body, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def install(server: Flask, guard: Guard) -> None:
    default = guard.settings.dashboard.language
    with_sso = sso.enabled(guard.settings)

    def render(lang: str, error: str = "", next_url: str = "/") -> Response:
        return page(lang, error, next_url, sso_link=with_sso)

    @server.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse:
        lang = current_lang(default)
        if request.method == "GET":
            return render(lang, next_url=_safe_next(request.args.get("next")))
        next_url = _safe_next(request.form.get("next"))
        sent = request.form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent, csrf_token()):
            return _status(render(lang, _t("expired", lang), next_url), 400)
        ip = request.remote_addr or "?"
        if guard.rate_limited(f"login:{ip}", guard.settings.auth.login_rate_per_minute):
            guard.audit("login_rate_limited", target=ip)
            return _status(render(lang, _t("limited", lang), next_url), 429)
        result = accounts.authenticate(
            guard.engine,
            guard.settings.auth,
            request.form.get("username", ""),
            request.form.get("password", ""),
            guard.now_ms(),
            detail={"ip": ip},
        )
        if not result.ok or result.user is None:
            why = "locked" if result.status == "locked" else "bad"
            return _status(render(lang, _t(why, lang), next_url), 401)
        guard.start_session(result.user)
        return redirect(landing(result.user.role, next_url))

    sso.install(server, guard, render, _safe_next, landing)

    @server.route("/logout", methods=["POST"])
    def logout() -> BaseResponse:
        """Sign out: every session of the user ends, on every browser."""
        sent = request.form.get("csrf", "")
        p = principal()
        if p is not None and sent and hmac.compare_digest(sent, csrf_token()):
            guard.audit("logout")
            guard.end_sessions(p.username)
        return redirect("/login")


def _status(resp: Response, code: int) -> Response:
    resp.status_code = code
    return resp
