"""Incidents in SQL: the append-only ``incident_events``, the decision of a batch of
report events (``decide_reports``) and the recomputed ``incidents`` rows with their
lifecycle summary (what the scorecards read)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    or_,
    select,
)

from pipelines.spine.events import stream_key, stream_order

if TYPE_CHECKING:
    from pipelines.dispatch.flows import Flows
from pipelines.spine.store.schema import incident_events, incidents, report_rejects
from pipelines.spine.store.sql import (
    _rows_in,
    bump_marks,
    frame_schema,
    insert_ignore,
    insert_ignore_frame,
    lock_incidents,
    lock_keys,
    upsert,
    upsert_frame,
    write_lock,
)

EVENT_COLUMNS = [c.name for c in incident_events.columns]
INCIDENT_SCHEMA = frame_schema(incidents)
INCIDENT_COLUMNS = list(INCIDENT_SCHEMA)


def persist_report_events(engine: Engine, events: pl.DataFrame, flows: Flows | None = None) -> None:
    """Append events (idempotent) and recompute the current state of touched incidents."""
    if events.is_empty():
        return
    rows = with_action_columns(events).select(EVENT_COLUMNS).to_dicts()
    ids = events["incident_id"].unique().to_list()
    with engine.begin() as conn:
        lock_incidents(conn, ids)
        if conn.dialect.name == "postgresql":
            # the key may be (event_id, ts_ms) (partitioned): an event id stored already
            # is skipped here, whatever its time
            eids = [r["event_id"] for r in rows]
            lock_keys(conn, [f"event:{e}" for e in eids])
            seen = set(_rows_in(conn, incident_events, "event_id", eids, ["event_id"])["event_id"])
            rows = [r for r in rows if r["event_id"] not in seen]
        insert_ignore(conn, incident_events, rows)
        bump_marks(conn, (r["ts_ms"] for r in rows))
        hist = _events_of(conn, ids)
        upsert(conn, incidents, incident_rows(hist, flows), ["incident_id"])


def _events_of(conn: Connection, incident_ids: list[str]) -> pl.DataFrame:
    return _rows_in(conn, incident_events, "incident_id", incident_ids, EVENT_COLUMNS)


REJECT_COLUMNS = [c.name for c in report_rejects.columns]


@dataclass
class ReportDecision:
    """What ``decide_reports`` decided (and ``write_decision`` writes) for one batch."""

    verdicts: dict[str, str]  # batch entry → "accepted" or a dead-letter reason
    known: dict[str, str]  # batch entries decided earlier (redelivered) → "A" or "X"
    turned_down: pl.DataFrame  # accepted entries of earlier batches now rejected (+ verdict)
    before: pl.DataFrame  # accepted events of the incidents decided from history, before
    after: pl.DataFrame  # … and after this batch (not those decided from their rows)
    changed: set[str]  # incidents whose set of accepted events changed
    concerned: set[str] = field(default_factory=set)  # every incident read
    new_accepted: pl.DataFrame | None = None  # to insert into ``incident_events``
    rejects: pl.DataFrame | None = None  # to insert into ``report_rejects``
    rows: pl.DataFrame | None = None  # the concerned incidents' ``incidents`` rows after
    prior: pl.DataFrame | None = None  # rows before of the incidents decided from them
    gone: set[str] = field(default_factory=set)  # incidents left without accepted events


def decide_reports(
    conn: Connection,
    batch: pl.DataFrame,
    flows: Flows | None = None,
    *,
    write: bool = True,
    tz: str | None = None,
) -> ReportDecision:
    """Decide a batch of valid report events (``incident_events`` columns) against the
    stored history and write the outcome (``write_decision``; unless ``write`` is false,
    when the caller writes it later in the same transaction): accepted events into
    ``incident_events``, rejected ones into ``report_rejects``, the touched ``incidents``
    rows recomputed.

    Locks the incidents and event ids concerned first (``lock_keys``), so concurrent
    batches are decided one after the other; the rule itself is the pure
    ``aggregate.decide_reports``. Earlier entries that a batch turns down (an event id
    claimed by an entry earlier in the stream, a ``closed`` that arrived late) move
    from ``incident_events`` to ``report_rejects``.

    Incremental (with ``tz``): an incident whose ``incidents`` row keeps its fold state
    (``acc`` in ``tz``, the walk columns), none of whose batch event ids is stored yet and
    all of whose batch entries come after its last stored entry in walk order is decided
    from that row alone: no stored entry can be turned down (each is decided by the
    entries before it) and a new one only needs to know whether an earlier entry with
    another event id exists, and whether one is a ``closed`` (the row's walk columns,
    given to the rule as one stand-in entry). Its new row folds the new events onto the
    old one (``fold_rows``). Every other incident concerned is decided from its full
    history, as is every incident without ``tz``.
    """
    from pipelines.spine import aggregate as agg

    write_lock(conn)
    eids = batch["event_id"].unique().to_list()
    mine = set(batch["incident_id"].unique().to_list())
    concerned = set(mine)
    lock_keys(conn, [f"event:{e}" for e in eids])
    locked: set[str] = set()
    held: set[str] = set()  # incidents holding one of the batch's event ids
    claimed: set[str] = set()  # the batch's event ids stored already
    for _ in range(10):  # the incidents holding these event ids, until none is new
        for t in (incident_events, report_rejects):
            got = _rows_in(conn, t, "event_id", eids, ["event_id", "incident_id"])
            held.update(got["incident_id"])
            claimed.update(got["event_id"])
        concerned |= held
        if concerned <= locked or conn.dialect.name != "postgresql":
            break  # (SQLite: the write lock is held already, nothing changes meanwhile)
        lock_keys(conn, concerned - locked)
        locked |= concerned
    prior = _fast_rows(conn, batch, mine - held, claimed, tz)
    fast = set(prior["incident_id"])
    slow = concerned - fast
    acc = _rows_in(conn, incident_events, "incident_id", slow, EVENT_COLUMNS)
    rej = _rows_in(conn, report_rejects, "incident_id", slow, REJECT_COLUMNS)
    known = {e: "A" for e in acc["entry_id"]} | {e: "X" for e in rej["entry_id"]}
    fresh = batch.filter(~pl.col("entry_id").is_in(list(known)))
    cols = list(agg.DECISION_COLUMNS)
    stand_in = prior.select(
        entry_id="walk_entry",
        event_id=pl.lit("\x00") + pl.col("incident_id"),  # no event's id
        incident_id="incident_id",
        step=pl.when(pl.col("walk_closed") == 1).then(pl.lit("closed")).otherwise(pl.lit("")),
        ts_ms="walk_ts_ms",
        stored=pl.lit("S"),
        reason=pl.lit(None, pl.String),
    )
    cands = pl.concat(
        [
            acc.select(cols).with_columns(stored=pl.lit("A"), reason=pl.lit(None, pl.String)),
            rej.select(*cols, stored=pl.lit("X"), reason="reason"),
            stand_in,
            fresh.select(cols).with_columns(
                stored=pl.lit(None, pl.String), reason=pl.lit(None, pl.String)
            ),
        ]
    )
    decided = agg.decide_reports(cands).filter(
        pl.col("stored").is_null() | (pl.col("stored") != "S")
    )
    verdict = dict(zip(decided["entry_id"], decided["verdict"], strict=True))
    down_ids = [e for e in acc["entry_id"] if verdict[e] != "accepted"]
    turned_down = acc.filter(pl.col("entry_id").is_in(down_ids)).with_columns(
        verdict=pl.col("entry_id").replace_strict(verdict, return_dtype=pl.String)
    )
    new_acc = fresh.filter(
        pl.col("entry_id").replace_strict(verdict, return_dtype=pl.String) == "accepted"
    )
    new_rej = decided.filter(pl.col("stored").is_null() & (pl.col("verdict") != "accepted")).select(
        *cols, reason="verdict"
    )
    rejects = pl.concat([turned_down.select(*cols, reason="verdict"), new_rej])
    kept = acc.filter(~pl.col("entry_id").is_in(down_ids))
    new_slow = new_acc.filter(pl.col("incident_id").is_in(list(slow)))
    after = pl.concat([kept, new_slow.select(acc.columns)])
    changed = set(turned_down["incident_id"]) | set(new_acc["incident_id"])
    # the rows after: slow incidents from their histories, fast ones folded
    walk = walk_state(decided.filter(pl.col("incident_id").is_in(list(slow))))
    slow_rows = incident_frame(after, flows, tz, walk)
    fast_rows = fold_rows(
        prior,
        new_acc.filter(pl.col("incident_id").is_in(list(fast))).select(EVENT_COLUMNS),
        fresh.filter(pl.col("incident_id").is_in(list(fast))),
        flows,
        tz,
    )
    rows = pl.concat([r for r in (slow_rows, fast_rows) if r.width] or [_no_rows()])
    d = ReportDecision(
        verdicts={e: verdict[e] for e in batch["entry_id"]},
        known={e: known[e] for e in batch["entry_id"] if e in known},
        turned_down=turned_down,
        before=acc,
        after=after,
        changed=changed,
        concerned=concerned,
        new_accepted=new_acc.select(EVENT_COLUMNS),
        rejects=rejects.select(REJECT_COLUMNS),
        rows=rows,
        prior=prior,
        gone=slow - set(after["incident_id"]),
    )
    if write:
        write_decision(conn, d, flows)
    return d


def walk_state(entries: pl.DataFrame) -> pl.DataFrame:
    """Per incident, the walk columns of its stored entries (accepted and rejected;
    columns ``entry_id``, ``incident_id``, ``step``, ``ts_ms``): the last in walk order
    (time, then stream order) and whether any is a ``closed`` (pure)."""
    return (
        entries.with_columns(stream_order())
        .sort(["incident_id", "ts_ms", "_ems", "_eseq"])
        .group_by("incident_id", maintain_order=True)
        .agg(
            walk_ts_ms=pl.col("ts_ms").last(),
            walk_entry=pl.col("entry_id").last(),
            walk_closed=(pl.col("step") == "closed").any().cast(pl.Int64),
        )
    )


def _no_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=INCIDENT_SCHEMA)


def _fast_rows(
    conn: Connection, batch: pl.DataFrame, ids: set[str], claimed: set[str], tz: str | None
) -> pl.DataFrame:
    """The ``incidents`` rows of the batch's incidents that can be decided from their row
    (``decide_reports``): one read of the rows, none of the histories."""
    if tz is None or not ids:
        return _no_rows()
    first: dict[str, tuple[int, int, int]] = {}  # incident → its earliest batch entry
    out: set[str] = set()
    for e, ev, i, ts in batch.select("entry_id", "event_id", "incident_id", "ts_ms").iter_rows():
        if ev in claimed:
            out.add(i)
        k = (ts, *stream_key(e))
        if i not in first or k < first[i]:
            first[i] = k
    rows = _rows_in(conn, incidents, "incident_id", ids - out, INCIDENT_COLUMNS)
    ok = [
        i
        for i, a, z, wts, we in rows.select(
            "incident_id", "acc", "acc_tz", "walk_ts_ms", "walk_entry"
        ).iter_rows()
        if a is not None and z == tz and wts is not None and we is not None
        and first[i] > (wts, *stream_key(we))
    ]  # fmt: skip
    return rows.filter(pl.col("incident_id").is_in(ok))


def fold_rows(
    prior: pl.DataFrame,
    events: pl.DataFrame,
    entries: pl.DataFrame,
    flows: Flows | None,
    tz: str | None,
) -> pl.DataFrame:
    """``incidents`` rows after new entries, from the rows before (``prior``, with their
    fold state) and the new entries alone (pure): ``events`` the accepted ones
    (``incident_events`` columns), ``entries`` all of them (accepted or rejected; at
    least ``entry_id``, ``incident_id``, ``step``, ``ts_ms``), each after every entry the
    row summarises in walk order. Equal to ``incident_frame`` over the whole history
    (a unit test keeps them equal)."""
    if prior.is_empty():
        return _no_rows()
    from pipelines.spine import aggregate as agg

    assert tz is not None
    ev = with_action_columns(events).with_columns(stream_order())
    ev = ev.sort(["incident_id", "ts_ms", "_ems", "_eseq"]).drop("_ems", "_eseq")
    tk = agg.with_time_keys(pl.DataFrame({"ts": ev["ts_ms"]}), tz)
    ev = ev.with_columns(tk["day"], tk["minute"], tk["hour"])
    ev = ev.with_columns(_item=agg.acc_item("ts_ms"))
    by_inc: dict[str, list[dict[str, Any]]] = {}
    for r in ev.iter_rows(named=True):
        by_inc.setdefault(r["incident_id"], []).append(r)
    last: dict[str, tuple[tuple[int, int, int], str]] = {}
    closed: set[str] = set()
    for e, i, step, ts in entries.select("entry_id", "incident_id", "step", "ts_ms").iter_rows():
        k = (ts, *stream_key(e))
        if i not in last or k > last[i][0]:
            last[i] = (k, e)
        if step == "closed":
            closed.add(i)
    out = []
    for row in prior.iter_rows(named=True):
        i = row["incident_id"]
        r = _fold_one(row, by_inc.get(i, []))
        if i in last:
            r["walk_ts_ms"], r["walk_entry"] = last[i][0][0], last[i][1]
        r["walk_closed"] = int(bool(r["walk_closed"]) or i in closed)
        out.append(r)
    frame = pl.DataFrame(out, schema=INCIDENT_SCHEMA)
    return _with_stage_due(frame, flows).select(INCIDENT_COLUMNS)


def write_decision(conn: Connection, d: ReportDecision, flows: Flows | None = None) -> None:
    """Write what ``decide_reports`` decided, in the transaction (and under the locks)
    it decided in: turned-down entries move to ``report_rejects``, new rejects are
    recorded, accepted events inserted, the concerned incidents' rows written (an
    incident left with no accepted event has none)."""
    if d.turned_down.height:
        conn.execute(
            incident_events.delete().where(
                incident_events.c.event_id.in_(d.turned_down["event_id"].to_list()),
                incident_events.c.entry_id.in_(d.turned_down["entry_id"].to_list()),
            )
        )
    if d.rejects is not None:
        insert_ignore_frame(conn, report_rejects, d.rejects)
    if d.new_accepted is not None:
        insert_ignore_frame(conn, incident_events, d.new_accepted)
    bump_marks(
        conn,
        [
            *d.turned_down["ts_ms"],
            *([] if d.new_accepted is None else d.new_accepted["ts_ms"]),
        ],
    )
    if d.rows is None:
        hist = d.after.filter(pl.col("incident_id").is_in(list(d.changed)))
        _recompute(conn, hist, d.changed, flows)
        return
    upsert_frame(conn, incidents, d.rows, ["incident_id"])
    gone = sorted(d.gone)
    for i in range(0, len(gone), 5000):
        conn.execute(incidents.delete().where(incidents.c.incident_id.in_(gone[i : i + 5000])))


def _recompute(
    conn: Connection, hist: pl.DataFrame, incident_ids: set[str], flows: Flows | None
) -> None:
    """Rewrite the ``incidents`` rows of these incidents from their accepted events;
    an incident left with none has no row."""
    upsert_frame(conn, incidents, incident_frame(hist, flows), ["incident_id"])
    empty = sorted(incident_ids - set(hist["incident_id"]))
    for i in range(0, len(empty), 5000):
        conn.execute(incidents.delete().where(incidents.c.incident_id.in_(empty[i : i + 5000])))


def lifecycle_summary(hist: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Per incident, the lifecycle facts the scorecard needs, from its events (pure).

    Input columns: incident_id, step, ts_ms, level, handler_id. The same aggregates as the
    scorecard's SQL ``GROUP BY`` over the same events (``scorecard.read_incidents``), so
    either gives the same facts: first / last event, first action (any step but
    ``reported``), first accepted / dispatched / resolved, last returned, number of
    returns and verifications, the (greatest) level of a ``closed`` event, the
    (least) ``handler_id`` of a ``reported`` event and when it first left each flow stage
    (``LEFT_STEPS``). Independent of the order of arrival.
    """
    step, ts = pl.col("step"), pl.col("ts_ms")

    def first(name: str) -> pl.Expr:
        return ts.filter(step == name).min()

    return (
        hist.lazy()
        .group_by("incident_id")
        .agg(
            first_ms=ts.min(),
            first_action_ms=ts.filter(step != "reported").min(),
            accepted_ms=first("accepted"),
            dispatched_ms=first("dispatched"),
            first_resolved_ms=first("resolved"),
            last_returned_ms=ts.filter(step == "returned").max(),
            n_returned=(step == "returned").sum().cast(pl.Int64),
            n_verified=(step == "verified").sum().cast(pl.Int64),
            closed_level=pl.col("level").filter(step == "closed").max(),
            report_handler_id=pl.col("handler_id").filter(step == "reported").min(),
            **{col: ts.filter(step.is_in(steps)).min() for col, steps in LEFT_STEPS.items()},
        )
    )


