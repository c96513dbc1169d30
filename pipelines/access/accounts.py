"""Accounts: roles and area scope, password login with lock-out, wall-screen tokens.

Pure logic (password KDF, role/scope rules, lock-out arithmetic) plus SQL through
``pipelines.spine.store``. The clock is passed in (``now_ms``); the acting user too
(``actor``: a :class:`User`, or a string such as ``"cli:alice"`` / ``"system"``).
Every mutation and every login outcome writes an audit row in the same transaction
as the change (see :mod:`pipelines.access.audit`).

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte salt, 32-byte key),
  stored as ``scrypt$n$r$p$salt_b64$hash_b64``; compared with ``hmac.compare_digest``.
* Usernames are case-insensitive (stored lower case).
* Lock-out: ``lockout_failures`` failures within ``lockout_window_minutes`` lock the
  username for one window from the failure that reached the limit. Attempts while
  locked are not counted (the lock does not extend itself) and are audited as
  ``login_locked``. Unknown usernames are counted and locked the same way, and every
  attempt runs the KDF once, so responses do not reveal whether a user exists.
* Wall users have no password; they get long-lived tokens (``secrets.token_urlsafe``)
  of which only the sha256 is stored.
* Sessions: a change that must end a user's sessions (role or scope, password, disabling,
  revoking wall tokens) takes ``sessions`` (:class:`pipelines.access.sessions.Sessions`)
  and ends every session of the user in Redis right after the change commits. Without it
  (or with Redis down) the sessions end at their next re-check of the account in SQL
  (``sessions.RECHECK_MS``): the account's ``stamp`` no longer matches theirs.
* What each role may see is :mod:`pipelines.access.policy`; ``can_act`` is read from it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import Connection, Engine, select

from pipelines.access import audit, policy, text
from pipelines.city.geography import LEVELS, City
from pipelines.settings import AuthSettings
from pipelines.spine import store

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MIN_PASSWORD = 10
MAX_PASSWORD = 256
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
_MAX_N = 2**20  # refuse absurd parameters in a stored hash (memory/time bomb)


class RoleSpec(NamedTuple):
    levels: tuple[str, ...]  # area levels the scope may be
    can_act: bool  # acknowledge / dispatch / escalate / close in its scope
    description: str


def _acts(role: str) -> bool:
    return policy.may(role, "warning_actions")


ROLES: dict[str, RoleSpec] = {
    "city_leader": RoleSpec(("city",), _acts("city_leader"), "whole city, read only"),
    "district_commander": RoleSpec(
        ("district",), _acts("district_commander"), "one district: read and act"
    ),
    "street_operator": RoleSpec(("street",), _acts("street_operator"), "one street: read and act"),
    "supervisor": RoleSpec(LEVELS, _acts("supervisor"), "scorecards and exports for its scope"),
    "admin": RoleSpec(("city",), _acts("admin"), "users and audit log"),
    "wall": RoleSpec(LEVELS, _acts("wall"), "read-only wall-screen credential (token, no login)"),
}


class EndsSessions(Protocol):
    """What ends a user's sessions (:class:`pipelines.access.sessions.Sessions`)."""

    def end_user(self, username: str) -> int: ...


# ------------------------------------------------------------------ errors


class AccountError(ValueError):
    """A user error (bad input or state); the message is meant for the operator."""


class UnknownRole(AccountError):
    pass


class ScopeError(AccountError):
    """Unknown area, or an area at a level the role does not allow."""


class DuplicateUser(AccountError):
    pass


class UnknownUser(AccountError):
    pass


class WeakPassword(AccountError):
    pass


class InvalidUsername(AccountError):
    pass


# ------------------------------------------------------------------ values


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    display_name: str
    role: str
    scope_area_id: str
    disabled: bool
    stamp: str = ""  # the account's version: changes with every change of it

    @property
    def can_act(self) -> bool:
        return ROLES[self.role].can_act if self.role in ROLES else False


AuthStatus = Literal["ok", "bad_credentials", "locked", "disabled"]


@dataclass(frozen=True)
class AuthResult:
    status: AuthStatus
    user: User | None = None  # set only when status == "ok"
    locked_until_ms: int | None = None  # set when status == "locked"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Actor = User | str


def _actor_fields(actor: Actor) -> dict[str, str]:
    if isinstance(actor, User):
        return {"actor": actor.username, "role": actor.role, "scope": actor.scope_area_id}
    return {"actor": actor, "role": "", "scope": ""}


