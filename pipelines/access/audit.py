"""Append-only, keyed hash chain of who did what, when, to what.

Each row carries ``hash = HMAC-SHA256(key, prev_hash + canonical JSON of its content)``
where the content is ``seq, at_ms, actor, role, scope, action, target, detail``
(``detail`` as the stored canonical JSON text) and ``prev_hash`` is the previous row's
hash (64 zeros for seq 1). ``seq`` is assigned as last seq + 1 while holding the append
lock, so the sequence has no gaps even when a transaction rolls back.

**The key** is a secret from the settings (``auth.audit_key`` /
``WANGGE_AUTH_AUDIT_KEY``), never stored in the database: someone who can write the
database but does not have the key cannot write a row that verifies, so they can neither
edit, insert, reorder, nor delete rows and cover it with a recomputed hash or a forged
``purge`` row. With SQLite (one host, ``make run``) an unset key is generated once and
kept in ``var/audit_key``; with a server database (PostgreSQL: several processes and
hosts write one chain) an unset key is a startup error (:class:`AuditKeyMissing`), as a
key generated per host would break the chain. An engine carries its key as an execution
option (:func:`keyed`); appending or verifying through an engine without one is an error.

What it does **not** prove: someone holding the key can still write a chain that
verifies; and deleting the newest rows (the tail), or the whole log, leaves a shorter
chain that verifies. Keep the head (``wangge audit anchor``: seq and hash of the newest
row) somewhere the database's writers cannot reach, and check it later with
``wangge audit verify --anchor SEQ:HASH``.

**Chains from before the key** (plain ``sha256(prev_hash + content)``): the first keyed
append writes an ``audit_keyed`` row whose ``prev_hash`` is the old head (its detail
records the old head's seq and hash). Verification accepts unkeyed rows only before that
row: the old segment can no longer be rewritten (its head is sealed by a keyed row), and
an unkeyed row after the first keyed one, or a chain with no keyed row at all, fails.

Appends are serialized across threads and processes: on PostgreSQL with a
transaction-scoped advisory lock, on SQLite with ``BEGIN IMMEDIATE`` (the database
write lock, waited for through the engine's busy timeout). Callers that change other
tables together with their audit row use :func:`transaction` + :func:`append`, so the
change and its record commit or roll back together.

Retention: :func:`purge` deletes a *prefix* of the chain (the oldest rows, by seq)
and, in the same transaction, appends a ``purge`` row whose detail records
``purged_through_seq`` and ``last_purged_hash``. :func:`verify` accepts a chain that
starts after seq 1 only when a (hash-verified) purge row anchors exactly that start,
so a legitimate purge verifies while any edit, deletion or reordering of kept rows —
or an unrecorded deletion at the head — fails.

"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, func, select

from pipelines.settings import Settings
from pipelines.spine import store

GENESIS = "0" * 64
ADVISORY_LOCK_KEY = 0x5747_4155_4449_5400  # "WGAUDIT" — one chain per database
CONTENT_FIELDS = ("seq", "at_ms", "actor", "role", "scope", "action", "target", "detail")
DAY_MS = 86_400_000

# Every action the platform writes, with what it means: the registry the audit page's
# words and the tests follow (tests/unit/test_audit_actions.py finds every action written
# in the code and requires it here, with a word in both languages).
ACTIONS = {
    "login": "successful interactive login",
    "login_failed": "wrong password or unknown user",
    "login_locked": "attempt while locked out (too many failures)",
    "login_rate_limited": "sign-in attempts from one address came too fast",
    "logout": "session ended",
    "sso_login": "signed in through the single sign-on provider",
    "sso_login_failed": "a single sign-on attempt was refused, with the reason",
    "denied": "an action or page outside the user's role or scope",
    "user_created": "an account was created",
    "role_changed": "role and/or scope changed",
    "user_renamed": "an account's display name changed",
    "user_disabled": "an account was disabled",
    "user_enabled": "an account was enabled again",
    "password_changed": "a password was set",
    "session_revoked": "a session ended because its account or token changed",
    "wall_token_issued": "a wall-screen token was issued",
    "wall_tokens_revoked": "a wall user's tokens were revoked",
    "wall_login": "a wall screen signed in with its token",
    "wall_token_rejected": "a wall token was refused (unknown, expired or revoked)",
    "warning_acknowledge": "an early warning was acknowledged (stops its escalation)",
    "warning_dispatch": "an early warning was dispatched to a unit or person",
    "warning_resolve": "an early warning was resolved",
    "warning_dismiss": "an early warning was dismissed, with a reason",
    # a command centre's action on an incident (``dispatch.matrix.ACTIONS``), or its refusal
    "incident.accept": "an incident was accepted",
    "incident.dispatch": "an incident was dispatched to a unit or worker",
    "incident.handle": "handling of an incident started",
    "incident.return": "an incident was returned",
    "incident.escalate": "an incident was escalated to the level above",
    "incident.resolve": "an incident was resolved",
    "incident.verify_pass": "an incident's resolution passed verification",
    "incident.verify_fail": "an incident's resolution failed verification",
    "incident.close": "an incident was closed",
    "incident.merge": "an incident was merged into another as its duplicate",
    "incident.refused": "an action on an incident was refused (role, scope or assignment)",
    "track_view": "a worker's or a grid's track was replayed",
    "track_export": "a track was exported",
    "track_export_limited": "track exports came too fast",
    "export": "a scorecard or table was exported",
    "units_import": "the dispatch units were imported",
    "workers_import": "the grid workers' roster was imported",
    "gateway_credential_created": "a gateway credential was created",
    "gateway_credential_revoked": "a gateway credential was revoked",
    "purge": "old audit rows were deleted under the retention policy",
    "city_rebind": "the database was bound to another city or its new areas (wangge geo rebind)",
    "audit_keyed": "the chain continues keyed (HMAC); detail: the unkeyed head it seals",
}
MARKER = "audit_keyed"
KEY_OPTION = "wangge_audit_key"  # the engine's execution option carrying the key


# ------------------------------------------------------------------ the key


class AuditKeyMissing(RuntimeError):
    """No audit key: configure ``auth.audit_key`` (``WANGGE_AUTH_AUDIT_KEY``)."""


def key_for(settings: Settings) -> bytes:
    """The audit key of a deployment: ``auth.audit_key``; with SQLite and none set, one
    generated once and kept in ``<var_dir>/audit_key``; else :class:`AuditKeyMissing`."""
    if settings.auth.audit_key:
        return settings.auth.audit_key.encode("utf-8")
    url = settings.database_url
    if not url.startswith("sqlite"):
        raise AuditKeyMissing(
            "auth.audit_key is not set. With a server database every process that writes "
            "the audit log (dashboard, command line) needs the same secret key, kept out "
            "of the database: set WANGGE_AUTH_AUDIT_KEY to a long random value, e.g. "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`, on every host."
        )
    path = Path(settings.path(settings.run.var_dir)) / "audit_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            path.hardlink_to(tmp)  # never replaces a key another process just wrote
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode("utf-8")


@dataclass
class _LazyKey:
    """A key resolved on first use (commands that never audit never need one)."""

    resolve: Callable[[], bytes]
    value: bytes | None = field(default=None, repr=False)

    def get(self) -> bytes:
        if self.value is None:
            self.value = self.resolve()
        return self.value


def keyed(engine: Engine, key: bytes | str | Callable[[], bytes]) -> Engine:
    """The engine, carrying the audit key (bytes, text, or a function giving it on first
    use) for every connection it makes."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    value: Any = key if isinstance(key, bytes) else _LazyKey(key)
    if isinstance(value, bytes) and not value:
        raise AuditKeyMissing("the audit key is empty")
    return engine.execution_options(**{KEY_OPTION: value})