# A flow stage is left when the incident first reaches a step of a later stage (a stage it
# passes without stopping is left when it is entered); see flows.STAGE_OF_STEP.
LEFT_STEPS: dict[str, tuple[str, ...]] = {
    "left_accept_ms": (
        "accepted", "returned", "dispatched", "handling", "resolved", "verified", "closed",
    ),
    "left_dispatch_ms": ("dispatched", "handling", "resolved", "verified", "closed"),
    "left_handle_ms": ("resolved", "verified", "closed"),
    "left_verify_ms": ("verified", "closed"),
}  # fmt: skip


SUMMARY_COLUMNS = [
    "first_ms",
    "first_action_ms",
    "accepted_ms",
    "dispatched_ms",
    "first_resolved_ms",
    "last_returned_ms",
    "n_returned",
    "n_verified",
    "closed_level",
    "report_handler_id",
    *LEFT_STEPS,
]


# The columns an action adds to an event (absent from frames of field reports alone).
ACTION_COLUMNS: dict[str, Any] = {
    "actor_id": pl.String,
    "reason": pl.String,
    "unit_id": pl.String,
    "due_ms": pl.Int64,
    "note": pl.String,
    "photo_url": pl.String,
    "onsite_by": pl.String,
    "duplicate_of": pl.String,
}


