"""Workers in the loop: a grid worker's phone reads its tasks and answers them.

* ``GET /tasks`` — the worker's open tasks (JSON): every incident dispatched to the worker
  (status ``dispatched`` or ``handling``: task ``handle``) and every incident resolved in
  the worker's grid whose flow asks for an on-site check before verification (task
  ``verify``; assigned to the incident's handler when that is a roster worker of the
  incident's grid, else to the grid's first roster worker by id). Each task names the
  incident, its category and severity, where it is, what is asked, the stage's deadline
  (the flow's), what must be recorded and the actions the phone may take.
* ``POST /tasks/{incident_id}`` — the worker's answer, ``{"action": "handle" | "resolve" |
  "verify_pass" | "verify_fail", "request_id": "…", "note"?, "photo_url"?, "reason"?,
  "expected_events"?, "ts"?}``. It is performed as the dispatch core's action (the same
  checks, records and audit as on the dashboard) with the worker as actor
  (role ``grid_worker``, scope the worker's grid); the answer says whether the lifecycle
  event is applied, pending, a duplicate (the same ``request_id`` again: nothing new is
  written) or was turned down. ``ts`` (epoch ms) is when the phone acted, for an answer
  queued while offline: not in the future, not older than ``streams.max_age_days``.

Who: a ``phone`` credential (its worker), or a ``fleet`` credential (an MDM-managed set
of phones, the simulator) naming the worker with ``?worker=`` / ``X-Worker-Id`` — a
worker whose own grid lies in the fleet's area. The key as for the batch API:
``Authorization: Bearer <key>`` (or ``X-Api-Key``, or ``?key=``). Every call counts
against the credential's rate; errors are our JSON error format.

OsmAnd replies stay empty: Traccar's server can answer a fix with a queued command's
text, but no Traccar Client reads a reply's body (see the README), so a phone learns of
new tasks by polling ``GET /tasks``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipelines.city.geography import City
from pipelines.dispatch import actions
from pipelines.dispatch.flows import Flows, flows_for
from pipelines.gateway import core
from pipelines.gateway.credentials import Credential
from pipelines.gateway.errors import GatewayError, json_error
from pipelines.gateway.frigate import bearer
from pipelines.gateway.registry import Protocol, client_address, read_body, register, route
from pipelines.redis_client import connect
from pipelines.spine import store

render = json_error
ROLE = "grid_worker"
WORKER_ACTIONS = ("handle", "resolve", "verify_pass", "verify_fail")
HANDLE_STATUSES = ("dispatched", "handling")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,40}$")
MAX_TASKS = 200
# what each task asks, and the record each requirement of the stage being left needs
ASKS = {
    ("handle", "dispatched"): "go to the place and start handling (handle)",
    ("handle", "handling"): "finish and report it resolved (resolve)",
    ("verify", "resolved"): "check on site whether it is resolved (verify_pass / verify_fail)",
}
RECORD_OF = {"note": "note", "photo": "photo_url", "onsite_check": "onsite_by", "level": "level"}
# ActionError code → HTTP status
STATUS_OF_CODE = {
    "not_found": 404,
    "not_allowed": 403,
    "out_of_scope": 403,
    "not_assigned": 403,
    "wrong_stage": 409,
    "conflict": 409,
    "missing_record": 422,
    "bad_value": 400,
}
OUTCOME_STATUS = {"applied": 200, "duplicate": 200, "pending": 202, "rejected": 409}


# ------------------------------------------------------------------ which tasks (pure)


@dataclass(frozen=True)
class Task:
    incident_id: str
    task: str  # handle | verify
    status: str
    category: str
    severity: int
    lon: float | None
    lat: float | None
    grid_id: str | None
    description: str | None
    due_ms: int | None
    requires: tuple[str, ...]
    actions: tuple[str, ...]
    n_events: int
    reported_ms: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "task": self.task,
            "status": self.status,
            "category": self.category,
            "severity": self.severity,
            "place": {"lon": self.lon, "lat": self.lat, "grid_id": self.grid_id},
            "ask": ASKS.get((self.task, self.status), ""),
            "due_ms": self.due_ms,
            "description": self.description,
            "requires": [RECORD_OF.get(r, r) for r in self.requires],
            "actions": list(self.actions),
            "n_events": self.n_events,
            "reported_ms": self.reported_ms,
        }


def verify_assignee(incident: Mapping[str, Any], roster: Mapping[str, str]) -> str | None:
    """Who checks a resolved incident on site: its handler when that is a roster worker of
    the incident's grid, else the grid's first roster worker by id (None: nobody there)."""
    grid = incident.get("grid_id")
    handler = incident.get("handler_id")
    if handler is not None and roster.get(str(handler)) == grid:
        return str(handler)
    here = sorted(w for w, g in roster.items() if g == grid)
    return here[0] if here else None


def stage_entered_ms(incident: Mapping[str, Any]) -> int:
    """When the incident entered its current stage: the handle stage starts at dispatch
    (a ``handling`` incident is still in it), every other at its latest status event."""
    if incident.get("status") == "handling" and incident.get("dispatched_ms") is not None:
        return int(incident["dispatched_ms"])
    for col in ("stage_ms", "last_ms", "reported_ms"):
        if incident.get(col) is not None:
            return int(incident[col])
    return 0


def task_of(incident: Mapping[str, Any], kind: str, flows: Flows) -> Task:
    flow = flows.select(str(incident["category"]), int(incident["severity"]))
    status = str(incident["status"])
    stage = flow.stage_of(status)
    due = flow.stage_due_ms(status, stage_entered_ms(incident), incident.get("due_ms"))
    if kind == "verify":
        actions: tuple[str, ...] = ("verify_pass", "verify_fail")
    else:
        actions = ("handle",) if status == "dispatched" else ("resolve",)
    # the records asked for are those of the stage being left (handling → resolved leaves
    # the handle stage; handle itself only starts it)
    requires = stage.requires if stage is not None and actions != ("handle",) else ()
    lon, lat = incident.get("lon"), incident.get("lat")
    return Task(
        incident_id=str(incident["incident_id"]),
        task=kind,
        status=status,
        category=str(incident["category"]),
        severity=int(incident["severity"]),
        lon=None if lon is None else float(lon),
        lat=None if lat is None else float(lat),
        grid_id=incident.get("grid_id"),
        description=incident.get("description"),
        due_ms=due,
        requires=tuple(requires),
        actions=actions,
        n_events=int(incident.get("n_events") or 0),
        reported_ms=incident.get("reported_ms"),
    )


def tasks_of(
    worker_id: str,
    handled: Sequence[Mapping[str, Any]],
    resolved_here: Sequence[Mapping[str, Any]],
    roster: Mapping[str, str],
    flows: Flows,
    city: City | None = None,
) -> list[Task]:
    """The worker's tasks: ``handled`` are incidents whose handler is the worker (any
    status: only dispatched / handling count), ``resolved_here`` resolved incidents of
    the worker's grid; ``roster`` maps worker id → own grid. Most urgent first. With the
    ``city``, each task's actions are those the dispatch core offers the worker now (a
    task outside the worker's own grid is listed with none: the core refuses it)."""
    out: list[Task] = []
    for inc in handled:
        if inc.get("handler_id") == worker_id and inc.get("status") in HANDLE_STATUSES:
            out.append(task_of(inc, "handle", flows))
    for inc in resolved_here:
        if inc.get("status") != "resolved":
            continue
        flow = flows.select(str(inc["category"]), int(inc["severity"]))
        if "onsite_check" not in flow.stage("verify").requires:
            continue
        if verify_assignee(inc, roster) == worker_id:
            out.append(task_of(inc, "verify", flows))
    if city is not None and worker_id in roster:
        actor = actions.Actor(worker_id, ROLE, roster[worker_id])
        rows = {str(r["incident_id"]): r for r in [*handled, *resolved_here]}
        kept = []
        for t in out:
            offered = set(actions.offered(rows[t.incident_id], actor, flows, city))
            kept.append(dataclasses.replace(t, actions=tuple(x for x in t.actions if x in offered)))
        out = kept
    big = 2**62
    out.sort(key=lambda t: (t.due_ms if t.due_ms is not None else big, t.incident_id))
    return out[:MAX_TASKS]