def key_of(conn: Connection | Engine) -> bytes:
    """The audit key a connection (or engine) carries; :class:`AuditKeyMissing` if none."""
    value = conn.get_execution_options().get(KEY_OPTION)
    if isinstance(value, _LazyKey):
        value = value.get()
    if not value:
        raise AuditKeyMissing(
            "this database engine carries no audit key: build it with "
            "audit.keyed(engine, audit.key_for(settings))"
        )
    return bytes(value)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def row_hash(prev_hash: str, content: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256(key, prev_hash + canonical JSON of the content fields), hex; without a
    key the unkeyed hash of chains written before the key (sha256 of the same text)."""
    body = (prev_hash + canonical_json({k: content[k] for k in CONTENT_FIELDS})).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _is_keyed(m: Any, key: bytes) -> bool:
    return hmac.compare_digest(row_hash(m["prev_hash"], dict(m), key), str(m["hash"]))


def _is_unkeyed(m: Any) -> bool:
    return hmac.compare_digest(row_hash(m["prev_hash"], dict(m)), str(m["hash"]))


# ------------------------------------------------------------------ appending


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the audit append lock; commits on success, else rolls back."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def append(
    conn: Connection,
    *,
    actor: str,
    role: str,
    scope: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    now_ms: int,
) -> int:
    """Append one row inside :func:`transaction` (the lock must be held); returns its seq.

    The first keyed append after rows written without a key seals them with an
    ``audit_keyed`` row first (see the module's docstring)."""
    key = key_of(conn)
    t = store.audit_log
    last = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
    if _unsealed(conn, key, last):
        _insert(conn, key, last, _MARKER_FIELDS, _marker_detail(last), now_ms)
        last = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
    fields = {"actor": actor, "role": role, "scope": scope, "action": action, "target": target}
    return _insert(conn, key, last, fields, detail, now_ms)


_MARKER_FIELDS = {
    "actor": "system",
    "role": "",
    "scope": "",
    "action": MARKER,
    "target": "audit_log",
}


def _marker_detail(last: Any) -> dict[str, Any]:
    return {"unkeyed_through_seq": int(last.seq), "unkeyed_head": str(last.hash)}


def _insert(
    conn: Connection,
    key: bytes,
    last: Any,
    fields: dict[str, str],
    detail: dict[str, Any] | None,
    now_ms: int,
) -> int:
    t = store.audit_log
    seq, prev = (1, GENESIS) if last is None else (int(last.seq) + 1, str(last.hash))
    actor, role, scope = fields["actor"], fields["role"], fields["scope"]
    action, target = fields["action"], fields["target"]
    row: dict[str, Any] = {
        "seq": seq,
        "at_ms": int(now_ms),
        "actor": actor,
        "role": role or "",
        "scope": scope or "",
        "action": action,
        "target": target or "",
        "detail": canonical_json(detail or {}),
    }
    row["prev_hash"] = prev
    row["hash"] = row_hash(prev, row, key)
    conn.execute(t.insert(), [row])
    return seq


def seal(engine: Engine, now_ms: int) -> bool:
    """Seal a chain written before the key (an ``audit_keyed`` row), if it is one; True
    when a row was written. Run at startup, so a fresh upgrade verifies at once."""
    key = key_of(engine)
    t = store.audit_log
    with engine.connect() as conn:
        last = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
        if not _unsealed(conn, key, last):
            return False
    with transaction(engine) as conn:
        last = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
        if not _unsealed(conn, key, last):
            return False
        _insert(conn, key, last, _MARKER_FIELDS, _marker_detail(last), now_ms)
    return True


def _unsealed(conn: Connection, key: bytes, last: Any) -> bool:
    """Is the chain one written before the key, not sealed yet? Its newest row has the
    unkeyed hash, its oldest kept row is not keyed, and no ``audit_keyed`` row exists.
    (An unkeyed row at the end of a keyed chain is a forgery: never sealed.)"""
    if last is None or _is_keyed(last._mapping, key) or not _is_unkeyed(last._mapping):
        return False
    t = store.audit_log
    first = conn.execute(select(t).order_by(t.c.seq).limit(1)).first()
    if first is None or _is_keyed(first._mapping, key):
        return False
    sealed = conn.execute(select(t.c.seq).where(t.c.action == MARKER).limit(1)).first()
    return sealed is None


def record(
    engine: Engine,
    *,
    actor: str,
    role: str = "",
    scope: str = "",
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    now_ms: int,
) -> int:
    """Append one audit row in its own transaction (safe with concurrent writers)."""
    with transaction(engine) as conn:
        return append(
            conn,
            actor=actor,
            role=role,
            scope=scope,
            action=action,
            target=target,
            detail=detail,
            now_ms=now_ms,
        )


# ------------------------------------------------------------------ verifying


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int  # rows checked
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str = GENESIS  # hash of the newest row: keep a copy elsewhere
    bad_seq: int | None = None  # first bad (or missing) seq
    reason: str = ""
    unkeyed: int = 0  # rows from before the key, sealed by the ``audit_keyed`` row

    def describe(self) -> str:
        if self.ok:
            if not self.rows:
                return "audit log OK: empty"
            old = f" ({self.unkeyed} from before the audit key, sealed)" if self.unkeyed else ""
            return (
                f"audit log OK: {self.rows} rows{old}, seq {self.first_seq}..{self.last_seq}, "
                f"head hash {self.head_hash}"
            )
        return f"audit log TAMPERED at seq {self.bad_seq}: {self.reason}"

    @property
    def anchor(self) -> str:
        """``SEQ:HASH`` of the head: keep it elsewhere, check it with ``verify(anchor=…)``."""
        return f"{self.last_seq or 0}:{self.head_hash}"


def _purge_anchors(conn: Connection) -> set[tuple[int, str]]:
    """(purged_through_seq, last_purged_hash) recorded by the purge rows still kept."""
    t = store.audit_log
    out: set[tuple[int, str]] = set()
    for (detail,) in conn.execute(select(t.c.detail).where(t.c.action == "purge")):
        try:
            d = json.loads(detail)
            out.add((int(d["purged_through_seq"]), str(d["last_purged_hash"])))
        except (ValueError, KeyError, TypeError):
            continue  # a malformed purge row fails its own hash check below
    return out


def _check_link(
    m: Any, prev_seq: int | None, prev_hash: str, anchors: set[tuple[int, str]]
) -> tuple[int, str] | None:
    """(bad seq, why) when a row does not follow ``prev_seq`` (None: the first kept row)."""
    seq = int(m["seq"])
    if prev_seq is None:
        if seq != 1 and (seq - 1, m["prev_hash"]) not in anchors:
            earlier = [through for through, _ in anchors if through < seq - 1]
            gone = max(earlier, default=0) + 1
            return gone, (
                f"seq {gone}..{seq - 1} missing before seq {seq} and no purge row "
                "records their removal (rows deleted)"
            )
        if seq == 1 and m["prev_hash"] != GENESIS:
            return seq, "the first row does not start from the genesis hash"
    elif seq != prev_seq + 1:
        missing = f"seq {prev_seq + 1}" + ("" if seq == prev_seq + 2 else f"..{seq - 1}")
        return prev_seq + 1, f"{missing} missing before seq {seq} (row deleted)"
    elif m["prev_hash"] != prev_hash:
        return seq, (
            f"prev_hash does not match the hash of seq {prev_seq} "
            "(rows reordered, or a hash altered)"
        )
    return None


@dataclass
class _Walk:
    """The verifier's state along the chain."""

    key: bytes
    anchors: set[tuple[int, str]]
    rows: int = 0
    first: int | None = None
    prev_seq: int | None = None
    prev_hash: str = GENESIS
    unkeyed: int = 0
    keyed: bool = False  # the keyed segment has started

    def step(self, m: Any) -> tuple[int, str] | None:
        problem = _check_link(m, self.prev_seq, self.prev_hash, self.anchors)
        if problem is not None:
            return problem
        seq = int(m["seq"])
        if _is_keyed(m, self.key):
            if not self.keyed and self.unkeyed and m["action"] != MARKER:
                return seq, "the keyed rows start without an audit_keyed row (rows forged)"
            self.keyed = True
        elif not self.keyed and _is_unkeyed(m):
            self.unkeyed += 1  # from before the key: sealed by the audit_keyed row later
        else:
            return seq, (
                "content does not match its hash (row edited or forged, its hash altered, "
                "or a different audit key)"
            )
        self.rows += 1
        self.first = seq if self.first is None else self.first
        self.prev_seq, self.prev_hash = seq, str(m["hash"])
        return None

    def result(self, problem: tuple[int, str] | None = None) -> VerifyResult:
        if problem is None and self.rows and not self.keyed:
            problem = (
                (self.prev_seq or 0) + 1,
                "no keyed row: the chain was never continued with the audit key, or its "
                "keyed rows were removed (the next audited action seals it)",
            )
        ok = problem is None
        bad, why = problem if problem else (None, "")
        return VerifyResult(
            ok, self.rows, self.first, self.prev_seq, self.prev_hash, bad, why, self.unkeyed
        )


def verify(engine: Engine, chunk: int = 5000, *, anchor: str | None = None) -> VerifyResult:
    """Walk the chain in seq order; the first edited, missing, forged or relinked row
    fails it. ``anchor`` (``SEQ:HASH``, a head kept elsewhere) must still be in the chain,
    with that hash (unless purged under the retention since)."""
    t = store.audit_log
    with engine.connect() as conn:
        walk = _Walk(key_of(conn), _purge_anchors(conn))
        res = conn.execution_options(stream_results=True).execute(select(t).order_by(t.c.seq))
        while rows := res.fetchmany(chunk):
            for r in rows:
                problem = walk.step(r._mapping)
                if problem is not None:
                    return walk.result(problem)
        result = walk.result()
        if result.ok and anchor is not None:
            problem = _check_anchor(conn, anchor, result)
            if problem is not None:
                return dataclasses.replace(result, ok=False, bad_seq=problem[0], reason=problem[1])
    return result


def _check_anchor(conn: Connection, anchor: str, result: VerifyResult) -> tuple[int, str] | None:
    try:
        seq_s, want = anchor.strip().split(":", 1)
        seq = int(seq_s)
    except ValueError:
        return 0, f"not an anchor (SEQ:HASH): {anchor!r}"
    if seq == 0:
        return None
    t = store.audit_log
    got = conn.execute(select(t.c.hash).where(t.c.seq == seq)).scalar()
    if got is None:
        if result.first_seq is not None and seq < result.first_seq:
            return None  # purged under the retention since (the purge row anchors the rest)
        return seq, f"the anchored row seq {seq} is gone (newest rows deleted)"
    if got != want:
        return seq, f"seq {seq} no longer has the anchored hash (chain rewritten)"
    return None


# ------------------------------------------------------------------ retention


def purge(
    engine: Engine, retention_days: int, now_ms: int, *, actor: str = "system", role: str = ""
) -> int:
    """Delete the oldest rows (a seq prefix) older than the retention; returns rows deleted.

    The deletion and a ``purge`` row anchoring the new start of the chain commit together.
    Rows newer than the cutoff stop the prefix, even when older rows follow them.
    """
    t = store.audit_log
    cutoff = int(now_ms) - int(retention_days) * DAY_MS
    with transaction(engine) as conn:
        first_seq, last_seq = conn.execute(select(func.min(t.c.seq), func.max(t.c.seq))).one()
        keep_from = conn.execute(select(func.min(t.c.seq)).where(t.c.at_ms >= cutoff)).scalar()
        if first_seq is None:
            through, anchor = 0, GENESIS
        else:
            through = int(last_seq) if keep_from is None else int(keep_from) - 1
            if through < first_seq:  # nothing to delete: anchor the current start
                through = int(first_seq) - 1
                anchor = str(
                    conn.execute(select(t.c.prev_hash).where(t.c.seq == first_seq)).scalar_one()
                )
            else:
                anchor = str(conn.execute(select(t.c.hash).where(t.c.seq == through)).scalar_one())
        deleted = 0
        if first_seq is not None and through >= first_seq:
            deleted = int(conn.execute(t.delete().where(t.c.seq <= through)).rowcount or 0)
        append(
            conn,
            actor=actor,
            role=role,
            scope="",
            action="purge",
            target="audit_log",
            detail={
                "rows": deleted,
                "purged_through_seq": through,
                "last_purged_hash": anchor,
                "cutoff_ms": cutoff,
                "retention_days": int(retention_days),
            },
            now_ms=now_ms,
        )
    return deleted


# ------------------------------------------------------------------ reading

QUERY_SCHEMA = {
    "seq": pl.Int64,
    "at_ms": pl.Int64,
    "actor": pl.String,
    "role": pl.String,
    "scope": pl.String,
    "action": pl.String,
    "target": pl.String,
    "detail": pl.String,
}


def row(engine: Engine, seq: int) -> dict[str, Any] | None:
    """One stored row by seq (for showing a bad row), or None."""
    t = store.audit_log
    with engine.connect() as conn:
        found = conn.execute(select(t).where(t.c.seq == seq)).first()
    return None if found is None else dict(found._mapping)


def query(
    engine: Engine,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 500,
) -> pl.DataFrame:
    """Newest first, filtered; ``until_ms`` is exclusive. Columns: QUERY_SCHEMA."""
    t = store.audit_log
    q = select(*(t.c[c] for c in QUERY_SCHEMA))
    if actor is not None:
        q = q.where(t.c.actor == actor)
    if action is not None:
        q = q.where(t.c.action == action)
    if target is not None:
        q = q.where(t.c.target == target)
    if since_ms is not None:
        q = q.where(t.c.at_ms >= since_ms)
    if until_ms is not None:
        q = q.where(t.c.at_ms < until_ms)
    q = q.order_by(t.c.seq.desc()).limit(max(0, int(limit)))
    with engine.connect() as conn:
        rows = conn.execute(q).fetchall()
    return pl.DataFrame(rows, schema=QUERY_SCHEMA, orient="row")
