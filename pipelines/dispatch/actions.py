"""Command-centre and grid-worker actions on incidents, written as lifecycle events.

An action (accept, dispatch, return, escalate, resolve, verify, close, merge, …; see
:mod:`pipelines.dispatch.matrix`) is checked against the incident as SQL holds it, the
actor's role, scope and level (the matrix) and the incident's standard flow (what must be
recorded to leave the stage), then written to the **reports stream** as one lifecycle
event, like any report from the field: the pipelines, the live state, SQL history,
warnings and scorecards see commands exactly as they see field events.

Writing is guarded in Redis, atomically with the XADD (one Lua call):

* a request is idempotent: its ``request_id`` (made when the form opened) is remembered,
  and a second submission of it writes nothing and answers ``duplicate``;
* one action per incident version: the first action on the incident's ``n_events``
  claims it; a second, different action on the same version (two operators at once, or
  one acting on a stale screen) is refused as ``conflict``.

:func:`perform` then waits (briefly) until the pipeline has decided the event, so the
person acting reads their own write; every action is in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from redis import Redis
from sqlalchemy import Engine, select

from pipelines.access import audit, text
from pipelines.access.accounts import scope_allows
from pipelines.city.geography import City
from pipelines.dispatch import matrix as M
from pipelines.dispatch.flows import Flows, flows_for
from pipelines.dispatch.units import units
from pipelines.settings import Settings
from pipelines.spine.events import LEVELS
from pipelines.spine.partitions import keys_of
from pipelines.spine.store.schema import incident_events, incidents, report_rejects, workers

CLAIM_TTL_S = 7 * 86_400
_REQUEST_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

# KEYS: claim (per incident version), request, stream. ARGV: request id, ttl, payloads…
# Returns {"written"|"duplicate"|"conflict", entry ids joined by "," (or the claim holder)}.
_SUBMIT_LUA = """
local prev = redis.call('GET', KEYS[2])
if prev then return {'duplicate', prev} end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {'conflict', redis.call('GET', KEYS[1]) or ''}
end
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[3], '*', 'data', ARGV[i])
end
local joined = table.concat(ids, ',')
redis.call('SET', KEYS[2], joined, 'EX', ARGV[2])
return {'written', joined}
"""


class ActionError(Exception):
    """An action refused before anything was written. ``code`` is one of
    not_found, not_allowed, out_of_scope, wrong_stage, missing_record, bad_value,
    conflict, not_assigned; ``detail`` names what (a field, a status)."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


@dataclass(frozen=True)
class Actor:
    id: str  # a username, or a worker id for a grid worker (the gateway)
    role: str
    scope: str  # an area id: "city", a district, a street, or the worker's grid


@dataclass(frozen=True)
class Request:
    action: str
    incident_id: str
    request_id: str  # made when the form opened: a resubmission is the same request
    expected_events: int | None = None  # the incident's n_events the actor saw
    unit_id: str | None = None
    handler_id: str | None = None
    due_ms: int | None = None
    reason: str | None = None
    note: str | None = None
    photo_url: str | None = None
    onsite_by: str | None = None
    level: str | None = None
    duplicate_of: str | None = None


# Request fields an event carries as they are (after checking).
_CARRIED: tuple[str, ...] = ("unit_id", "handler_id", "due_ms", "reason", "note", "photo_url")
_CARRIED += ("onsite_by", "level", "duplicate_of")


@dataclass(frozen=True)
class Outcome:
    status: str  # applied | pending | duplicate | rejected
    event_ids: tuple[str, ...]
    reason: str | None = None


@dataclass
class ActionContext:
    engine: Engine
    redis: Redis
    settings: Settings
    city: City
    flows: Flows
    clock: Callable[[], float] = time.monotonic  # for waiting only (never for event times)

    @classmethod
    def of(cls, engine: Engine, r: Redis, settings: Settings, city: City) -> ActionContext:
        return cls(engine, r, settings, city, flows_for(settings))

    def stream(self, incident_id: str) -> str:
        """The reports stream of the incident's partition."""
        keys = keys_of(self.settings)
        return str(keys.stream(self.settings.streams.reports, keys.partition(incident_id)))

    def key(self, incident_id: str, *parts: str) -> str:
        """A key of the incident's partition slot (with the stream in one script)."""
        keys = keys_of(self.settings)
        return ":".join((keys.part_base(keys.partition(incident_id)), "act", *parts))


# ------------------------------------------------------------------ pure checks


def _in_scope(incident: Mapping[str, Any], actor: Actor, city: City) -> bool:
    area = incident.get("grid_id") or incident.get("street_id") or incident.get("district_id")
    return bool(area) and scope_allows(actor.scope, str(area), city)