def read_tasks(
    engine: Engine,
    worker_id: str,
    grid_id: str,
    roster: Mapping[str, str],
    flows: Flows,
    city: City | None = None,
) -> list[Task]:
    """The worker's tasks from the ``incidents`` table (two indexed reads)."""
    t = store.incidents
    with engine.connect() as conn:
        handled = [
            dict(r._mapping)
            for r in conn.execute(
                select(t).where(t.c.handler_id == worker_id, t.c.status.in_(HANDLE_STATUSES))
            )
        ]
        resolved = [
            dict(r._mapping)
            for r in conn.execute(select(t).where(t.c.status == "resolved", t.c.grid_id == grid_id))
        ]
    return tasks_of(worker_id, handled, resolved, roster, flows, city)


# ------------------------------------------------------------------ the answer (pure)


@dataclass(frozen=True)
class Answer:
    action: str
    request_id: str
    note: str | None = None
    photo_url: str | None = None
    reason: str | None = None
    expected_events: int | None = None
    ts_ms: int | None = None


def _text(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise GatewayError(400, "bad_value", f"{name}: text expected")
    v = v.strip()
    if len(v) > limit:
        raise GatewayError(400, "bad_value", f"{name}: at most {limit} characters")
    return v or None


def _int(body: Mapping[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise GatewayError(400, "bad_value", f"{name}: an integer expected")
    return v


def parse_answer(raw: bytes, now_ms: int, max_age_ms: int, skew_ms: int) -> Answer:
    """The phone's answer, checked for shape (the dispatch core checks the rest)."""
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise GatewayError(400, "malformed", "body: not JSON") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "malformed", "body: a JSON object expected")
    action = body.get("action")
    if action not in WORKER_ACTIONS:
        raise GatewayError(400, "bad_value", f"action: one of {', '.join(WORKER_ACTIONS)}")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not REQUEST_ID.match(rid):
        raise GatewayError(400, "bad_value", "request_id: 8-40 characters of A-Z a-z 0-9 _ -")
    ts = _int(body, "ts")
    if ts is not None and not now_ms - max_age_ms <= ts <= now_ms + skew_ms:
        raise GatewayError(400, "bad_value", "ts: in the future or too old")
    return Answer(
        action=str(action),
        request_id=rid,
        note=_text(body, "note", 2000),
        photo_url=_text(body, "photo_url", 512),
        reason=_text(body, "reason", 500),
        expected_events=_int(body, "expected_events"),
        ts_ms=ts,
    )


def action_error(err: Exception) -> GatewayError:
    """A dispatch core refusal in the gateway's error format."""
    code = str(getattr(err, "code", "bad_value"))
    detail = str(getattr(err, "detail", "") or err)
    return GatewayError(STATUS_OF_CODE.get(code, 400), code, detail)


# ------------------------------------------------------------------ handlers


async def _worker(request: Request, gw: core.Gateway) -> tuple[Credential, str, str, str]:
    """(credential, secret, worker id, the worker's own grid) of a request."""
    secret = bearer(request)
    cred = await gw.authenticate(secret, client_address(request))
    assert secret is not None
    if cred.kind == "phone":
        assert cred.worker_id is not None
        worker = cred.worker_id
        named = request.query_params.get("worker") or request.headers.get("x-worker-id")
        if named and named != worker:
            raise GatewayError(403, "forbidden", f"worker {named[:64]} is not this key's worker")
    elif cred.kind == "fleet":
        named = request.query_params.get("worker") or request.headers.get("x-worker-id")
        if not named:
            raise GatewayError(400, "bad_request", "a fleet key names the worker (?worker=)")
        worker = named[:64]
    else:
        raise GatewayError(403, "forbidden", f"a {cred.kind} key has no tasks")
    grid = await gw.worker_grid(worker)
    if grid is None:
        raise GatewayError(404, "unknown_worker", f"worker {worker} is not in the roster")
    if cred.kind == "fleet" and not gw.in_area(grid, cred.area_id):
        raise GatewayError(403, "forbidden", f"worker {worker} is outside this key's area")
    return cred, secret, worker, grid


def _flows(gw: core.Gateway) -> Flows:
    return flows_for(gw.settings)


async def list_tasks(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    cred, secret, worker, grid = await _worker(request, gw)
    await gw.admit(cred, secret, 1)
    reg = await gw.registry_fresh()
    tasks = await run_in_threadpool(
        read_tasks, gw.engine, worker, grid, reg.workers, _flows(gw), gw.city
    )
    body = {
        "worker_id": worker,
        "grid_id": grid,
        "now_ms": gw.now_ms(),
        "tasks": [t.as_json() for t in tasks],
    }
    return JSONResponse(body)


def _perform(gw: core.Gateway, incident_id: str, ans: Answer, worker: str, grid: str) -> Any:
    ctx = action_context(gw)
    req = actions.Request(
        action=ans.action,
        incident_id=incident_id,
        request_id=ans.request_id,
        expected_events=ans.expected_events,
        reason=ans.reason,
        note=ans.note,
        photo_url=ans.photo_url,
        onsite_by=worker if ans.action.startswith("verify") else None,
    )
    actor = actions.Actor(worker, ROLE, grid)
    try:
        return actions.perform(ctx, req, actor, ans.ts_ms or gw.now_ms())
    except actions.ActionError as err:
        raise action_error(err) from None


def action_context(gw: core.Gateway) -> Any:
    """The dispatch core's context of this gateway process (a blocking Redis client of
    its own: actions run in the thread pool), built on first use."""
    if gw.actions is None:
        r = connect(gw.settings.redis.url, health_check_interval=30)
        gw.actions = actions.ActionContext.of(gw.engine, r, gw.settings, gw.city)
    return gw.actions


async def answer_task(request: Request) -> Response:
    gw: core.Gateway = request.app.state.gateway
    s = gw.settings
    incident_id = request.path_params["incident_id"]
    body = await read_body(request, s.gateway.max_body_bytes)
    cred, secret, worker, grid = await _worker(request, gw)
    ans = parse_answer(
        body,
        gw.now_ms(),
        s.streams.max_age_days * 86_400_000,
        s.streams.future_skew_s * 1000,
    )
    await gw.admit(cred, secret, 1)
    outcome = await run_in_threadpool(_perform, gw, incident_id, ans, worker, grid)
    out = {
        "incident_id": incident_id,
        "action": ans.action,
        "request_id": ans.request_id,
        "outcome": outcome.status,
        "event_ids": list(outcome.event_ids),
        "reason": outcome.reason,
    }
    return JSONResponse(out, status_code=OUTCOME_STATUS.get(outcome.status, 200))


ROUTES = [
    route("/tasks", render, ("GET",))(list_tasks),
    route("/tasks/{incident_id}", render, ("POST",))(answer_task),
]

_AUTH = [
    {
        "name": "worker",
        "in": "query",
        "required": False,
        "description": "The worker (a fleet key only; a phone key is its worker's).",
        "schema": {"type": "string"},
    },
]


def _errors(*codes: tuple[int, str]) -> dict[str, Any]:
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": d, "content": err} for c, d in codes}


_COMMON = (
    (401, "Missing, unknown or revoked key."),
    (403, "Not this key's worker, a worker outside the fleet's area, or a key of another kind."),
    (404, "The worker is not in the roster (or, for an answer, no such incident)."),
    (429, "Over the key's rate (Retry-After), or too many failed keys."),
    (503, "The stream store is unavailable."),
)

LIST_DOC = """The worker's open tasks: incidents dispatched to the worker (dispatched or
handling: task "handle") and incidents resolved in the worker's grid whose flow asks for an
on-site check (task "verify"; the handler's when the handler is a roster worker of the grid,
else the grid's first roster worker's). Each with the stage deadline of its flow, what must
be recorded and the actions allowed. A phone key reads its own worker's tasks; a fleet key
names the worker (?worker=)."""

ANSWER_DOC = """The worker's answer, performed as the dispatch core's action with the worker as
actor (role grid_worker, scope the worker's grid): the same checks, records and audit as on
the dashboard. Idempotent on request_id: the same request again writes nothing
(outcome "duplicate"). verify_pass / verify_fail record the worker as onsite_by.
Refusals: 400 bad value, 403 not the worker's task, 404 no such incident, 409 wrong stage or
someone acted first, 422 a record the flow requires is missing (the message names it)."""

PATHS = {
    "/tasks": {
        "get": {
            "operationId": "tasks_list",
            "tags": ["Worker tasks (phones)"],
            "summary": "The worker's open tasks (handle what was dispatched; verify on site)",
            "description": LIST_DOC,
            "parameters": _AUTH,
            "responses": {
                "200": {
                    "description": "The tasks, most urgent first.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Tasks"}}
                    },
                },
                **_errors((400, "A fleet key without ?worker=."), *_COMMON),
            },
        }
    },
    "/tasks/{incident_id}": {
        "post": {
            "operationId": "tasks_answer",
            "tags": ["Worker tasks (phones)"],
            "summary": "The worker's answer to a task (handle, resolve, verify_pass, verify_fail)",
            "description": ANSWER_DOC,
            "parameters": [
                {
                    "name": "incident_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                *_AUTH,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/TaskAnswer"}}
                },
            },
            "responses": {
                "200": {"description": "Applied, or a duplicate of an earlier request_id."},
                "202": {"description": "Written; the pipeline has not applied it yet."},
                **_errors(
                    (400, "Malformed body or a bad value."),
                    _COMMON[0],
                    (403, "Not the key's worker, not the worker's task (not_assigned)."),
                    (404, "No such incident, or the worker is not in the roster."),
                    (409, "Not at this stage, someone acted first, or turned down."),
                    (413, "Body over gateway.max_body_bytes."),
                    (422, "A record the flow requires is missing (note, photo_url, …)."),
                    *_COMMON[3:],
                ),
            },
        }
    },
}

