"""Simulated street command centres and the grid workers' phones answering their tasks.

For the incidents the simulator hands over (``Simulator(..., command=True)`` queues a
share of its new incidents in ``commanded`` and reports them only), the loop runs as a
real one would:

1. the street's command centre (actor ``sim-<street_id>``, role ``street_operator``,
   scope its street) accepts the report and dispatches it to the grid's worker through the
   dispatch core (``actions.perform``), a while after the report — mostly within the
   flow's accept and dispatch deadlines;
2. the worker's phone polls ``GET /tasks`` through the gateway (a fleet key naming the
   worker, as simulated phones send their fixes) and answers ``handle`` and later
   ``resolve`` (a note and a photo link) with ``POST /tasks/{incident_id}``;
3. the resolved incident is the worker's ``verify`` task (the flow asks for an on-site
   check): the phone answers ``verify_pass`` (now and then ``verify_fail`` with a reason:
   the incident goes back to dispatch and round again);
4. the command centre closes the verified incident with the level it was resolved at.

Every time is the simulator's clock, passed in to :meth:`CommandCentre.step`; the delays
are drawn from a random stream seeded from the simulator's seed. Nothing sleeps.
"""

from __future__ import annotations

import heapq
import http.client
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np
import orjson

from pipelines.city.simulator.state import _Incident
from pipelines.dispatch.flows import HOUR_MS, Flows

log = logging.getLogger("wangge.simulator")
MINUTE_MS = 60_000
# (method, path, JSON body or None, headers) → (HTTP status, body)
Transport = Callable[[str, str, bytes | None, dict[str, str]], tuple[int, bytes]]
RETRY_CODES = {"not_found", "conflict"}  # the pipeline has not caught up yet: try again
PHOTO_BASE = "https://sim.wangge.invalid/photos"


def centre_id(street_id: str) -> str:
    return f"sim-{street_id}"


def request_id(incident_id: str, action: str, n: int) -> str:
    """Deterministic and within the core's 8-40 characters of [A-Za-z0-9_-]."""
    rid = f"s{action[:3]}{n}-{incident_id}"
    return rid[:40] if len(rid) >= 8 else rid.ljust(8, "0")


def stage_hours(flows: Flows, category: str, severity: int, stage: str) -> float:
    return flows.select(category, severity).stage(stage).hours


@dataclass
class _Case:
    incident_id: str
    category: str
    severity: int
    street_id: str
    grid_id: str
    worker_id: str
    reported_ms: int
    step: str = "accept"  # accept → dispatch → watch → done
    n: int = 0  # the centre's attempts (request ids)
    tries: int = 0  # retries of the current step


