"""Simulated pasts (``simulated_history``): what a backfill wrote, and what follows from it.

A backfill records its span once every event is in SQL. Two things read it:

* the time machine: a moment inside the span has worker tracks thinned to one point per
  worker every ``track_every_s``, so a worker counts as online when seen within that
  interval (a quarter more for its jitter) rather than ``live.online_minutes`` — otherwise
  the simulated past would show five in six workers on shift as offline;
* the warnings' replay (``warnings.replay``): how far the engine has been evaluated over
  the span, so a replay cut short (Ctrl-C, a crash) is resumed at the next start.

A backfill records its span when it begins (``begin``) and how far it got as it goes
(``advanced``): one cut short is resumed at the next start (``unfinished``,
``cli.backfill``) from the moment up to which every event is in SQL, until ``finish``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from pipelines.spine import store


@dataclass(frozen=True)
class Span:
    start_ms: int
    end_ms: int
    track_every_s: float
    warnings_ms: int | None  # the warnings evaluated up to this moment (None: not begun)
    resume_ms: int | None = None  # under way or cut short: every event up to it is in SQL
    reached_ms: int | None = None  # … and the furthest it published (None: finished)
    fingerprint: str | None = None  # what its events follow from (``cli.backfill``)

    @property
    def finished(self) -> bool:
        return self.resume_ms is None


def online_minutes(base: int, track_every_s: float | None) -> int:
    """The online window over tracks kept every ``track_every_s`` (None: as they came)."""
    if not track_every_s:
        return base
    return max(base, math.ceil(track_every_s * 1.25 / 60))


def begin(engine: Engine, start_ms: int, track_every_s: float, fingerprint: str) -> Span:
    """A backfill from ``start_ms`` begins: nothing of it is in SQL yet. One cut short
    earlier is given up (it ends where it got: a resume would now interleave with this)."""
    t = store.simulated_history
    span = Span(start_ms, start_ms, track_every_s, None, start_ms, start_ms, fingerprint)
    give_up(engine)
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                start_ms=start_ms,
                end_ms=start_ms,
                track_every_s=track_every_s,
                resume_ms=start_ms,
                reached_ms=start_ms,
                fingerprint=fingerprint,
            )
        )
    return span


def advanced(engine: Engine, start_ms: int, resume_ms: int, reached_ms: int) -> None:
    """The backfill from ``start_ms`` has every event up to ``resume_ms`` in SQL and has
    published up to ``reached_ms`` (its one writer never moves either back)."""
    t = store.simulated_history
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.start_ms == start_ms, t.c.resume_ms.is_not(None))
            .values(resume_ms=resume_ms, reached_ms=reached_ms, end_ms=reached_ms)
        )


def finish(engine: Engine, start_ms: int, end_ms: int) -> Span:
    """The backfill from ``start_ms`` is done: every event up to ``end_ms`` is in SQL."""
    t = store.simulated_history
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.start_ms == start_ms)
            .values(end_ms=end_ms, resume_ms=None, reached_ms=None, fingerprint=None)
        )
        row = conn.execute(select(t).where(t.c.start_ms == start_ms)).one()
    return Span(*row)


def give_up(engine: Engine) -> None:
    """Backfills cut short are not resumed: each ends where it got (``reached_ms``)."""
    t = store.simulated_history
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.resume_ms.is_not(None))
            .values(resume_ms=None, reached_ms=None, fingerprint=None)
        )


def unfinished(engine: Engine) -> Span | None:
    """The newest backfill under way or cut short, if any."""
    t = store.simulated_history
    with engine.connect() as conn:
        row = conn.execute(
            select(t).where(t.c.resume_ms.is_not(None)).order_by(t.c.start_ms.desc()).limit(1)
        ).first()
    return None if row is None else Span(*row)


def replayed(engine: Engine, span: Span, at_ms: int) -> None:
    """The warnings of ``span`` are evaluated up to ``at_ms``."""
    t = store.simulated_history
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.start_ms == span.start_ms).values(warnings_ms=at_ms))


def unreplayed(engine: Engine) -> Span | None:
    """The newest span whose warnings are not evaluated to its end, if any."""
    t = store.simulated_history
    with engine.connect() as conn:
        row = conn.execute(
            select(t)
            .where((t.c.warnings_ms.is_(None)) | (t.c.warnings_ms < t.c.end_ms))
            .where(t.c.resume_ms.is_(None))  # (a backfill's past once it is all there)
            .order_by(t.c.start_ms.desc())
            .limit(1)
        ).first()
    return None if row is None else Span(*row)


def covering(conn: Connection, at_ms: int) -> Span | None:
    """The span holding the moment ``at_ms``, if any."""
    t = store.simulated_history
    row = conn.execute(
        select(t).where(t.c.start_ms <= at_ms, t.c.end_ms >= at_ms).order_by(t.c.start_ms.desc())
    ).first()
    return None if row is None else Span(*row)


def online_minutes_at(engine: Engine, base: int, at_ms: int) -> int:
    """The online window for the moment ``at_ms`` (widened inside a simulated past)."""
    with engine.connect() as conn:
        span = covering(conn, at_ms)
    return online_minutes(base, span.track_every_s if span else None)
