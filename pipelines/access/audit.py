"""Append-only, hash-chained audit log (who did what, when, to what).

Each row carries ``hash = sha256(prev_hash + canonical JSON of its content)`` where
the content is ``seq, at_ms, actor, role, scope, action, target, detail`` (``detail``
as the stored canonical JSON text) and ``prev_hash`` is the previous row's hash (64
zeros for seq 1). ``seq`` is assigned as last seq + 1 while holding the append lock,
so the sequence has no gaps even when a transaction rolls back.

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

Limits: a plain hash chain cannot reveal truncation of the newest rows, or a complete
rewrite by someone who recomputes every hash; compare ``VerifyResult.head_hash`` with
a copy kept elsewhere (printed by ``wangge audit verify``) to catch those.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, func, select

from pipelines.spine import store

GENESIS = "0" * 64
ADVISORY_LOCK_KEY = 0x5747_4155_4449_5400  # "WGAUDIT" — one chain per database
CONTENT_FIELDS = ("seq", "at_ms", "actor", "role", "scope", "action", "target", "detail")
DAY_MS = 86_400_000

# The actions the platform writes (others may be added; this is documentation).
ACTIONS = {
    "login": "successful interactive login",
    "login_failed": "wrong password or unknown user",
    "login_locked": "attempt while locked out (too many failures)",
    "logout": "session ended",
    "denied": "an action or page outside the user's role or scope",
    "user_created": "an account was created",
    "role_changed": "role and/or scope changed",
    "user_disabled": "an account was disabled",
    "user_enabled": "an account was enabled again",
    "password_changed": "a password was set",
    "wall_token_issued": "a wall-screen token was issued",
    "wall_tokens_revoked": "a wall user's tokens were revoked",
    "warning_acknowledge": "an early warning was acknowledged (stops its escalation)",
    "warning_dispatch": "an early warning was dispatched to a unit or person",
    "warning_resolve": "an early warning was resolved",
    "warning_dismiss": "an early warning was dismissed, with a reason",
    "export": "a scorecard or table was exported",
    "purge": "old audit rows were deleted under the retention policy",
    "city_rebind": "the database was bound to another city or its new areas (wangge geo rebind)",
}


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )


def row_hash(prev_hash: str, content: dict[str, Any]) -> str:
    """sha256(prev_hash + canonical JSON of the content fields), hex."""
    body = canonical_json({k: content[k] for k in CONTENT_FIELDS})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


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
    """Append one row inside :func:`transaction` (the lock must be held); returns its seq."""
    t = store.audit_log
    last = conn.execute(select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)).first()
    seq, prev = (1, GENESIS) if last is None else (int(last.seq) + 1, str(last.hash))
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
    row["hash"] = row_hash(prev, row)
    conn.execute(t.insert(), [row])
    return seq


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

    def describe(self) -> str:
        if self.ok:
            if not self.rows:
                return "audit log OK: empty"
            return (
                f"audit log OK: {self.rows} rows, seq {self.first_seq}..{self.last_seq}, "
                f"head hash {self.head_hash}"
            )
        return f"audit log TAMPERED at seq {self.bad_seq}: {self.reason}"


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


def _check_row(
    m: Any, prev_seq: int | None, prev_hash: str, anchors: set[tuple[int, str]]
) -> tuple[int, str] | None:
    """(bad seq, why) for a row following ``prev_seq`` (None: the first kept row)."""
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
    if row_hash(m["prev_hash"], dict(m)) != m["hash"]:
        return seq, "content does not match its hash (row edited, or its hash altered)"
    return None


def verify(engine: Engine, chunk: int = 5000) -> VerifyResult:
    """Walk the chain in seq order; the first edited, missing or relinked row fails it."""
    t = store.audit_log
    n, first, prev_seq, prev_hash = 0, None, None, GENESIS
    with engine.connect() as conn:
        anchors = _purge_anchors(conn)
        res = conn.execution_options(stream_results=True).execute(select(t).order_by(t.c.seq))
        while rows := res.fetchmany(chunk):
            for r in rows:
                m = r._mapping
                problem = _check_row(m, prev_seq, prev_hash, anchors)
                if problem is not None:
                    return VerifyResult(False, n, first, prev_seq, prev_hash, *problem)
                n += 1
                first = int(m["seq"]) if first is None else first
                prev_seq, prev_hash = int(m["seq"]), str(m["hash"])
    return VerifyResult(True, n, first, prev_seq, prev_hash)


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