def _assigned(incident: Mapping[str, Any], actor: Actor, action: str) -> bool:
    """A grid worker acts on its own tasks: what it was dispatched to, and the on-site
    check of a resolved incident it handled or that lies in its grid."""
    if actor.role != M.GRID_WORKER:
        return True
    if incident.get("handler_id") == actor.id:
        return True
    return action in ("verify_pass", "verify_fail") and incident.get("grid_id") == actor.scope


def refusal(
    action: str, incident: Mapping[str, Any], actor: Actor, flows: Flows, city: City
) -> ActionError | None:
    """Why ``actor`` may not take ``action`` on the incident now (None: it may), from the
    matrix alone: role, scope, level, task, status, and a level to escalate to."""
    if action not in M.ACTIONS or not M.may_act(actor.role, action):
        return ActionError("not_allowed", action)
    # A grid worker is bound to its tasks, wherever they were dispatched (a task in a
    # neighbouring grid is still its task); everyone else to their area scope.
    task_bound = actor.role == M.GRID_WORKER and incident.get("handler_id") == actor.id
    if not task_bound and not _in_scope(incident, actor, city):
        return ActionError("out_of_scope", str(incident.get("grid_id")))
    level = incident.get("level") or "grid"
    if level not in M.ROLE_LEVELS.get(actor.role, ()):
        return ActionError("out_of_scope", f"level {level}")
    if not _assigned(incident, actor, action):
        return ActionError("not_assigned", str(incident.get("incident_id")))
    status = str(incident.get("status"))
    if status not in M.FROM[action]:
        return ActionError("wrong_stage", status)
    if action == "escalate" and _flow(incident, flows).next_level(level) is None:
        return ActionError("wrong_stage", f"no level above {level}")
    return None


def offered(incident: Mapping[str, Any], actor: Actor, flows: Flows, city: City) -> tuple[str, ...]:
    """The actions the actor may take on the incident now, in :data:`matrix.ACTIONS` order."""
    return tuple(a for a in M.ACTIONS if refusal(a, incident, actor, flows, city) is None)


def _flow(incident: Mapping[str, Any], flows: Flows) -> Any:
    return flows.select(str(incident["category"]), int(incident["severity"]))


def required(action: str, incident: Mapping[str, Any], flows: Flows) -> tuple[str, ...]:
    """The request fields this action must carry on this incident: the matrix's records
    plus the ``requires`` of the flow stage it ends."""
    out = list(M.RECORDS[action])
    stage = M.ENDS_STAGE[action]
    if stage is not None:
        out += [M.REQUIREMENT_FIELD[r] for r in _flow(incident, flows).stage(stage).requires]
    return tuple(dict.fromkeys(out))


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and " " not in value


