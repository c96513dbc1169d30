"""Warnings in SQL and in the live list: persist a tick's changes, people's actions
(acknowledge, dispatch, resolve, dismiss — audited in the same transaction), quiet keys
after a dismissal, the detail with its timeline, and the live list in Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Engine, func, or_, select, update

from pipelines.access import audit
from pipelines.access.text import clean_name, clean_text
from pipelines.city.geography import City
from pipelines.spine import store
from pipelines.spine.state import LiveState
from pipelines.warnings.lifecycle import Warning, live_counts
from pipelines.warnings.model import OPEN_STATUSES, Areas, empty


def _json(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_SORT_KEYS).decode()


def _row(w: Warning) -> dict[str, Any]:
    return {
        "warning_id": w.warning_id,
        "key": w.key,
        "rule": w.rule,
        "area_id": w.area_id,
        "level": w.level,
        "status": w.status,
        "first_seen_ms": w.first_seen_ms,
        "last_seen_ms": w.last_seen_ms,
        "escalated_to": w.escalated_to,
        "escalated_ms": w.escalated_ms,
        "acked_by": None,
        "acked_ms": None,
        "closed_ms": None,
        "assigned_to": None,
        "close_note": None,
        "evidence": _json(list(w.evidence)),
        "summary": _json(dict(w.summary)),
        "aliases": _json(list(w.aliases)),
    }


def persist(
    engine: Engine,
    new: Sequence[Warning],
    updated: Sequence[Warning],
    cleared: Sequence[Warning],
    now_ms: int,
) -> None:
    """Write one evaluation: insert new, update engine-owned columns, clear.

    Users own ``status`` (acknowledge, dispatch, …): updates never touch it, an escalation
    is only written while the warning is still ``new``, and clearing only applies to a
    warning that is still open — so an acknowledgement racing with a tick is never lost.
    """
    t, a = store.warnings, store.warning_actions
    actions: list[dict[str, Any]] = []
    with engine.begin() as conn:
        store.insert_ignore(conn, t, [_row(w) for w in new])
        actions += [
            {"warning_id": w.warning_id, "action": "open", "actor": "engine", "note": w.level}
            for w in new
        ]
        if updated:
            for w in sorted(updated, key=lambda w: w.warning_id):
                # a change of level is part of the warning's story (the time machine
                # replays it): recorded once, when the stored level differs
                raised = conn.execute(
                    update(t)
                    .where(
                        t.c.warning_id == w.warning_id,
                        t.c.status.in_(OPEN_STATUSES),
                        t.c.level != w.level,
                    )
                    .values(level=w.level)
                )
                if raised.rowcount:
                    actions.append(
                        {
                            "warning_id": w.warning_id,
                            "action": "level",
                            "actor": "engine",
                            "note": w.level,
                        }
                    )
                conn.execute(
                    update(t)
                    .where(t.c.warning_id == w.warning_id, t.c.status.in_(OPEN_STATUSES))
                    .values(
                        level=w.level,
                        last_seen_ms=w.last_seen_ms,
                        evidence=_json(list(w.evidence)),
                        summary=_json(dict(w.summary)),
                        aliases=_json(list(w.aliases)),
                        rule=w.rule,
                    )
                )
                if w.escalated_to is not None:
                    res = conn.execute(
                        update(t)
                        .where(
                            t.c.warning_id == w.warning_id,
                            t.c.status == "new",
                            or_(t.c.escalated_to.is_(None), t.c.escalated_to != w.escalated_to),
                        )
                        .values(escalated_to=w.escalated_to, escalated_ms=w.escalated_ms)
                    )
                    if res.rowcount:
                        actions.append(
                            {
                                "warning_id": w.warning_id,
                                "action": "escalate",
                                "actor": "engine",
                                "note": w.escalated_to,
                            }
                        )
        for w in sorted(cleared, key=lambda w: w.warning_id):
            res = conn.execute(
                update(t)
                .where(t.c.warning_id == w.warning_id, t.c.status.in_(OPEN_STATUSES))
                .values(status="cleared", closed_ms=now_ms)
            )
            if res.rowcount:
                actions.append(
                    {"warning_id": w.warning_id, "action": "clear", "actor": "engine", "note": None}
                )
        if actions:
            conn.execute(a.insert(), [{**x, "at_ms": now_ms} for x in actions])


class ActionError(ValueError):
    """A warning action that cannot be taken (unknown action, missing note or assignee)."""


# action → (statuses it applies to, status after). Every action is audited.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("new",), "acknowledged"),
    "dispatch": (OPEN_STATUSES, "dispatched"),  # to a unit or person, with a note
    "resolve": (("acknowledged", "dispatched"), "resolved"),
    "dismiss": (OPEN_STATUSES, "dismissed"),  # with a reason
}


CLOSED_BY_USER = ("resolved", "dismissed")


def act(
    engine: Engine,
    warning_id: str,
    action: str,
    actor: str,
    now_ms: int,
    *,
    role: str = "",
    scope: str = "",
    note: str = "",
    assignee: str = "",
) -> bool:
    """Take a user action on a warning; audited in the same transaction.

    Returns False (and changes nothing) when the warning is unknown or its status does not
    allow the action (someone else was faster). Raises :class:`ActionError` on bad input.
    The caller checks role and scope (see ``dashboard/warnings``).
    """
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}")
    note, assignee = clean_text(note).strip()[:500], clean_name(assignee)[:128]
    if action == "dispatch" and not assignee:
        raise ActionError("dispatch needs a unit or person")
    if action == "dismiss" and not note:
        raise ActionError("dismiss needs a reason")
    sources, target = ACTIONS[action]
    values: dict[str, Any] = {"status": target}
    if action in ("acknowledge", "dispatch"):
        values |= {"acked_by": func.coalesce(store.warnings.c.acked_by, actor)}
        values |= {"acked_ms": func.coalesce(store.warnings.c.acked_ms, now_ms)}
    if action == "dispatch":
        values["assigned_to"] = assignee
    if target in CLOSED_BY_USER:
        values |= {"closed_ms": now_ms, "close_note": note}
    t = store.warnings
    with audit.transaction(engine) as conn:
        res = conn.execute(
            update(t).where(t.c.warning_id == warning_id, t.c.status.in_(sources)).values(values)
        )
        if not res.rowcount:
            return False
        text = f"{assignee}: {note}" if assignee and note else assignee or note
        conn.execute(
            store.warning_actions.insert().values(
                warning_id=warning_id, action=action, actor=actor, note=text, at_ms=now_ms
            )
        )
        detail = {k: v for k, v in (("note", note), ("assignee", assignee)) if v}
        audit.append(
            conn,
            actor=actor,
            role=role,
            scope=scope,
            action=f"warning_{action}",
            target=warning_id,
            detail=detail,
            now_ms=now_ms,
        )
    return True


def quiet_keys(engine: Engine, now_ms: int, quiet_s: int) -> set[str]:
    """Keys of warnings a user resolved or dismissed within ``quiet_s``: not reopened yet."""
    if quiet_s <= 0:
        return set()
    t = store.warnings
    q = select(t.c.key, t.c.aliases).where(
        t.c.status.in_(CLOSED_BY_USER), t.c.closed_ms > now_ms - quiet_s * 1000
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return {k for key, aliases in rows for k in (key, *orjson.loads(aliases))}


def live_item(w: Warning) -> dict[str, Any]:
    """What the live list shows of an open warning (no evidence: details come from SQL)."""
    return {
        "id": w.warning_id,
        "rule": w.rule,
        "area_id": w.area_id,
        "level": w.level,
        "status": w.status,
        "first_ms": w.first_seen_ms,
        "last_ms": w.last_seen_ms,
        "escalated_to": w.escalated_to,
        "summary": dict(w.summary),
        "n_evidence": len(w.evidence),
    }


def publish_live(
    live: LiveState, warnings: Iterable[Warning], ancestors: Callable[[str], Sequence[str]]
) -> None:
    """Replace the live warning counts and list with these (open ones only)."""
    still = [w for w in warnings if w.status in OPEN_STATUSES]
    items = {w.warning_id: orjson.dumps(live_item(w), default=str) for w in still}
    live.set_warnings(live_counts(still, ancestors), items)


def republish(engine: Engine, live: LiveState, city: City) -> int:
    """The live warnings from SQL (after a user action, or by ``rebuild-live``)."""
    areas = Areas.of(city)
    still = warnings_from_frame(open_warnings(engine))
    publish_live(live, still, areas.ancestors)
    return len(still)


def warning_detail(engine: Engine, warning_id: str) -> dict[str, Any] | None:
    """One warning with its evidence, summary and timeline of actions (oldest first)."""
    t, a = store.warnings, store.warning_actions
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.warning_id == warning_id)).mappings().first()
        if row is None:
            return None
        acts = conn.execute(
            select(a.c.action, a.c.actor, a.c.note, a.c.at_ms)
            .where(a.c.warning_id == warning_id)
            .order_by(a.c.at_ms, a.c.id)
        ).mappings()
        timeline = [dict(x) for x in acts]
    out = dict(row)
    for k in ("evidence", "summary", "aliases"):
        out[k] = orjson.loads(out[k])
    out["timeline"] = timeline
    return out


def open_warnings(engine: Engine) -> pl.DataFrame:
    t = store.warnings
    return store.read_frame(engine, select(t).where(t.c.status.in_(OPEN_STATUSES)))


def warning_of(row: Mapping[str, Any], **then: Any) -> Warning:
    """A ``warnings`` row as a Warning; ``then``: fields as they stood at another moment
    (the time machine's level, status, escalation)."""
    fields: dict[str, Any] = {
        "warning_id": row["warning_id"],
        "key": row["key"],
        "rule": row["rule"],
        "area_id": row["area_id"],
        "level": row["level"],
        "status": row["status"],
        "first_seen_ms": int(row["first_seen_ms"]),
        "last_seen_ms": int(row["last_seen_ms"]),
        "evidence": tuple(orjson.loads(row["evidence"])),
        "summary": orjson.loads(row["summary"]),
        "aliases": tuple(orjson.loads(row["aliases"])),
    }
    for name in ("escalated_to", "escalated_ms"):  # a history read need not select them
        fields[name] = then[name] if name in then else row[name]
    return Warning(**(fields | then))


def warnings_from_frame(df: pl.DataFrame) -> list[Warning]:
    return [warning_of(row) for row in df.iter_rows(named=True)]


def _frame(engine: Engine, query: Any, schema: Mapping[str, Any]) -> pl.DataFrame:
    df = store.read_frame(engine, query)
    if df.is_empty():
        return empty(schema)
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])