# ------------------------------------------------------------------ passwords (pure)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64`` of the password (random salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024 * 1024
    )


def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-time check against an encoded hash; False for None or a malformed hash."""
    try:
        scheme, n_s, r_s, p_s, salt_b64, key_b64 = (encoded or "").split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, key = base64.b64decode(salt_b64, validate=True), base64.b64decode(key_b64)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= _MAX_N) or not (0 < r <= 32) or not (0 < p <= 16):
        return False
    if not key:
        return False
    got = _scrypt(password, salt, n, r, p, len(key))
    return hmac.compare_digest(got, key)


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to check unknown users against, so they cost the same KDF time."""
    return hash_password(secrets.token_urlsafe(16))


def check_password_policy(password: str, username: str | None = None) -> None:
    if len(password) < MIN_PASSWORD:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD} characters")
    if username is not None and password.strip().lower() == username.strip().lower():
        raise WeakPassword("password must not be the username")
    if len(set(password)) < 3:
        raise WeakPassword("password too simple: use at least 3 different characters")


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.match(name):
        raise InvalidUsername(
            f"invalid username {username!r}: 2-64 characters from a-z 0-9 . _ @ -, "
            "starting with a letter or digit"
        )
    return name


# ------------------------------------------------------------------ roles and scope (pure)


def validate_role_scope(city: City, role: str, scope_area_id: str) -> None:
    """Raise unless the role exists, the area exists and is at a level the role allows."""
    spec = ROLES.get(role)
    if spec is None:
        raise UnknownRole(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    level = city.level_of(scope_area_id)
    if level is None:
        raise ScopeError(f"unknown area {scope_area_id!r} (not in city {city.city_id})")
    if level not in spec.levels:
        raise ScopeError(
            f"role {role} needs a scope at level {' or '.join(spec.levels)}, "
            f"but {scope_area_id} is a {level}"
        )


def scope_allows(user_scope: str, area_id: str, city: City) -> bool:
    """True when ``area_id`` is the user's scope area or lies inside it."""
    return user_scope in city.ancestors(area_id)


# ------------------------------------------------------------------ lock-out (pure)


def locked_until(failures_ms: list[int], now_ms: int, limit: int, window_ms: int) -> int | None:
    """When the lock ends (ms), or None if not locked.

    ``failures_ms``: the counted failure times, ascending. A failure that makes
    ``limit`` failures within ``window_ms`` (itself included) locks until it + window.
    """
    if limit <= 0:
        return None
    until: int | None = None
    for i in range(limit - 1, len(failures_ms)):
        t = failures_ms[i]
        if t - failures_ms[i - limit + 1] < window_ms and t + window_ms > now_ms:
            until = max(until or 0, t + window_ms)
    return until


# ------------------------------------------------------------------ SQL helpers


def _user_of(row: Any) -> User:
    m = row._mapping
    return User(
        user_id=str(m["user_id"]),
        username=str(m["username"]),
        display_name=str(m["display_name"]),
        role=str(m["role"]),
        scope_area_id=str(m["scope_area_id"]),
        disabled=bool(m["disabled"]),
        stamp=account_stamp(m["updated_ms"], m["password_hash"]),
    )


def account_stamp(updated_ms: Any, password_hash: Any) -> str:
    """A short fingerprint of an account's version (when it last changed, its password):
    a session started under another one is stale."""
    raw = f"{int(updated_ms or 0)}:{password_hash or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _row(conn: Connection, username: str) -> Any:
    t = store.users
    return conn.execute(select(t).where(t.c.username == username)).first()


def _require(conn: Connection, username: str) -> Any:
    row = _row(conn, normalize_username(username))
    if row is None:
        raise UnknownUser(f"no such user: {username}")
    return row


def get_user(engine: Engine, username: str) -> User | None:
    try:
        name = normalize_username(username)
    except InvalidUsername:
        return None
    with engine.connect() as conn:
        row = _row(conn, name)
    return None if row is None else _user_of(row)


def list_users(engine: Engine) -> list[User]:
    t = store.users
    with engine.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.username)).fetchall()
    return [_user_of(r) for r in rows]


# ------------------------------------------------------------------ mutations