def with_action_columns(events: pl.DataFrame) -> pl.DataFrame:
    """The events with every action column (null where a frame lacks it)."""
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in ACTION_COLUMNS.items() if c not in events.columns
    ]
    return events.with_columns(missing) if missing else events


def incident_rows(hist: pl.DataFrame, flows: Flows | None = None) -> list[dict[str, Any]]:
    """Current state of each incident, with its lifecycle summary, from its full event
    history (pure)."""
    if hist.is_empty():
        return []
    return incident_frame(hist, flows).to_dicts()


def incident_frame(
    hist: pl.DataFrame,
    flows: Flows | None = None,
    tz: str | None = None,
    walk: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``incident_rows`` as a frame (an empty history gives no rows, no columns).

    With ``tz`` the rows keep the live state's ``acc`` (days in ``tz``); with ``walk``
    (``incident_id``, ``walk_ts_ms``, ``walk_entry``, ``walk_closed``: over every stored
    entry, accepted or rejected) the walk columns. Without them those columns are NULL:
    the next batch reads the incident's history (``decide_reports``)."""
    if hist.is_empty():
        return pl.DataFrame()
    from pipelines.spine import aggregate as agg

    hist = with_action_columns(hist)
    walk_keys = ["incident_id", "ts_ms", "_ems", "_eseq"]  # time, then stream order
    h = hist.with_columns(stream_order()).sort(walk_keys).drop("_ems", "_eseq")
    if tz is not None:
        tk = agg.with_time_keys(pl.DataFrame({"ts": h["ts_ms"]}), tz)
        h = h.with_columns(tk["day"], tk["minute"], tk["hour"])
        acc = agg.acc_item("ts_ms").str.join("")
    else:
        acc = pl.lit(None, pl.String)
    summary = lifecycle_summary(h.select("incident_id", "step", "ts_ms", "level", "handler_id"))
    cur = h.group_by("incident_id").agg(
        status=pl.col("step").last(),
        category=pl.col("category").first(),
        severity=pl.col("severity").first(),
        source=pl.col("source").first(),
        grid_id=pl.col("grid_id").first(),
        street_id=pl.col("street_id").first(),
        district_id=pl.col("district_id").first(),
        lon=pl.col("lon").first(),
        lat=pl.col("lat").first(),
        reported_ms=pl.col("ts_ms").filter(pl.col("step") == "reported").min(),
        last_ms=pl.col("ts_ms").max(),
        closed_ms=pl.col("ts_ms").filter(pl.col("step") == "closed").min(),
        resolution_level=pl.col("level").filter(pl.col("step") == "closed").first(),
        reporter_id=pl.col("reporter_id").drop_nulls().first(),
        handler_id=pl.col("handler_id").drop_nulls().last(),
        description=pl.col("description").drop_nulls().first(),
        n_events=pl.len().cast(pl.Int64),
        level=pl.col("level").filter(pl.col("step") == "escalated").last(),
        unit_id=pl.col("unit_id").drop_nulls().last(),
        due_ms=pl.col("due_ms").filter(pl.col("step") == "dispatched").last(),
        duplicate_of=pl.col("duplicate_of").filter(pl.col("step") == "closed").first(),
        stage_ms=pl.col("ts_ms").last(),
        actor_id=pl.col("actor_id").drop_nulls().last(),
        acc=acc,
    )
    # A closed incident stays closed whatever arrives later (late events are history).
    cur = cur.with_columns(
        status=pl.when(pl.col("closed_ms").is_not_null())
        .then(pl.lit("closed"))
        .otherwise(pl.col("status")),
        level=pl.col("level").fill_null("grid"),
        stage_ms=pl.when(pl.col("closed_ms").is_not_null())
        .then(pl.col("closed_ms"))
        .otherwise(pl.col("stage_ms")),
    )
    out = cur.join(summary.collect(), on="incident_id", how="left")
    out = out.with_columns(acc_tz=pl.lit(tz, pl.String))
    if walk is not None:
        out = out.join(walk.select(WALK_COLUMNS), on="incident_id", how="left")
    else:
        out = out.with_columns(pl.lit(None, t).alias(c) for c, t in list(_WALK.items())[1:])
    return _with_stage_due(out, flows).select(pl.col(c).cast(t) for c, t in INCIDENT_SCHEMA.items())


_WALK = {
    "incident_id": pl.String,
    "walk_ts_ms": pl.Int64,
    "walk_entry": pl.String,
    "walk_closed": pl.Int64,
}
WALK_COLUMNS = list(_WALK)


def _with_stage_due(rows: pl.DataFrame, flows: Flows | None) -> pl.DataFrame:
    """``stage_due_ms``: when the current stage is due, by the flows (the shipped ones when
    none are given: tests and tools; the pipelines pass the deployment's)."""
    from pipelines.dispatch import ontime
    from pipelines.dispatch.flows import load_flows

    due = ontime.with_stage_due(rows, flows or load_flows())["due_ms_stage"]
    return rows.with_columns(stage_due_ms=due)


def stale_summary(i: Any) -> Any:
    """SQL: an incident row without its lifecycle summary, or summarised before the stage
    columns existed (accepted, yet no time it left the accept stage)."""
    return or_(
        i.c.first_ms.is_(None), and_(i.c.accepted_ms.is_not(None), i.c.left_accept_ms.is_(None))
    )


def stale_fold(i: Any, tz: str) -> Any:
    """SQL: an incident row without the reports pipeline's fold state in ``tz``."""
    return or_(i.c.acc.is_(None), i.c.acc_tz.is_(None), i.c.acc_tz != tz, i.c.walk_ts_ms.is_(None))


def backfill_summaries(
    engine: Engine, chunk: int = 5000, flows: Flows | None = None, tz: str | None = None
) -> int:
    """Compute the lifecycle summary of incidents that have none (rows written before the
    summary columns existed), ``chunk`` incidents per transaction; with ``tz`` also the
    fold state (``acc`` in ``tz``, the walk columns over accepted and rejected entries)
    of rows without it, which the reports pipeline otherwise computes from history the
    first time a batch touches them. Idempotent and resumable (the same rows the
    pipeline would write). Returns the count."""
    i = incidents
    stale = stale_summary(i) if tz is None else or_(stale_summary(i), stale_fold(i, tz))
    done, after = 0, ""
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(i.c.incident_id)
                    .where(i.c.incident_id > after, stale)
                    .order_by(i.c.incident_id)
                    .limit(chunk)
                ).scalars()
            )
            if not ids:
                return done
            lock_incidents(conn, ids)
            hist = _events_of(conn, ids)
            walk = None
            if tz is not None:
                rej = _rows_in(conn, report_rejects, "incident_id", ids, REJECT_COLUMNS)
                cols = ["entry_id", "incident_id", "step", "ts_ms"]
                walk = walk_state(pl.concat([hist.select(cols), rej.select(cols)]))
            upsert_frame(conn, incidents, incident_frame(hist, flows, tz, walk), ["incident_id"])
        done, after = done + len(ids), ids[-1]


