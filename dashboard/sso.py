"""Optional single sign-on through OpenID Connect (Authorization Code flow + PKCE).

Off unless ``auth.oidc_issuer`` is set. When off, ``/sso/login`` and ``/sso/callback``
answer 404, the login page shows no SSO link, and nothing touches the network. When on,
the OAuth client is built in :func:`install` (never at import); the IdP's discovery
document and keys are fetched lazily, on the first ``/sso/login``.

The identity provider proves *who* someone is; Wangge decides *what they may do*:

* the ID token is verified by authlib (signature against the IdP's JWKS, ``iss`` equal
  to the configured issuer, ``aud`` containing our client id, ``nonce``, ``exp``/``iat``);
* its ``preferred_username`` claim, lower-cased (usernames are case-insensitive, see
  :func:`pipelines.access.accounts.normalize_username`), must name an account that already
  exists in the local ``users`` table and is not disabled. Wall users cannot sign in
  this way (they use kiosk tokens);
* role and area scope always come from the local account; role/group/scope claims sent
  by the IdP are ignored.

Every outcome is audited: ``sso_login`` on success, ``sso_login_failed`` with a
``reason`` (``state``, ``idp_error``, ``token``, ``idp_unreachable``,
``no_username``, ``unknown_user``, ``disabled``, ``wall``) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, Response, abort, redirect, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from dashboard.guard import Guard
from dashboard.i18n import current_lang
from pipelines.access import accounts
from pipelines.settings import Settings

CLIENT_NAME = "oidc"  # the authlib registry name (also its state keys in the session)
SCOPE = "openid profile email"
NEXT_KEY = "sso_next"

TEXT = {
    "link": ("统一身份认证登录", "Sign in with SSO"),
    "state": (
        "统一身份认证请求已失效，请重新登录。",
        "The single sign-on request expired or was altered; please sign in again.",
    ),
    "failed": (
        "统一身份认证未通过，请重试或使用账号密码登录。",
        "Single sign-on failed; try again or sign in with your password.",
    ),
    "unreachable": (
        "统一身份认证服务暂时不可用，请稍后再试或使用账号密码登录。",
        "The single sign-on service is unavailable; try later or use your password.",
    ),
    "unknown": (
        "统一身份认证已通过，但本平台没有对应账号，请联系管理员开通。",
        "You were identified, but there is no Wangge account for you; ask an administrator.",
    ),
    "disabled": (
        "您的平台账号已停用，请联系管理员。",
        "Your Wangge account is disabled; ask an administrator.",
    ),
    "wall": (
        "大屏账号不能使用统一身份认证登录。",
        "Wall-screen accounts cannot use single sign-on.",
    ),
    "limited": ("请求过于频繁，请稍后再试。", "Too many attempts; try again in a minute."),
}

# reason → (message key, HTTP status)
REFUSALS: dict[str, tuple[str, int]] = {
    "state": ("state", 400),
    "idp_error": ("failed", 401),
    "token": ("failed", 401),
    "idp_unreachable": ("unreachable", 502),
    "no_username": ("failed", 401),
    "unknown_user": ("unknown", 403),
    "disabled": ("disabled", 403),
    "wall": ("wall", 403),
    "rate_limited": ("limited", 429),
}

# Renders the login page: (lang, error, next_url) → Response.
Render = Callable[[str, str, str], Response]


def _t(key: str, lang: str) -> str:
    zh, en = TEXT[key]
    return en if lang == "en" else zh


def enabled(settings: Settings) -> bool:
    return bool(settings.auth.oidc_issuer.strip())


def link_html(next_url: str) -> str:
    """The login page's SSO link (bilingual, as the rest of the login chrome)."""
    href = "/sso/login?next=" + quote(next_url, safe="/")
    return (
        f'<p class="wg-sso"><a id="login-sso" href="{href}">'
        f"{TEXT['link'][0]} · {TEXT['link'][1]}</a></p>"
    )


def metadata_url(issuer: str) -> str:
    return issuer.strip().rstrip("/") + "/.well-known/openid-configuration"


