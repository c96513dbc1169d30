"""Server-side sessions in Redis: the browser's cookie carries only a random session id.

A signed cookie alone cannot be taken back: a copy made before logout stays valid until
it expires. So the session itself lives in Redis, under the app's key prefix:

* ``P:session:<h>`` — one session's record (JSON): who (username, role, scope, display
  name, wall), its CSRF token, when it started, was last seen and last re-checked against
  the account in SQL, the account's version when it started (``stamp``), and for a
  wall screen the kiosk token it was signed in with and when that token expires.
  ``<h>`` is the SHA-256 of the session id, so a copy of Redis holds no usable id.
  The key expires with the session (idle timeout, absolute lifetime, token expiry).
* ``P:sessions:<username>`` — the set of that user's session keys: :meth:`Sessions.end_user`
  ends every session of the user at once (logout, password change, disabling, a role or
  scope change, revoking a wall's tokens).

Every request loads the record (:meth:`Sessions.load`): a missing, idle or over-age
session is no session. When Redis cannot be reached, a process keeps using the sessions it
loaded within the last ``GRACE_MS`` (:class:`Recent`), so a short outage shows the pages'
"stale since" marks instead of errors; the account is still re-checked in SQL meanwhile.
Writes that extend a session (:meth:`Sessions.save`) only update a record that still
exists, so a request racing a revocation cannot bring it back.
The clock is passed in (``now_ms``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import redis

TOUCH_MS = 30_000  # last-seen is written at most this often per session
RECHECK_MS = 30_000  # the account is re-read from SQL at least this often per session
GRACE_MS = 120_000  # a session loaded this recently is used while Redis is unreachable


@dataclass(frozen=True)
class Session:
    sid: str  # the cookie's value (never stored in Redis)
    username: str
    role: str
    scope: str
    display_name: str
    wall: bool
    csrf: str
    created_ms: int
    seen_ms: int
    checked_ms: int  # last re-check of the account (or token) in SQL
    stamp: str  # the account's version (accounts.User.stamp) when the session started
    token_id: str = ""  # a wall: the kiosk token that signed it in
    token_expires_ms: int = 0  # a wall: the token's expiry (the session ends with it)


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Sessions:
    """The session store of one app (key prefix); ``idle_ms`` and ``max_ms`` bound a
    person's session (a wall's is bound by its token's expiry instead)."""

    r: redis.Redis
    prefix: str
    idle_ms: int
    max_ms: int

    def key(self, sid: str) -> str:
        return f"{self.prefix}:session:{_digest(sid)}"

    def index(self, username: str) -> str:
        return f"{self.prefix}:sessions:{username}"

    # ---------------------------------------------------------------- lifetime

    def ends_ms(self, s: Session) -> int:
        """When the session ends if nothing else happens (no further request)."""
        if s.wall:
            return s.token_expires_ms
        return min(s.seen_ms + self.idle_ms, s.created_ms + self.max_ms)

    def expired(self, s: Session, now_ms: int) -> bool:
        return now_ms >= self.ends_ms(s)

    # ---------------------------------------------------------------- changes

    def start(
        self,
        *,
        username: str,
        role: str,
        scope: str,
        display_name: str,
        now_ms: int,
        stamp: str,
        wall: bool = False,
        token_id: str = "",
        token_expires_ms: int = 0,
        csrf: str | None = None,
    ) -> Session:
        """A new session (a fresh random id): stored, and indexed under its user."""
        s = Session(
            sid=secrets.token_urlsafe(32),
            username=username,
            role=role,
            scope=scope,
            display_name=display_name,
            wall=wall,
            csrf=csrf or secrets.token_urlsafe(24),
            created_ms=now_ms,
            seen_ms=now_ms,
            checked_ms=now_ms,
            stamp=stamp,
            token_id=token_id,
            token_expires_ms=token_expires_ms,
        )
        ttl = self.ends_ms(s) - now_ms
        if ttl <= 0:
            raise ValueError("the session would end before it starts")
        key, index = self.key(s.sid), self.index(username)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key, _dump(s), px=ttl)
        pipe.sadd(index, key)
        pipe.pttl(index)
        pipe.smembers(index)
        res = pipe.execute()
        index_ttl, members = int(res[2]), res[3]
        pipe = self.r.pipeline(transaction=False)
        if index_ttl < ttl:  # the index lives as long as the longest session in it
            pipe.pexpire(index, ttl)
        # forget sessions that ended by themselves (the index stays small)
        others = [m for m in members if m.decode() != key]
        for m in others:
            pipe.exists(m)
        found = pipe.execute()[-len(others) :] if others else []
        gone = [m for m, alive in zip(others, found, strict=True) if not alive]
        if gone:
            self.r.srem(index, *gone)
        return s

    def load(self, sid: str | None, now_ms: int) -> Session | None:
        """The live session of a cookie's id, or None (unknown, ended, idle, over age)."""
        if not sid or not isinstance(sid, str) or len(sid) > 128:
            return None
        raw = self.r.get(self.key(sid))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            s = Session(sid=sid, **data)
        except (ValueError, TypeError):
            self.r.delete(self.key(sid))
            return None
        if self.expired(s, now_ms):
            self.end(s)
            return None
        return s

    def load_many(self, sids: list[str], now_ms: int) -> dict[str, Session | None]:
        """:meth:`load` for many ids in one round trip (the push server's per-tick re-check
        of every stream it holds); an ended session's record is left to expire."""
        ok = [
            sid for sid in dict.fromkeys(sids) if sid and isinstance(sid, str) and len(sid) <= 128
        ]
        out: dict[str, Session | None] = {sid: None for sid in sids}
        if not ok:
            return out
        pipe = self.r.pipeline(transaction=False)
        for sid in ok:
            pipe.get(self.key(sid))
        for sid, raw in zip(ok, pipe.execute(), strict=True):
            if raw is None:
                continue
            try:
                found = Session(sid=sid, **json.loads(raw))
            except (ValueError, TypeError):
                continue
            out[sid] = None if self.expired(found, now_ms) else found
        return out

    def save(self, s: Session, now_ms: int) -> bool:
        """Store a changed record (last seen, last checked); only while it still exists.
        False when it had ended meanwhile (revoked, expired)."""
        ttl = self.ends_ms(s) - now_ms
        if ttl <= 0:
            self.end(s)
            return False
        return bool(self.r.set(self.key(s.sid), _dump(s), px=ttl, xx=True))

    def seen(self, s: Session, now_ms: int, *, checked: bool = False) -> Session | None:
        """The session as used now: last seen (a person's, at most every ``TOUCH_MS``) and,
        with ``checked``, last re-checked. None when it ended meanwhile (revoked)."""
        touch = not s.wall and now_ms - s.seen_ms >= TOUCH_MS
        if not (touch or checked):
            return s
        new = dataclasses.replace(
            s,
            seen_ms=now_ms if touch else s.seen_ms,
            checked_ms=now_ms if checked else s.checked_ms,
        )
        return new if self.save(new, now_ms) else None

    def seen_many(
        self, found: list[Session], now_ms: int, *, checked: bool = False
    ) -> dict[str, Session | None]:
        """:meth:`seen` for many sessions in one round trip (``checked``: all of them were
        re-checked now)."""
        out: dict[str, Session | None] = {}
        due = []
        for s in found:
            touch = not s.wall and now_ms - s.seen_ms >= TOUCH_MS
            if touch or checked:
                due.append(
                    dataclasses.replace(
                        s,
                        seen_ms=now_ms if touch else s.seen_ms,
                        checked_ms=now_ms if checked else s.checked_ms,
                    )
                )
            else:
                out[s.sid] = s
        if due:
            pipe = self.r.pipeline(transaction=False)
            for s in due:
                pipe.set(self.key(s.sid), _dump(s), px=max(1, self.ends_ms(s) - now_ms), xx=True)
            for s, ok in zip(due, pipe.execute(), strict=True):
                out[s.sid] = s if ok else None  # ended meanwhile (revoked)
        return out

    def end(self, s: Session) -> None:
        """End one session."""
        key = self.key(s.sid)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.srem(self.index(s.username), key)
        pipe.execute()

    def end_user(self, username: str) -> int:
        """End every session of ``username`` at once; returns how many were live."""
        index = self.index(username)
        members = list(self.r.smembers(index))
        pipe = self.r.pipeline(transaction=True)
        for m in members:
            pipe.delete(m)
        pipe.delete(index)
        res = pipe.execute()
        return int(sum(int(n) for n in res[: len(members)]))

    def of_user(self, username: str) -> int:
        """How many live sessions ``username`` has (for the command line and tests)."""
        members = list(self.r.smembers(self.index(username)))
        if not members:
            return 0
        return int(self.r.exists(*members))


@dataclass
class Recent:
    """The sessions one process loaded lately (bounded, thread-safe): what it may go on
    using for ``grace_ms`` while Redis is unreachable."""

    grace_ms: int = GRACE_MS
    size: int = 10_000
    _items: OrderedDict[str, tuple[Session, int]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, s: Session, now_ms: int) -> None:
        key = _digest(s.sid)
        with self._lock:
            self._items[key] = (s, now_ms)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, sid: str, now_ms: int) -> Session | None:
        with self._lock:
            found = self._items.get(_digest(sid))
        if found is None or now_ms - found[1] > self.grace_ms:
            return None
        return found[0]

    def drop(self, sid: str) -> None:
        with self._lock:
            self._items.pop(_digest(sid), None)

    def drop_user(self, username: str) -> None:
        with self._lock:
            for key in [k for k, (s, _) in self._items.items() if s.username == username]:
                del self._items[key]


def _dump(s: Session) -> str:
    data = dataclasses.asdict(s)
    del data["sid"]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
