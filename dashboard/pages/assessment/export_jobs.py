"""Scorecard exports as background jobs that show their progress.

The page's click checks role, rate limit and the shown table inside the request, then
:func:`start` runs the export in a thread of this process: ``exports.export_shown`` with
a progress callback, then the audit entry (once, with the file's hash). The job's record
— owner, stage, rows or pages so far, percent, result — is JSON in Redis under the
app's prefix with a TTL, so whichever gunicorn worker answers the page's polls reads
the same progress. The finished file waits in Redis for :data:`DATA_TTL_MS`.

A job belongs to the user who started it: its record and file are keyed under the
owner (``…:asm:job:<owner>:<id>``), so :func:`status` and :func:`fetch` look up only the
asking user's own jobs — another user's job id finds nothing. One running job per user:
a second click returns the job already running.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dashboard.auth import Principal
from dashboard.backend import Backend
from dashboard.i18n import t
from pipelines import assessment as S
from pipelines.access import audit
from pipelines.assessment import exports as E
from pipelines.assessment.pdf_font import PdfFontError

RECORD_TTL_MS = 10 * 60_000  # the job's record (progress, then the result's name and hash)
DATA_TTL_MS = 3 * 60_000  # the finished file's bytes
STALL_MS = 60_000  # a running job silent this long died with its process

log = logging.getLogger("wangge.dashboard")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")  # secrets.token_urlsafe's alphabet


def clean_job_id(value: object) -> str | None:
    """A job id (or shown-table token) as made here, else None (checked before any lookup)."""
    return value if isinstance(value, str) and _JOB_ID.fullmatch(value) else None


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    fmt: str
    state: str  # running · done · error
    stage: str  # a key of exports.STAGES
    done: int
    total: int
    percent: int
    updated_ms: int
    error: str = ""  # a message key (asm.<error>) when state is "error"
    filename: str = ""
    mime: str = ""
    rows: int = 0
    sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        return cls(**json.loads(raw))


def stage_text(job: Job, lang: str) -> str:
    """What the job is doing, for the progress bar (or why it stopped)."""
    if job.state == "error":
        return t(f"asm.{job.error}", lang)
    return t(f"asm.stage.{job.stage}", lang, done=job.done, total=job.total)


def _key(b: Backend, owner: str, job_id: str) -> str:
    return f"{b.settings.redis.prefix}:asm:job:{owner}:{job_id}"


def _claim_key(b: Backend, owner: str) -> str:
    return f"{b.settings.redis.prefix}:asm:job-of:{owner}"


def _save(b: Backend, job: Job) -> None:
    pipe = b.r.pipeline(transaction=False)
    pipe.set(_key(b, job.owner, job.id), job.to_json(), px=RECORD_TTL_MS)
    if job.state == "running":  # the claim lives while the job shows signs of life
        pipe.set(_claim_key(b, job.owner), job.id, px=STALL_MS, xx=True)
    pipe.execute()


def status(b: Backend, owner: str, job_id: str) -> Job | None:
    """The job if ``owner`` started it (a silent running job is reported as lost)."""
    jid = clean_job_id(job_id)  # an odd id finds nothing (and never reaches Redis)
    raw = b.r.get(_key(b, owner, jid)) if jid else None
    if raw is None:
        return None
    job = Job.from_json(raw)
    if job.owner != owner:
        return None
    if job.state == "running" and b.now_ms() - job.updated_ms > STALL_MS:
        return dataclasses.replace(job, state="error", error="lost")
    return job


def running(b: Backend, owner: str) -> Job | None:
    """The owner's running job, if any."""
    raw = b.r.get(_claim_key(b, owner))
    job = status(b, owner, raw.decode()) if isinstance(raw, bytes) else None
    return job if job is not None and job.state == "running" else None


def fetch(b: Backend, owner: str, job_id: str) -> tuple[Job, bytes] | None:
    """The finished file, for its owner only (until its TTL)."""
    job = status(b, owner, job_id)
    if job is None or job.state != "done":
        return None
    data = b.r.get(_key(b, owner, job.id) + ":data")
    return (job, data) if isinstance(data, bytes) else None


Spawn = Callable[[Callable[[], None]], None]


def _thread(body: Callable[[], None]) -> None:
    threading.Thread(target=body, name="export-job", daemon=True).start()


def start(
    b: Backend, p: Principal, shown: S.Shown, fmt: str, lang: str, spawn: Spawn = _thread
) -> Job:
    """A new job writing ``shown`` in ``fmt`` — or, while one runs, the owner's running job."""
    job = Job(
        id=secrets.token_urlsafe(18),
        owner=p.username,
        fmt=fmt,
        state="running",
        stage="table",
        done=0,
        total=1,
        percent=0,
        updated_ms=b.now_ms(),
    )
    b.r.set(_key(b, job.owner, job.id), job.to_json(), px=RECORD_TTL_MS)
    if not b.r.set(_claim_key(b, p.username), job.id, nx=True, px=STALL_MS):
        other = running(b, p.username)
        if other is not None:
            b.r.delete(_key(b, job.owner, job.id))
            return other
        b.r.set(_claim_key(b, p.username), job.id, px=STALL_MS)  # a dead job's claim
    spawn(lambda: run(b, job, p, shown, lang))
    return job


def run(b: Backend, job: Job, p: Principal, shown: S.Shown, lang: str) -> None:
    """The job's body: the file with progress, its audit entry, then the result."""
    current = job

    def progress(stage: str, done: int, total: int) -> None:
        nonlocal current
        pct = max(current.percent, E.percent(stage, done, total))  # the bar only grows
        current = dataclasses.replace(
            current, stage=stage, done=done, total=total, percent=pct, updated_ms=b.now_ms()
        )
        _save(b, current)

    try:
        f = E.export_shown(shown, b.city, b.settings, job.fmt, lang, progress)
        progress("audit", 0, 1)
        audit.record(
            b.engine,
            actor=p.username,
            role=p.role,
            scope=p.scope,
            action="export",
            target=E.audit_target(shown),
            detail=E.audit_detail(shown, f, job.fmt, "web"),
            now_ms=b.now_ms(),
        )
        b.r.set(_key(b, job.owner, job.id) + ":data", f.data, px=DATA_TTL_MS)
        current = dataclasses.replace(
            current,
            state="done",
            stage="done",
            done=f.rows,
            total=f.rows,
            percent=100,
            updated_ms=b.now_ms(),
            filename=f.filename,
            mime=f.mime,
            rows=f.rows,
            sha256=f.sha256,
        )
    except PdfFontError as exc:  # the machine has no CJK font: say so (README "PDF's font")
        log.error("export job %s: %s", job.id, exc)
        current = dataclasses.replace(current, state="error", error="font_missing")
    except Exception:  # any failure ends the job with a message, never a hung bar
        log.exception("export job %s failed", job.id)
        current = dataclasses.replace(current, state="error", error="failed")
    try:
        _save(b, current)
    finally:
        claim = _claim_key(b, job.owner)
        if b.r.get(claim) == job.id.encode():
            b.r.delete(claim)