def _claims_options(settings: Settings) -> dict[str, Any]:
    """What the ID token must say; fresh each call (authlib mutates the options)."""
    return {
        "iss": {"essential": True, "value": settings.auth.oidc_issuer.strip()},
        "aud": {"essential": True, "value": settings.auth.oidc_client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
    }


def _client(server: Flask, settings: Settings) -> Any:
    """authlib's Flask client for the IdP. No network here: metadata loads on first use."""
    oauth = OAuth(server)
    return oauth.register(
        name=CLIENT_NAME,
        client_id=settings.auth.oidc_client_id,
        client_secret=settings.auth.oidc_client_secret,
        server_metadata_url=metadata_url(settings.auth.oidc_issuer),
        client_kwargs={"scope": SCOPE, "code_challenge_method": "S256", "timeout": 10},
    )


def install(
    server: Flask,
    guard: Guard,
    render: Render,
    safe_next: Callable[[str | None], str],
    landing: Callable[[str, str], str] = lambda _role, url: url,
) -> None:
    """Add ``/sso/login`` and ``/sso/callback`` (404 while SSO is off)."""
    settings = guard.settings
    client = _client(server, settings) if enabled(settings) else None
    default_lang = settings.dashboard.language

    def refuse(
        reason: str, *, username: str = "", error: str = "", next_url: str | None = None
    ) -> Response:
        key, status = REFUSALS[reason]
        next_url = safe_next(next_url or session.pop(NEXT_KEY, None))
        detail: dict[str, Any] = {"reason": reason}
        if error:
            detail["error"] = error[:200]
        guard.audit(
            "sso_login_failed", target=username, detail=detail, actor=username or "anonymous"
        )
        lang = current_lang(default_lang)
        resp = render(lang, _t(key, lang), next_url)
        resp.status_code = status
        return resp

    @server.route("/sso/login")
    def sso_login() -> BaseResponse:
        if client is None:
            abort(404)
        next_url = safe_next(request.args.get("next"))
        redirect_uri = url_for("sso_callback", _external=True)
        try:
            resp: BaseResponse = client.authorize_redirect(redirect_uri)
        except Exception as exc:  # discovery failed: IdP down or misconfigured
            return refuse(
                "idp_unreachable", error=f"{type(exc).__name__}: {exc}", next_url=next_url
            )
        session[NEXT_KEY] = next_url  # after authorize_redirect: it may not clear it
        return resp

    @server.route("/sso/callback")
    def sso_callback() -> BaseResponse:
        if client is None:
            abort(404)
        ip = request.remote_addr or "?"
        if guard.rate_limited(f"sso:{ip}", settings.auth.login_rate_per_minute):
            return refuse("rate_limited")
        if request.args.get("error"):
            return refuse("idp_error", error=str(request.args.get("error")))
        try:
            token = client.authorize_access_token(claims_options=_claims_options(settings))
        except MismatchingStateError:
            return refuse("state")
        except OAuthError as exc:
            return refuse("token", error=f"{exc.error}: {exc.description or ''}")
        except OSError as exc:  # requests' connection errors are OSErrors
            return refuse("idp_unreachable", error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # signature, claims, malformed responses: all refusals
            return refuse("token", error=f"{type(exc).__name__}: {exc}")
        claims = token.get("userinfo") if isinstance(token, dict) else None
        if not claims:  # no ID token at all: identity not proven
            return refuse("token", error="no id_token in the token response")
        name = str(claims.get("preferred_username") or "").strip().lower()[:64]
        if not name:
            return refuse("no_username", error=f"sub={claims.get('sub')}")
        user = accounts.get_user(guard.engine, name)
        if user is None:
            return refuse("unknown_user", username=name)
        if user.disabled:
            return refuse("disabled", username=name)
        if user.role == "wall":
            return refuse("wall", username=name)
        next_url = safe_next(session.get(NEXT_KEY))
        guard.start_session(user)  # clears the pre-login session (no fixation)
        guard.audit(
            "sso_login",
            target=user.username,
            detail={"iss": str(claims.get("iss", "")), "sub": str(claims.get("sub", ""))},
        )
        return redirect(landing(user.role, next_url))


__all__ = ["enabled", "install", "link_html", "metadata_url"]