def create_user(
    engine: Engine,
    city: City,
    username: str,
    role: str,
    scope_area_id: str,
    password: str | None = None,
    display_name: str | None = None,
    *,
    now_ms: int,
    actor: Actor = "system",
) -> User:
    """Create an account; wall users take no password, every other role requires one."""
    name = normalize_username(username)
    validate_role_scope(city, role, scope_area_id)
    if role == "wall":
        if password is not None:
            raise AccountError("wall users have no password: issue a wall token instead")
        pw_hash = None
    else:
        if password is None:
            raise WeakPassword(f"role {role} needs a password")
        check_password_policy(password, name)
        pw_hash = hash_password(password)
    shown = text.clean_name(display_name or name) or name
    stamp = account_stamp(now_ms, pw_hash)
    user = User(uuid.uuid4().hex, name, shown, role, scope_area_id, False, stamp)
    with audit.transaction(engine) as conn:
        if _row(conn, name) is not None:
            raise DuplicateUser(f"user {name} already exists")
        conn.execute(
            store.users.insert(),
            [
                {
                    "user_id": user.user_id,
                    "username": name,
                    "display_name": user.display_name,
                    "role": role,
                    "scope_area_id": scope_area_id,
                    "password_hash": pw_hash,
                    "disabled": False,
                    "created_ms": now_ms,
                    "updated_ms": now_ms,
                }
            ],
        )
        audit.append(
            conn,
            **_actor_fields(actor),
            action="user_created",
            target=name,
            detail={"role": role, "scope": scope_area_id, "display_name": user.display_name},
            now_ms=now_ms,
        )
    return user


def _update(
    engine: Engine,
    username: str,
    values: dict[str, Any],
    action: str,
    detail: Any,
    now_ms: int,
    actor: Actor,
    sessions: EndsSessions | None = None,
) -> User:
    """Update one user and audit it; ``detail(old_row)`` builds the audit detail. With
    ``sessions``, every session of the user ends once the change is committed."""
    t = store.users
    with audit.transaction(engine) as conn:
        old = _require(conn, username)
        conn.execute(
            t.update().where(t.c.user_id == old.user_id).values(**values, updated_ms=now_ms)
        )
        audit.append(
            conn,
            **_actor_fields(actor),
            action=action,
            target=old.username,
            detail=detail(old),
            now_ms=now_ms,
        )
        if values.get("role", "wall") != "wall" or values.get("disabled") is True:
            _revoke(conn, old.user_id)
        new = conn.execute(select(t).where(t.c.user_id == old.user_id)).one()
    if sessions is not None:
        end_sessions(sessions, str(old.username))
    return _user_of(new)


def end_sessions(sessions: EndsSessions, username: str) -> int | None:
    """End every session of the user; None when the session store is unreachable (they
    then end at their next re-check of the account in SQL)."""
    try:
        return sessions.end_user(username)
    except Exception as exc:  # Redis down: the SQL stamp still ends them, a little later
        log.warning(
            "could not end the sessions of %s now (%s); they end at their next check", username, exc
        )
        return None


def set_role(
    engine: Engine,
    city: City,
    username: str,
    role: str,
    scope_area_id: str,
    *,
    now_ms: int,
    actor: Actor = "system",
    sessions: EndsSessions | None = None,
) -> User:
    """Change role and scope. Becoming a wall user drops the password; leaving the wall
    role revokes its tokens (the user then needs :func:`set_password` to log in). Every
    session of the user ends (the next one has the new role)."""
    validate_role_scope(city, role, scope_area_id)
    values: dict[str, Any] = {"role": role, "scope_area_id": scope_area_id}
    if role == "wall":
        values["password_hash"] = None
    return _update(
        engine,
        username,
        values,
        "role_changed",
        lambda old: {
            "from_role": old.role,
            "from_scope": old.scope_area_id,
            "role": role,
            "scope": scope_area_id,
        },
        now_ms,
        actor,
        sessions,
    )


def set_password(
    engine: Engine,
    username: str,
    password: str,
    *,
    now_ms: int,
    actor: Actor = "system",
    sessions: EndsSessions | None = None,
) -> User:
    """Set a new password; every session of the user ends."""
    with engine.connect() as conn:
        old = _require(conn, username)
    if old.role == "wall":
        raise AccountError("wall users have no password: issue a wall token instead")
    check_password_policy(password, old.username)
    pw_hash = hash_password(password)
    return _update(
        engine,
        username,
        {"password_hash": pw_hash},
        "password_changed",
        lambda _old: {},
        now_ms,
        actor,
        sessions,
    )