def _checked_text(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    cleaned = text.clean_text(value).strip()
    if len(cleaned) > limit:
        raise ActionError("bad_value", f"{name} too long")
    return cleaned or None


def normalised(req: Request) -> Request:
    """The request with its free text cleaned (control/bidi characters neutralised, blank
    → None) and its ids checked; raises ``bad_value``."""
    if req.action not in M.ACTIONS:
        raise ActionError("not_allowed", "unknown action")
    if not (8 <= len(req.request_id) <= 40 and set(req.request_id) <= _REQUEST_CHARS):
        raise ActionError("bad_value", "request_id")
    for name in ("incident_id", "unit_id", "handler_id", "onsite_by", "duplicate_of"):
        v = getattr(req, name)
        if v is not None and (not isinstance(v, str) or not v or not text.is_clean_id(v)):
            raise ActionError("bad_value", name)
        if isinstance(v, str) and len(v) > 64:
            raise ActionError("bad_value", name)
    req = replace(
        req,
        reason=_checked_text(req.reason, "reason", 500),
        note=_checked_text(req.note, "note", 2000),
        photo_url=(req.photo_url or "").strip() or None,
    )
    if req.photo_url is not None and (len(req.photo_url) > 512 or not _is_url(req.photo_url)):
        raise ActionError("bad_value", "photo_url")
    if req.level is not None and req.level not in LEVELS:
        raise ActionError("bad_value", "level")
    if req.due_ms is not None and (isinstance(req.due_ms, bool) or not isinstance(req.due_ms, int)):
        raise ActionError("bad_value", "due_ms")
    return req


def check(
    req: Request,
    incident: Mapping[str, Any],
    actor: Actor,
    flows: Flows,
    city: City,
    *,
    now_ms: int | None = None,
) -> None:
    """Raise :class:`ActionError` unless the actor may take this action with these records
    on the incident as it is (pure: the matrix, the flow, the request)."""
    why = refusal(req.action, incident, actor, flows, city)
    if why is not None:
        raise why
    if req.expected_events is not None and req.expected_events != incident.get("n_events"):
        raise ActionError("conflict", "the incident changed")
    for need in required(req.action, incident, flows):
        if need == "target":
            if (req.unit_id is None) == (req.handler_id is None):
                raise ActionError("missing_record", "unit_id or handler_id")
        elif need == "onsite_by" and actor.role == M.GRID_WORKER:
            continue  # the worker itself is on site
        elif getattr(req, need) is None:
            raise ActionError("missing_record", need)
    if req.action == "dispatch" and req.due_ms is not None:
        if req.reason is None:
            raise ActionError("missing_record", "reason")
        if now_ms is not None and req.due_ms <= now_ms:
            raise ActionError("bad_value", "due_ms")
    if req.action == "merge" and req.duplicate_of == incident.get("incident_id"):
        raise ActionError("bad_value", "duplicate_of")


def events_for(
    req: Request, incident: Mapping[str, Any], actor: Actor, now_ms: int, flows: Flows
) -> list[dict[str, Any]]:
    """The lifecycle event(s) the action writes: the incident's category, severity, source
    and place, the step, who acted and what the action recorded. Never earlier than the
    incident's latest event (an action follows what the actor saw)."""
    event: dict[str, Any] = {
        "event_id": event_ids_of(req.request_id)[0],
        "incident_id": incident["incident_id"],
        "ts": max(int(now_ms), int(incident.get("last_ms") or 0) + 1),
        "step": M.STEP_OF[req.action],
        "category": incident["category"],
        "severity": int(incident["severity"]),
        "source": incident.get("source") or "worker",
        "lon": float(incident["lon"]),
        "lat": float(incident["lat"]),
        "actor_id": actor.id,
    }
    for name in _CARRIED:
        value = getattr(req, name)
        if value is not None:
            event[name] = value
    if req.action == "escalate":
        event["level"] = _flow(incident, flows).next_level(incident.get("level") or "grid")
    if actor.role == M.GRID_WORKER:
        event["handler_id"] = actor.id
        if req.action == "verify_pass":
            event["onsite_by"] = actor.id
    return [event]


# ------------------------------------------------------------------ performing


def load_incident(engine: Engine, incident_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(incidents).where(incidents.c.incident_id == incident_id)).first()
    return dict(row._mapping) if row is not None else None


def _check_references(ctx: ActionContext, req: Request, incident: Mapping[str, Any]) -> None:
    """What the request names exists and lies in the incident's reach: the unit serves the
    incident's area (or the city), the worker works in its district, the incident it
    duplicates exists and is not itself a merged duplicate."""
    city = ctx.city
    chain = {"city", *(str(incident.get(c)) for c in ("district_id", "street_id", "grid_id"))}
    with ctx.engine.connect() as conn:
        if req.unit_id is not None:
            area = conn.execute(
                select(units.c.area_id).where(units.c.unit_id == req.unit_id)
            ).scalar()
            if area is None or not (area in chain or scope_allows(area, incident["grid_id"], city)):
                raise ActionError("bad_value", "unit_id")
        for name in ("handler_id", "onsite_by"):
            wid = getattr(req, name)
            if wid is None:
                continue
            grid = conn.execute(
                select(workers.c.grid_id).where(workers.c.worker_id == wid)
            ).scalar()
            district = incident.get("district_id")
            if grid is None or not scope_allows(str(district), str(grid), city):
                raise ActionError("bad_value", name)
        if req.duplicate_of is not None:
            other = conn.execute(
                select(incidents.c.duplicate_of, incidents.c.grid_id).where(
                    incidents.c.incident_id == req.duplicate_of
                )
            ).first()
            if other is None or other.duplicate_of is not None:
                raise ActionError("bad_value", "duplicate_of")


def _submit(
    ctx: ActionContext, req: Request, incident: Mapping[str, Any], events: list[dict[str, Any]]
) -> tuple[str, list[str]]:
    script = ctx.redis.register_script(_SUBMIT_LUA)
    inc = str(incident["incident_id"])
    claim = ctx.key(inc, "claim", inc, str(incident["n_events"]))
    keys = [claim, ctx.key(inc, "req", req.request_id), ctx.stream(inc)]
    res = script(keys=keys, args=[req.request_id, CLAIM_TTL_S, *map(orjson.dumps, events)])
    status, joined = (x.decode() if isinstance(x, bytes) else str(x) for x in res)
    return status, [i for i in joined.split(",") if i]


def event_ids_of(request_id: str) -> tuple[str, ...]:
    """The event(s) one request writes: named by its request id, so a resubmitted form, or
    a screen asking later how its action ended, names the same events."""
    return (f"act-{request_id}-1",)


def wait_verdict(
    ctx: ActionContext, event_ids: Sequence[str], wait_s: float, incident_id: str | None = None
) -> tuple[str, str | None]:
    """("applied", None) once the pipeline accepted every event, ("rejected", reason) if it
    turned one down, ("pending", None) if it has not decided them within ``wait_s``. With
    ``incident_id``, only that incident's events count (a caller naming events of another
    incident learns nothing of them)."""
    ids = list(event_ids)
    applied = select(incident_events.c.event_id).where(incident_events.c.event_id.in_(ids))
    rejected = select(report_rejects.c.reason).where(report_rejects.c.event_id.in_(ids))
    if incident_id is not None:
        applied = applied.where(incident_events.c.incident_id == incident_id)
        rejected = rejected.where(report_rejects.c.incident_id == incident_id)
    deadline = ctx.clock() + wait_s
    while True:
        with ctx.engine.connect() as conn:
            done = set(conn.execute(applied).scalars())
            rej = conn.execute(rejected).scalar()
        if rej is not None and not done >= set(ids):
            return "rejected", str(rej)
        if done >= set(ids):
            return "applied", None
        if ctx.clock() >= deadline:
            return "pending", None
        time.sleep(0.02)


def verdict_of(ctx: ActionContext, incident_id: str, request_id: str) -> Outcome:
    """How a request on this incident ended so far (a screen asks again while pending)."""
    event_ids = event_ids_of(request_id)
    verdict, reason = wait_verdict(ctx, event_ids, 0, incident_id)
    return Outcome(verdict, event_ids, reason)


def _audit_detail(req: Request) -> dict[str, Any]:
    skip = {"action", "incident_id"}
    return {
        f.name: getattr(req, f.name)
        for f in fields(req)
        if f.name not in skip and getattr(req, f.name) is not None
    }


def perform(
    ctx: ActionContext, req: Request, actor: Actor, now_ms: int, *, wait_s: float = 1.5
) -> Outcome:
    """Check the action, write its event to the reports stream (claimed and idempotent),
    audit it and wait up to ``wait_s`` for the pipeline's verdict. Raises
    :class:`ActionError` when refused (a refusal by role, scope or task is audited)."""
    req = normalised(req)
    seen = ctx.redis.get(ctx.key(req.incident_id, "req", req.request_id))
    if seen is not None:  # a resubmitted form: answer what the first submission did
        event_ids = event_ids_of(req.request_id)
        verdict, reason = wait_verdict(ctx, event_ids, wait_s)
        return Outcome("rejected" if verdict == "rejected" else "duplicate", event_ids, reason)
    incident = load_incident(ctx.engine, req.incident_id)
    if incident is None:
        raise ActionError("not_found", req.incident_id)
    try:
        check(req, incident, actor, ctx.flows, ctx.city, now_ms=now_ms)
        _check_references(ctx, req, incident)
    except ActionError as err:
        if err.code in ("not_allowed", "out_of_scope", "not_assigned"):
            audit.record(
                ctx.engine,
                actor=actor.id,
                role=actor.role,
                scope=actor.scope,
                action="incident.refused",
                target=req.incident_id,
                detail={"action": req.action, "why": err.code, "detail": err.detail},
                now_ms=now_ms,
            )
        raise
    events = events_for(req, incident, actor, now_ms, ctx.flows)
    status, entry_ids = _submit(ctx, req, incident, events)
    event_ids = tuple(e["event_id"] for e in events)
    if status == "conflict":
        raise ActionError("conflict", "another action on this incident came first")
    if status == "written":
        audit.record(
            ctx.engine,
            actor=actor.id,
            role=actor.role,
            scope=actor.scope,
            action=f"incident.{req.action}",
            target=req.incident_id,
            detail={**_audit_detail(req), "entries": entry_ids},
            now_ms=now_ms,
        )
    verdict, reason = wait_verdict(ctx, event_ids, wait_s) if wait_s > 0 else ("pending", None)
    if status == "duplicate" and verdict != "rejected":
        return Outcome("duplicate", event_ids, reason)
    return Outcome(verdict, event_ids, reason)


def perform_many(
    ctx: ActionContext, reqs: Sequence[Request], actor: Actor, now_ms: int, *, wait_s: float = 3.0
) -> list[Outcome | ActionError]:
    """Several actions (a bulk dispatch): each checked, claimed and written on its own; the
    verdicts are awaited together."""
    out: list[Outcome | ActionError] = []
    for req in reqs:
        try:
            out.append(perform(ctx, req, actor, now_ms, wait_s=0))
        except ActionError as err:
            out.append(err)
    written = [e for o in out if isinstance(o, Outcome) for e in o.event_ids]
    if written:
        wait_verdict(ctx, written, wait_s)
    return [o if isinstance(o, ActionError) else _settled(ctx, o) for o in out]


def _settled(ctx: ActionContext, o: Outcome) -> Outcome:
    verdict, reason = wait_verdict(ctx, o.event_ids, 0)
    if o.status == "duplicate" and verdict != "rejected":
        return o
    return Outcome(verdict, o.event_ids, reason)