def events_by_incident(engine: Engine, chunk: int) -> Iterator[tuple[list[str], pl.DataFrame]]:
    """Every incident's accepted events, ``chunk`` incidents at a time (in id order)."""
    ie = incident_events
    after = ""
    while True:
        with engine.connect() as conn:
            q = (
                select(ie.c.incident_id)
                .where(ie.c.incident_id > after)
                .group_by(ie.c.incident_id)
                .order_by(ie.c.incident_id)
                .limit(chunk)
            )
            ids = list(conn.execute(q).scalars())
            if not ids:
                return
            events = _rows_in(conn, ie, "incident_id", ids, EVENT_COLUMNS)
        yield ids, events
        after = ids[-1]


# What a later event does to a row field (``incident_frame``'s aggregates, in walk order).
_KEEP_FIRST = ("reporter_id", "description")  # first non-null
_TAKE_LAST = ("handler_id", "unit_id", "actor_id")  # last non-null
_FIRST_OF_STEP = {  # min time of these steps
    "reported_ms": ("reported",),
    "accepted_ms": ("accepted",),
    "dispatched_ms": ("dispatched",),
    "first_resolved_ms": ("resolved",),
    **LEFT_STEPS,
}


def _fold_one(row: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``incidents`` row after ``events`` (walk-ordered, each after all the row's)."""
    r = dict(row)
    for e in events:
        step, ts = e["step"], e["ts_ms"]
        was_closed = r["closed_ms"] is not None
        r["last_ms"] = ts if r["last_ms"] is None else max(r["last_ms"], ts)
        r["n_events"] += 1
        for c in _KEEP_FIRST:
            if r[c] is None:
                r[c] = e[c]
        for c in _TAKE_LAST:
            if e[c] is not None:
                r[c] = e[c]
        for c, steps in _FIRST_OF_STEP.items():
            if r[c] is None and step in steps:
                r[c] = ts
        if r["first_action_ms"] is None and step != "reported":
            r["first_action_ms"] = ts
        if step == "closed":
            if not was_closed:
                r["closed_ms"] = ts
                r["resolution_level"] = e["level"]
                r["duplicate_of"] = e["duplicate_of"]
            if _more(e["level"], r["closed_level"]):
                r["closed_level"] = e["level"]
        elif step == "returned":
            r["last_returned_ms"] = ts
            r["n_returned"] += 1
        elif step == "verified":
            r["n_verified"] += 1
        elif step == "escalated":
            r["level"] = e["level"] if e["level"] is not None else "grid"
        elif step == "dispatched":
            r["due_ms"] = e["due_ms"]
        elif step == "reported" and _less(e["handler_id"], r["report_handler_id"]):
            r["report_handler_id"] = e["handler_id"]
        closed = r["closed_ms"] is not None
        r["status"] = "closed" if closed else step
        r["stage_ms"] = r["closed_ms"] if closed else ts
        r["acc"] += e["_item"]
    return r


def _less(a: Any, b: Any) -> bool:
    """``a < b`` where a null is neither (the order of a min / max ignoring nulls):
    true when ``b`` is null and ``a`` is not."""
    return a is not None and (b is None or a < b)


def _more(a: Any, b: Any) -> bool:
    """``a > b`` where a null is neither (as ``_less``)."""
    return a is not None and (b is None or a > b)