def disable_user(
    engine: Engine,
    username: str,
    *,
    now_ms: int,
    actor: Actor = "system",
    sessions: EndsSessions | None = None,
) -> User:
    """Disable an account (no login, wall tokens revoked, every session ended). History
    and audit stay."""
    return _update(
        engine,
        username,
        {"disabled": True},
        "user_disabled",
        lambda _old: {},
        now_ms,
        actor,
        sessions,
    )


def enable_user(engine: Engine, username: str, *, now_ms: int, actor: Actor = "system") -> User:
    """Enable a disabled account again (its password and role as they were; a wall's
    tokens stay revoked: it needs a new one)."""
    return _update(
        engine, username, {"disabled": False}, "user_enabled", lambda _old: {}, now_ms, actor
    )


# ------------------------------------------------------------------ login


def authenticate(
    engine: Engine,
    auth: AuthSettings,
    username: str,
    password: str,
    now_ms: int,
    *,
    detail: dict[str, Any] | None = None,
) -> AuthResult:
    """Check a password login; audits login / login_failed / login_locked.

    ``detail`` (e.g. ``{"ip": ...}``) is added to the audit row. Wall users cannot
    log in interactively (bad_credentials). ``disabled`` is only reported once the
    password was right, so it reveals nothing to someone guessing.
    """
    try:
        name = normalize_username(username)
    except InvalidUsername:
        name = username.strip().lower()[:64]
    with engine.connect() as conn:
        row = _row(conn, name)
    stored = None if row is None else row._mapping["password_hash"]
    # Always exactly one KDF run, whatever the outcome.
    password_ok = verify_password(password[:MAX_PASSWORD], stored or _dummy_hash())
    password_ok = password_ok and stored is not None and len(password) <= MAX_PASSWORD
    window_ms = int(auth.lockout_window_minutes) * 60_000
    extra = dict(detail or {})
    t = store.login_failures
    with audit.transaction(engine) as conn:
        failures = [
            int(v)
            for (v,) in conn.execute(
                select(t.c.at_ms)
                .where(t.c.username == name, t.c.at_ms > now_ms - 2 * window_ms)
                .order_by(t.c.at_ms)
            )
        ]
        until = locked_until(failures, now_ms, auth.lockout_failures, window_ms)
        user = None if row is None else _user_of(row)
        who = {"actor": name, "role": user.role if user else "", "scope": ""}
        if user is not None:
            who["scope"] = user.scope_area_id
        if until is not None:
            audit.append(
                conn,
                **who,
                action="login_locked",
                target=name,
                detail={**extra, "locked_until_ms": until},
                now_ms=now_ms,
            )
            return AuthResult("locked", locked_until_ms=until)
        if not password_ok or user is None:
            conn.execute(t.insert(), [{"username": name, "at_ms": now_ms}])
            # Keep the table small: older failures can no longer lock anyone.
            conn.execute(t.delete().where(t.c.at_ms <= now_ms - 2 * window_ms))
            reason = "unknown_user" if user is None else "bad_password"
            if user is not None and stored is None:
                reason = "no_password"
            audit.append(
                conn,
                **who,
                action="login_failed",
                target=name,
                detail={**extra, "reason": reason, "failures": len(failures) + 1},
                now_ms=now_ms,
            )
            return AuthResult("bad_credentials")
        conn.execute(t.delete().where(t.c.username == name))
        if user.disabled:
            audit.append(
                conn,
                **who,
                action="login_failed",
                target=name,
                detail={**extra, "reason": "disabled"},
                now_ms=now_ms,
            )
            return AuthResult("disabled")
        audit.append(conn, **who, action="login", target=name, detail=extra, now_ms=now_ms)
        return AuthResult("ok", user=user)


def _revoke(conn: Connection, user_id: str) -> int:
    wt = store.wall_tokens
    res = conn.execute(
        wt.update().where(wt.c.user_id == user_id, wt.c.revoked.is_(False)).values(revoked=True)
    )
    return int(res.rowcount or 0)


def set_display_name(
    engine: Engine, username: str, display_name: str, *, now_ms: int, actor: Actor = "system"
) -> User:
    """Rename an account (what the header shows); role, scope and sessions unchanged."""
    shown = text.clean_name(display_name) or normalize_username(username)
    return _update(
        engine,
        username,
        {"display_name": shown},
        "user_renamed",
        lambda old: {"from": old.display_name, "to": shown},
        now_ms,
        actor,
    )
