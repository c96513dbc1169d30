"""Wall tokens (大屏令牌): long-lived kiosk logins for video walls.

A token is issued for a wall account, shown once and stored as a SHA-256 hash; opening the
wall URL with it signs the kiosk in as that account. Tokens expire, are revoked with the
account's role changes or on demand, and every issue and revocation is audited.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from pipelines.access import audit
from pipelines.access.accounts import (
    DAY_MS,
    AccountError,
    Actor,
    EndsSessions,
    User,
    _actor_fields,
    _require,
    _revoke,
    _user_of,
    end_sessions,
)
from pipelines.spine import store


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_wall_token(
    engine: Engine, username: str, days: int, now_ms: int, *, actor: Actor = "system"
) -> str:
    """A new token for a wall user, valid ``days`` days; only its sha256 is stored."""
    if days <= 0:
        raise AccountError("token lifetime must be at least one day")
    token = secrets.token_urlsafe(32)
    token_id = uuid.uuid4().hex
    expires = now_ms + int(days) * DAY_MS
    with audit.transaction(engine) as conn:
        row = _require(conn, username)
        user = _user_of(row)
        if user.role != "wall":
            raise AccountError(f"user {user.username} is a {user.role}, not a wall user")
        if user.disabled:
            raise AccountError(f"user {user.username} is disabled")
        conn.execute(
            store.wall_tokens.insert(),
            [
                {
                    "token_id": token_id,
                    "user_id": user.user_id,
                    "token_hash": token_hash(token),
                    "created_ms": now_ms,
                    "expires_ms": expires,
                    "revoked": False,
                }
            ],
        )
        audit.append(
            conn,
            **_actor_fields(actor),
            action="wall_token_issued",
            target=user.username,
            detail={"token_id": token_id, "expires_ms": expires, "scope": user.scope_area_id},
            now_ms=now_ms,
        )
    return token


@dataclass(frozen=True)
class WallLogin:
    """A valid kiosk token: its wall user, the token's id and its expiry."""

    user: User
    token_id: str
    expires_ms: int


def _wall_token(engine: Engine, where: Any, now_ms: int) -> WallLogin | None:
    wt, u = store.wall_tokens, store.users
    q = (
        select(u, wt.c.token_id, wt.c.expires_ms, wt.c.revoked)
        .join(wt, wt.c.user_id == u.c.user_id)
        .where(where)
    )
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    m = row._mapping
    if m["revoked"] or int(m["expires_ms"]) <= now_ms:
        return None
    user = _user_of(row)
    if user.disabled or user.role != "wall":
        return None
    return WallLogin(user, str(m["token_id"]), int(m["expires_ms"]))


def check_wall_token(engine: Engine, token: str, now_ms: int) -> WallLogin | None:
    """The sign-in a valid token gives; None if unknown, expired, revoked or disabled."""
    if not token or len(token) > 256:
        return None
    return _wall_token(engine, store.wall_tokens.c.token_hash == token_hash(token), now_ms)


def verify_wall_token(engine: Engine, token: str, now_ms: int) -> User | None:
    """The wall user of a valid token; None if unknown, expired, revoked or disabled."""
    found = check_wall_token(engine, token, now_ms)
    return None if found is None else found.user


def wall_token_active(engine: Engine, token_id: str, now_ms: int) -> WallLogin | None:
    """The token (by id) if it is still valid: a wall session's re-check."""
    return _wall_token(engine, store.wall_tokens.c.token_id == token_id, now_ms)


def revoke_wall_tokens(
    engine: Engine,
    username: str,
    now_ms: int,
    *,
    actor: Actor = "system",
    sessions: EndsSessions | None = None,
) -> int:
    """Revoke every token of the user; returns how many were still active. With
    ``sessions``, the screens signed in with them are signed out at once."""
    with audit.transaction(engine) as conn:
        row = _require(conn, username)
        n = _revoke(conn, str(row._mapping["user_id"]))
        audit.append(
            conn,
            **_actor_fields(actor),
            action="wall_tokens_revoked",
            target=str(row._mapping["username"]),
            detail={"revoked": n},
            now_ms=now_ms,
        )
    if sessions is not None:
        end_sessions(sessions, str(row._mapping["username"]))
    return n


def wall_token_count(engine: Engine, username: str, now_ms: int) -> int:
    """Active (unexpired, unrevoked) tokens of a user."""
    wt, u = store.wall_tokens, store.users
    q = (
        select(func.count())
        .select_from(wt.join(u, wt.c.user_id == u.c.user_id))
        .where(u.c.username == username, wt.c.revoked.is_(False), wt.c.expires_ms > now_ms)
    )
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())
