"""The time machine's checkpoints: the incident states at whole hours, kept in SQL.

A moment's picture holds the incidents open then or touched in the window before it
(``state.concerned_ids``); finding and reading them on a month of city history is most of
a city-level reconstruction. A checkpoint keeps those states at a whole hour ``H``
(``reconstruct.STATE_COLUMNS``); a moment ``at`` after it then reads only the incidents
touched in ``(H, at]`` and keeps the others' state at ``H`` (``reconstruct.incidents_at``
with a base). Checkpoints are built each from the one an hour before by the same step
(``keeper``), and kept ``live.checkpoint_days``. Every ``FULL_EVERY_H`` hours one keeps
every state; the ones in between keep only the states that changed in their hour (the
incidents touched in it), and the states at their hour are the full one's with each
hour's changes laid over in turn.

A checkpoint is used only while the history up to its hour is the one it was built from.
Every write that adds or removes incident events bumps, in its own transaction, the
version of each hour those events end (``history_marks``: events in ``(h - 1 h, h]``
count at ``h``); a checkpoint keeps the sum of versions up to its hour, read before any
of the events it was built from, and is ignored (then rebuilt) once that sum differs:
a late or turned-down event, a replay.
"""

from __future__ import annotations

import hashlib
import io
import logging
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import polars as pl
from sqlalchemy import Connection, delete, func, or_, select

from pipelines.dispatch.flows import Flows
from pipelines.history.reconstruct import STATE_COLUMNS
from pipelines.spine import store

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
# How far back from a moment a checkpoint is looked for (the hours in between are read
# as events; further back the plain read is as quick)
REACH_MS = 6 * HOUR_MS
# The states' encoding (and what they hold): part of the key, so a new one is rebuilt
FORMAT = "parquet-2"
# A checkpoint of every state this often (hours); the others keep an hour's changes
FULL_EVERY_H = 6


def key_of(city_id: str, tz: str, flows: Flows) -> str:
    """What states are a function of besides history: the city, the time zone of their
    days, the flows of their deadlines (and the format they are kept in)."""
    return hashlib.sha1(f"{FORMAT}|{city_id}|{tz}|{flows!r}".encode()).hexdigest()


def encode(states: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    states.select(STATE_COLUMNS).write_parquet(buf, compression="zstd", compression_level=10)
    return buf.getvalue()


def decode(blob: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(blob))


def marks_upto(conn: Connection, at_ms: int) -> int:
    """The sum of history's versions up to the whole hour ``at_ms`` (events at or before
    it)."""
    m = store.history_marks
    got = conn.execute(select(func.coalesce(func.sum(m.c.version), 0)).where(m.c.hour_ms <= at_ms))
    return int(got.scalar_one())


@dataclass(frozen=True)
class Checkpoint:
    at_ms: int
    marks: int  # the sum of history's versions up to at_ms it was built from
    states: pl.DataFrame


def nearest(conn: Connection, key: str, at_ms: int, reach_ms: int = REACH_MS) -> Checkpoint | None:
    """The newest checkpoint at or before ``at_ms`` (within ``reach_ms``) that still
    holds: history up to its hour is the one it was built from."""
    holding = held(conn, key, at_ms - reach_ms + 1, at_ms)
    for h in sorted(holding, reverse=True):
        states = states_of(conn, key, h)
        if states is not None:
            return Checkpoint(h, holding[h], states)
    return None


def states_of(conn: Connection, key: str, at_ms: int) -> pl.DataFrame | None:
    """The states at the checkpoint ``at_ms``: the newest full checkpoint at or before it
    with every hour's changes since laid over in turn (None: one of them is missing or
    cannot be read, and the moment is then read without checkpoints).
    A checkpoint that holds was built on the one before it while that one held, and none
    of them changed since (any change up to an hour changes the sum up to every later
    hour), so the chain up to a checkpoint that holds holds too."""
    cp = store.history_checkpoints
    full = conn.execute(
        select(func.max(cp.c.at_ms)).where(cp.c.key == key, cp.c.full == 1, cp.c.at_ms <= at_ms)
    ).scalar()
    if full is None:
        return None
    chain = conn.execute(
        select(cp.c.at_ms, cp.c.states)
        .where(cp.c.key == key, cp.c.at_ms >= full, cp.c.at_ms <= at_ms)
        .order_by(cp.c.at_ms)
    ).all()
    if len(chain) != (at_ms - int(full)) // HOUR_MS + 1:
        return None
    try:
        parts = [decode(blob) for _h, blob in chain]
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:  # damaged: as if missing
        log.warning("time machine: checkpoint chain %s..%s unreadable (%s)", full, at_ms, exc)
        return None
    if any(set(STATE_COLUMNS) - set(p.columns) for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    return pl.concat(parts).unique("incident_id", keep="last", maintain_order=True)


def held(conn: Connection, key: str, since_ms: int, until_ms: int) -> dict[int, int]:
    """The hours in ``[since, until]`` whose checkpoint still holds (the sum of versions
    up to the hour is the one it was built from), with that sum."""
    cp, m = store.history_checkpoints, store.history_marks
    kept = conn.execute(
        select(cp.c.at_ms, cp.c.marks).where(
            cp.c.key == key, cp.c.at_ms >= since_ms, cp.c.at_ms <= until_ms
        )
    ).all()
    if not kept:
        return {}
    versions = conn.execute(
        select(m.c.hour_ms, m.c.version).where(m.c.hour_ms <= until_ms).order_by(m.c.hour_ms)
    ).all()
    hours = [int(h) for h, _v in versions]
    upto = list(accumulate(int(v) for _h, v in versions))  # the sum up to each hour
    out = {}
    for h, marks in kept:
        i = bisect_right(hours, int(h))
        if (upto[i - 1] if i else 0) == int(marks):
            out[int(h)] = int(marks)
    return out


def write(
    conn: Connection,
    key: str,
    at_ms: int,
    marks: int,
    states: pl.DataFrame,
    now_ms: int,
    stepped: bool,
) -> int:
    """Keep (or replace) the checkpoint at ``at_ms`` of these states (every one at
    ``at_ms``): all of them when it is the hour of a full one or when it was not
    ``stepped`` from the one an hour before, else those that changed in the hour (their
    last event is in it); returns its size in bytes."""
    full = not stepped or (at_ms // HOUR_MS) % FULL_EVERY_H == 0
    kept = states if full else states.filter(pl.col("ts").cast(pl.Int64) > at_ms - HOUR_MS)
    blob = encode(kept)
    row: dict[str, Any] = {
        "key": key,
        "at_ms": at_ms,
        "marks": marks,
        "incidents": kept.height,
        "full": int(full),
        "built_ms": now_ms,
        "states": blob,
    }
    store.upsert(conn, store.history_checkpoints, [row], ["key", "at_ms"])
    return len(blob)


def prune(conn: Connection, key: str, keep_from_ms: int) -> int:
    """Drop checkpoints older than ``keep_from_ms`` or of another key (another city, time
    zone or flows); returns how many."""
    cp = store.history_checkpoints
    gone = conn.execute(delete(cp).where(or_(cp.c.key != key, cp.c.at_ms < keep_from_ms)))
    return int(gone.rowcount or 0)