@dataclass
class HttpTransport:
    """A kept-alive HTTP connection to the gateway (one reconnect on a closed one)."""

    url: str
    timeout_s: float = 30.0
    _conn: http.client.HTTPConnection | None = None

    def __call__(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                u = urlparse(self.url)
                self._conn = http.client.HTTPConnection(
                    u.hostname or "127.0.0.1", u.port or 80, timeout=self.timeout_s
                )
            try:
                hdrs = {"Content-Type": "application/json", **headers} if body else headers
                self._conn.request(method, path, body, hdrs)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class Phones:
    """The simulated workers' phones: they poll their tasks and answer them through the
    gateway with a fleet key (``?worker=`` names the worker)."""

    transport: Transport
    key: str
    rng: np.random.Generator
    flows: Flows
    poll_ms: int = 2 * MINUTE_MS
    verify_fail_share: float = 0.08
    workers: dict[str, set[str]] = field(default_factory=dict)  # worker → its cases
    next_poll: dict[str, int] = field(default_factory=dict)
    planned: dict[tuple[str, str, int], int] = field(default_factory=dict)  # → due ms
    answers: list[tuple[int, str, str, str, int]] = field(default_factory=list)  # heap
    counts: dict[str, int] = field(default_factory=dict)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def watch(self, worker: str, incident_id: str, now_ms: int) -> None:
        self.workers.setdefault(worker, set()).add(incident_id)
        self.next_poll.setdefault(worker, now_ms + int(self.rng.integers(0, self.poll_ms)))

    def release(self, worker: str, incident_id: str) -> None:
        cases = self.workers.get(worker, set())
        cases.discard(incident_id)
        if not cases:
            self.workers.pop(worker, None)
            self.next_poll.pop(worker, None)
        for key in [k for k in self.planned if k[0] == incident_id]:
            del self.planned[key]

    def _delay_ms(self, task: dict[str, Any], action: str) -> int:
        h = stage_hours(self.flows, task["category"], int(task["severity"]), "handle")
        if action == "handle":  # on the way within minutes
            return int(MINUTE_MS * self.rng.uniform(2, 20))
        if action == "resolve":  # most well within the stage, some late
            share = self.rng.uniform(0.05, 0.6) if self.rng.random() < 0.9 else 1.1
            return int(max(5 * MINUTE_MS, h * HOUR_MS * share))
        v = stage_hours(self.flows, task["category"], int(task["severity"]), "verify")
        return int(max(3 * MINUTE_MS, v * HOUR_MS * self.rng.uniform(0.05, 0.5)))

    def poll(self, worker: str, now_ms: int) -> None:
        status, body = self.transport(
            "GET", f"/tasks?worker={quote(worker)}", None, self._headers()
        )
        self._count("polls")
        if status != 200:
            log.warning("tasks of %s: %s %s", worker, status, body[:200])
            return
        mine = self.workers.get(worker, set())
        for task in orjson.loads(body)["tasks"]:
            if task["incident_id"] not in mine:  # a planned lifecycle: the simulator's own
                continue
            action = task["actions"][0]
            if action == "verify_pass" and self.rng.random() < self.verify_fail_share:
                action = "verify_fail"
            key = (task["incident_id"], action.split("_")[0], int(task["n_events"]))
            if key in self.planned:
                continue
            due = now_ms + self._delay_ms(task, action)
            self.planned[key] = due
            heapq.heappush(
                self.answers, (due, task["incident_id"], action, worker, int(task["n_events"]))
            )

    def answer(self, incident_id: str, action: str, worker: str, n: int, now_ms: int) -> None:
        body: dict[str, Any] = {
            "action": action,
            "request_id": request_id(incident_id, action, n),
            "expected_events": n,
            "ts": now_ms,
        }
        if action == "resolve":
            body["note"] = "已到现场处置完毕(模拟)"
            body["photo_url"] = f"{PHOTO_BASE}/{quote(incident_id)}-{n}.jpg"
        elif action == "verify_fail":
            body["reason"] = "现场核查未解决(模拟)"
        elif action == "verify_pass":
            body["note"] = "现场核查已解决(模拟)"
        status, text = self.transport(
            "POST",
            f"/tasks/{quote(incident_id)}?worker={quote(worker)}",
            orjson.dumps(body),
            self._headers(),
        )
        self._count(f"{action}:{status}")
        if status >= 400 and status != 409:  # 409: the incident moved on meanwhile
            log.warning("%s %s by %s: %s %s", action, incident_id, worker, status, text[:200])

    def step(self, now_ms: int) -> None:
        for worker in [w for w, t in self.next_poll.items() if t <= now_ms]:
            self.next_poll[worker] = now_ms + self.poll_ms
            self.poll(worker, now_ms)
        while self.answers and self.answers[0][0] <= now_ms:
            due, incident_id, action, worker, n = heapq.heappop(self.answers)
            self.answer(incident_id, action, worker, n, due)


class CommandCentre:
    """The simulated street command centres and their workers' phones (module docstring).

    ``ctx`` is the dispatch core's ``ActionContext``; ``phones`` answer through the
    gateway. :meth:`step` (the simulator's time) does whatever is due."""

    def __init__(
        self,
        sim: Any,
        ctx: Any,
        transport: Transport,
        fleet_key: str,
        *,
        watch_ms: int = 3 * MINUTE_MS,
        max_tries: int = 40,
    ) -> None:
        from pipelines.dispatch.flows import flows_for

        self.sim = sim
        self.ctx = ctx
        self.flows: Flows = getattr(ctx, "flows", None) or flows_for(ctx.settings)
        self.rng = np.random.default_rng([int(sim.cfg.seed), int(sim.start_ms), 37])
        self.phones = Phones(transport, fleet_key, self.rng, self.flows)
        self.watch_ms = watch_ms
        self.max_tries = max_tries
        self.cases: dict[str, _Case] = {}
        self._due: list[tuple[int, int, str]] = []
        self._seq = 0
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------ scheduling

    def _at(self, ms: int, case: _Case) -> None:
        self._seq += 1
        heapq.heappush(self._due, (int(ms), self._seq, case.incident_id))

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _within(self, case: _Case, stage: str, lo: float, hi: float) -> int:
        """A delay: a share of the stage's hours (now and then a little over it)."""
        h = stage_hours(self.flows, case.category, case.severity, stage)
        share = self.rng.uniform(lo, hi) if self.rng.random() < 0.92 else self.rng.uniform(1, 1.4)
        return int(max(MINUTE_MS, h * HOUR_MS * share))

    def take(self, now_ms: int) -> None:
        """The incidents the simulator handed over since the last call."""
        q = self.sim.commanded
        while q:
            t_report, inc = q.popleft()
            case = self._case(inc, t_report)
            self.cases[case.incident_id] = case
            self._at(t_report + self._within(case, "accept", 0.02, 0.4), case)
            self._count("taken")

    def _case(self, inc: _Incident, t_report: int) -> _Case:
        sim = self.sim
        return _Case(
            incident_id=inc.incident_id,
            category=inc.category,
            severity=int(inc.severity),
            street_id=str(sim.street_ids[sim.grid_street[inc.grid]]),
            grid_id=str(sim.grid_ids[inc.grid]),
            worker_id=inc.handler_id,
            reported_ms=t_report,
        )

    # ------------------------------------------------------------ acting

    def _perform(self, case: _Case, action: str, now_ms: int, **records: Any) -> str | None:
        """Perform as the street's centre; the outcome, or the refusal's code."""
        from pipelines.dispatch import actions

        case.n += 1
        req = actions.Request(
            action=action,
            incident_id=case.incident_id,
            request_id=request_id(case.incident_id, action, case.n),
            **records,
        )
        actor = actions.Actor(centre_id(case.street_id), "street_operator", case.street_id)
        try:
            out = actions.perform(self.ctx, req, actor, now_ms)
        except actions.ActionError as err:
            self._count(f"{action}:{err.code}")
            return str(err.code)
        self._count(f"{action}:{out.status}")
        return str(out.status)

    def _act(self, case: _Case, now_ms: int) -> None:
        from pipelines.dispatch import actions

        if case.step == "accept":
            got = self._perform(case, "accept", now_ms, note="受理(模拟指挥中心)")
            if got in ("applied", "pending", "duplicate"):
                case.step, case.tries = "dispatch", 0
                self._at(now_ms + self._within(case, "dispatch", 0.02, 0.35), case)
                return
        elif case.step == "dispatch":
            got = self._perform(
                case, "dispatch", now_ms, handler_id=case.worker_id, note="派遣网格员(模拟)"
            )
            if got in ("applied", "pending", "duplicate"):
                case.step, case.tries = "watch", 0
                self.phones.watch(case.worker_id, case.incident_id, now_ms)
                self._at(now_ms + self.watch_ms, case)
                return
        else:  # watch: close what was verified; send back what came back
            row = actions.load_incident(self.ctx.engine, case.incident_id)
            status = None if row is None else row.get("status")
            if status == "verified":
                level = (row or {}).get("level") or "grid"
                got = self._perform(case, "close", now_ms, level=level, note="结案(模拟)")
                if got in ("applied", "pending", "duplicate"):
                    self._done(case)
                    return
            elif status == "resolved" and not self._onsite(case):  # no worker's check
                got = self._perform(case, "verify_pass", now_ms, note="核查通过(模拟)")
                self._at(now_ms + self.watch_ms, case)
                return
            elif status == "returned":  # a failed on-site check: dispatch again
                case.step, case.tries = "dispatch", 0
                self.phones.release(case.worker_id, case.incident_id)
                self._at(now_ms + self._within(case, "dispatch", 0.05, 0.5), case)
                return
            elif status == "closed" or (status is None and case.tries > self.max_tries):
                self._done(case)
                return
            else:
                case.tries += status is None
                self._at(now_ms + self.watch_ms, case)
                return
        if got in RETRY_CODES and case.tries < self.max_tries:
            case.tries += 1
            self._at(now_ms + MINUTE_MS, case)
            return
        if got == "wrong_stage" and case.tries < self.max_tries:  # someone else acted
            case.tries += 1
            self._resync(case, actions.load_incident(self.ctx.engine, case.incident_id), now_ms)
            return
        log.info("simulated centre: %s of %s stopped (%s)", case.step, case.incident_id, got)
        self._done(case)

    def _resync(self, case: _Case, row: dict[str, Any] | None, now_ms: int) -> None:
        """Carry on from where the incident is (an operator on the dashboard may have
        acted on it meanwhile)."""
        status = None if row is None else row.get("status")
        step = {"reported": "accept", "escalated": "accept", "accepted": "dispatch"}
        step |= {"returned": "dispatch", "closed": "done"}
        nxt = step.get(str(status), "watch")
        if nxt == "done":
            self._done(case)
            return
        if nxt == "watch" and case.step != "watch":
            handler = (row or {}).get("handler_id")
            case.worker_id = str(handler) if handler else case.worker_id
            self.phones.watch(case.worker_id, case.incident_id, now_ms)
        elif nxt != "watch" and case.step == "watch":
            self.phones.release(case.worker_id, case.incident_id)
        case.step = nxt
        self._at(now_ms + MINUTE_MS, case)

    def _onsite(self, case: _Case) -> bool:
        verify = self.flows.select(case.category, case.severity).stage("verify")
        return "onsite_check" in verify.requires

    def _done(self, case: _Case) -> None:
        if case.step in ("watch", "close"):
            self.phones.release(case.worker_id, case.incident_id)
        case.step = "done"
        self.cases.pop(case.incident_id, None)
        self._count("done")

    def step(self, now_ms: int) -> None:
        """Everything due by ``now_ms`` (the simulator's clock): new incidents taken,
        the centres' actions, the phones' polls and answers."""
        self.take(now_ms)
        while self._due and self._due[0][0] <= now_ms:
            due, _, incident_id = heapq.heappop(self._due)
            case = self.cases.get(incident_id)
            if case is None:
                continue
            try:
                self._act(case, max(due, case.reported_ms))
            except Exception:  # one incident's trouble never stops the simulator
                log.exception("simulated centre: %s", incident_id)
                self._done(case)
        try:
            self.phones.step(now_ms)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("simulated phones: %s", exc)