SCHEMAS = {  # "Error" is the batch API's (the same JSON error format)
    "Tasks": {
        "type": "object",
        "properties": {
            "worker_id": {"type": "string"},
            "grid_id": {"type": "string"},
            "now_ms": {"type": "integer"},
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "incident_id": {"type": "string"},
            "task": {"type": "string", "enum": ["handle", "verify"]},
            "status": {"type": "string"},
            "category": {"type": "string"},
            "severity": {"type": "integer"},
            "place": {
                "type": "object",
                "properties": {
                    "lon": {"type": "number"},
                    "lat": {"type": "number"},
                    "grid_id": {"type": "string"},
                },
            },
            "ask": {"type": "string"},
            "due_ms": {"type": ["integer", "null"], "description": "The stage's deadline."},
            "description": {"type": ["string", "null"]},
            "requires": {"type": "array", "items": {"type": "string"}},
            "actions": {"type": "array", "items": {"type": "string"}},
            "n_events": {"type": "integer", "description": "Pass as expected_events."},
        },
    },
    "TaskAnswer": {
        "type": "object",
        "required": ["action", "request_id"],
        "properties": {
            "action": {"type": "string", "enum": list(WORKER_ACTIONS)},
            "request_id": {"type": "string", "pattern": REQUEST_ID.pattern},
            "note": {"type": "string", "maxLength": 2000},
            "photo_url": {"type": "string", "maxLength": 512},
            "reason": {"type": "string", "maxLength": 500},
            "expected_events": {"type": "integer"},
            "ts": {"type": "integer", "description": "When the phone acted (epoch ms)."},
        },
    },
}


register(
    Protocol(
        name="tasks",
        title="Worker tasks (phones)",
        description=(__doc__ or "").split("\n\n")[0],
        routes=ROUTES,
        error=render,
        paths=PATHS,
        schemas=SCHEMAS,
        prefixes=("/tasks",),
    )
)
