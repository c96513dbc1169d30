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

from pipelines.spine.events import stream_order

if TYPE_CHECKING:
    from pipelines.dispatch.flows import Flows
from pipelines.spine.store.schema import incident_events, incidents, report_rejects
from pipelines.spine.store.sql import (
    _rows_in,
    insert_ignore,
    insert_ignore_frame,
    lock_incidents,
    lock_keys,
    upsert,
    upsert_frame,
    write_lock,
)

EVENT_COLUMNS = [c.name for c in incident_events.columns]


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
    before: pl.DataFrame  # accepted events of the incidents concerned, before
    after: pl.DataFrame  # … and after this batch
    changed: set[str]  # incidents whose set of accepted events changed
    concerned: set[str] = field(default_factory=set)  # every incident read
    new_accepted: pl.DataFrame | None = None  # to insert into ``incident_events``
    rejects: pl.DataFrame | None = None  # to insert into ``report_rejects``


def decide_reports(
    conn: Connection, batch: pl.DataFrame, flows: Flows | None = None, *, write: bool = True
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
    """
    from pipelines.spine import aggregate as agg

    write_lock(conn)
    eids = batch["event_id"].unique().to_list()
    concerned = set(batch["incident_id"].unique().to_list())
    lock_keys(conn, [f"event:{e}" for e in eids])
    locked: set[str] = set()
    for _ in range(10):  # the incidents holding these event ids, until none is new
        for t in (incident_events, report_rejects):
            concerned.update(_rows_in(conn, t, "event_id", eids, ["incident_id"])["incident_id"])
        if concerned <= locked or conn.dialect.name != "postgresql":
            break  # (SQLite: the write lock is held already, nothing changes meanwhile)
        lock_keys(conn, concerned - locked)
        locked |= concerned
    acc = _rows_in(conn, incident_events, "incident_id", concerned, EVENT_COLUMNS)
    rej = _rows_in(conn, report_rejects, "incident_id", concerned, REJECT_COLUMNS)
    known = {e: "A" for e in acc["entry_id"]} | {e: "X" for e in rej["entry_id"]}
    fresh = batch.filter(~pl.col("entry_id").is_in(list(known)))
    cols = list(agg.DECISION_COLUMNS)
    cands = pl.concat(
        [
            acc.select(cols).with_columns(stored=pl.lit("A"), reason=pl.lit(None, pl.String)),
            rej.select(*cols, stored=pl.lit("X"), reason="reason"),
            fresh.select(cols).with_columns(
                stored=pl.lit(None, pl.String), reason=pl.lit(None, pl.String)
            ),
        ]
    )
    decided = agg.decide_reports(cands)
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
    after = pl.concat([kept, new_acc.select(acc.columns)])
    changed = set(turned_down["incident_id"]) | set(new_acc["incident_id"])
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
    )
    if write:
        write_decision(conn, d, flows)
    return d


def write_decision(conn: Connection, d: ReportDecision, flows: Flows | None = None) -> None:
    """Write what ``decide_reports`` decided, in the transaction (and under the locks)
    it decided in: turned-down entries move to ``report_rejects``, new rejects are
    recorded, accepted events inserted, the changed incidents' rows recomputed."""
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
    hist = d.after.filter(pl.col("incident_id").is_in(list(d.changed)))
    _recompute(conn, hist, d.changed, flows)


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


def incident_frame(hist: pl.DataFrame, flows: Flows | None = None) -> pl.DataFrame:
    """``incident_rows`` as a frame (an empty history gives no rows, no columns)."""
    if hist.is_empty():
        return pl.DataFrame()
    hist = with_action_columns(hist)
    walk = ["incident_id", "ts_ms", "_ems", "_eseq"]  # time, then stream order
    h = hist.with_columns(stream_order()).sort(walk).drop("_ems", "_eseq")
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
    return _with_stage_due(out, flows)


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


def backfill_summaries(engine: Engine, chunk: int = 5000, flows: Flows | None = None) -> int:
    """Compute the lifecycle summary of incidents that have none (rows written before the
    summary columns existed), ``chunk`` incidents per transaction. Idempotent and
    resumable (the same rows ``persist_report_events`` would write). Returns the count."""
    i = incidents
    done, after = 0, ""
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(i.c.incident_id)
                    .where(i.c.incident_id > after, stale_summary(i))
                    .order_by(i.c.incident_id)
                    .limit(chunk)
                ).scalars()
            )
            if not ids:
                return done
            lock_incidents(conn, ids)
            upsert(conn, incidents, incident_rows(_events_of(conn, ids), flows), ["incident_id"])
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
