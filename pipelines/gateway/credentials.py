"""Who may send: gateway credentials, each bound to what it may send.

A credential is a random secret (``wgk_…``, shown once) of one *kind*:

=========  ==========================================================================
kind       may send
=========  ==========================================================================
phone      OsmAnd fixes of ONE device id, as ONE roster worker (a worker's phone)
fleet      OsmAnd fixes of many phones whose device id is a roster worker id, for the
           workers whose own grid lies in its area (an MDM-managed district, the
           simulator); also location batches of those workers
camera     Frigate events / reviews (HTTP) and video batches of its cameras: a list of
           registered camera ids, or every registered camera in its area
hotline    Open311 requests and report batches whose location lies in its area (its
           jurisdiction); reads requests of its area
app        Open311 requests (source ``resident``) in its area; reads requests of its area
=========  ==========================================================================

Only the sha256 of a secret is stored (the secrets are 192 random bits, so a fast hash
is enough, as for wall tokens). Creation and revocation are audited in the same
transaction. A revoked credential is refused at once: a revocation bumps a generation
counter in Redis that every gateway reads with each request's rate-limit call, dropping
what it knew of the credentials immediately; without Redis (the CLI could not reach it)
a gateway re-reads SQL at most ``credential_cache_s`` later.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    String,
    Table,
    Text,
    select,
)

from pipelines.access import audit
from pipelines.city.geography import City
from pipelines.settings import GatewaySettings
from pipelines.spine import store

# Registered on the shared metadata: ``store.create_schema`` creates it once this module
# is imported (the gateway and the CLI import it before creating the schema).
gateway_credentials = Table(
    "gateway_credentials",
    store.metadata,
    Column("credential_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("area_id", String(32)),  # fleet / camera / hotline / app: where it may send
    Column("worker_id", String(64)),  # phone: the roster worker it sends as
    Column("device_id", String(128), unique=True),  # phone: the device id it sends
    Column("cameras", Text),  # camera: JSON list of registered camera ids (or area_id)
    Column("rate_per_minute", Integer),  # overrides the kind's default
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_ms", BigInteger),
    Column("revoked_by", String(128)),
)

KINDS: dict[str, str] = {
    "phone": "one worker's phone (OsmAnd / Traccar Client)",
    "fleet": "many phones of an area, device id = worker id (OsmAnd, location batches)",
    "camera": "a camera system (Frigate over HTTP, video batches)",
    "hotline": "a 12345 hotline (Open311, report batches)",
    "app": "a residents' app (Open311)",
}
SECRET_PREFIX = "wgk_"
MAX_SECRET = 128
MAX_DEVICE_ID = 128


class CredentialError(ValueError):
    """A bad credential request (message meant for the operator)."""


@dataclass(frozen=True)
class Credential:
    credential_id: str
    name: str
    kind: str
    area_id: str | None = None
    worker_id: str | None = None
    device_id: str | None = None
    cameras: tuple[str, ...] = ()
    rate_per_minute: int | None = None
    created_ms: int = 0
    revoked_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def rate(self, gs: GatewaySettings) -> int:
        if self.rate_per_minute is not None:
            return self.rate_per_minute
        return int(getattr(gs, f"{self.kind}_rate_per_minute"))

    def describe(self) -> str:
        if self.kind == "phone":
            return f"worker {self.worker_id}, device {self.device_id}"
        if self.kind == "camera" and self.cameras:
            more = f" (+{len(self.cameras) - 3})" if len(self.cameras) > 3 else ""
            return "cameras " + ",".join(self.cameras[:3]) + more
        return f"area {self.area_id}"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _of(row: Any) -> Credential:
    m = row._mapping
    return Credential(
        credential_id=m["credential_id"],
        name=m["name"],
        kind=m["kind"],
        area_id=m["area_id"],
        worker_id=m["worker_id"],
        device_id=m["device_id"],
        cameras=tuple(json.loads(m["cameras"])) if m["cameras"] else (),
        rate_per_minute=m["rate_per_minute"],
        created_ms=int(m["created_ms"]),
        revoked_ms=m["revoked_ms"],
    )


# ------------------------------------------------------------------ create / list / revoke


def create(
    engine: Engine,
    city: City,
    kind: str,
    name: str,
    *,
    now_ms: int,
    actor: str,
    area_id: str | None = None,
    worker_id: str | None = None,
    device_id: str | None = None,
    cameras: Sequence[str] = (),
    rate_per_minute: int | None = None,
) -> tuple[Credential, str]:
    """A new credential and its secret (returned once, never stored)."""
    if kind not in KINDS:
        raise CredentialError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if not name.strip() or len(name) > 128:
        raise CredentialError("a name of 1-128 characters is required")
    if rate_per_minute is not None and rate_per_minute <= 0:
        raise CredentialError("--rate must be a positive number of events per minute")
    cams = tuple(dict.fromkeys(c.strip() for c in cameras if c.strip()))
    with engine.connect() as conn:
        if kind == "phone":
            if not worker_id or not device_id:
                raise CredentialError("a phone needs --worker and --device-id")
            if len(device_id) > MAX_DEVICE_ID or not device_id.strip():
                raise CredentialError(f"device id: 1-{MAX_DEVICE_ID} characters")
            w = store.workers
            if (
                conn.execute(select(w.c.worker_id).where(w.c.worker_id == worker_id)).first()
                is None
            ):
                raise CredentialError(f"worker {worker_id} is not in the roster")
            taken = conn.execute(
                select(gateway_credentials.c.credential_id).where(
                    gateway_credentials.c.device_id == device_id,
                    gateway_credentials.c.revoked_ms.is_(None),
                )
            ).first()
            if taken is not None:
                raise CredentialError(f"device {device_id} is already bound ({taken[0]})")
            area_id = None
        elif kind == "camera" and cams:
            c = store.cameras
            known = set(
                conn.execute(select(c.c.camera_id).where(c.c.camera_id.in_(cams))).scalars()
            )
            unknown = [x for x in cams if x not in known]
            if unknown:
                raise CredentialError(f"cameras not in the registry: {', '.join(unknown[:10])}")
            area_id = None
        else:
            area_id = area_id or city.city_id
            if city.level_of(area_id) not in ("city", "district", "street"):
                raise CredentialError(f"unknown area {area_id!r} (a city, district or street id)")
    if kind != "phone" and (worker_id or device_id):
        raise CredentialError("--worker / --device-id are for phones only")
    if kind != "camera" and cams:
        raise CredentialError("--cameras is for camera systems only")
    secret = SECRET_PREFIX + secrets.token_urlsafe(24)
    cred = Credential(
        credential_id="gc_" + uuid.uuid4().hex[:12],
        name=name.strip(),
        kind=kind,
        area_id=area_id,
        worker_id=worker_id if kind == "phone" else None,
        device_id=device_id if kind == "phone" else None,
        cameras=cams,
        rate_per_minute=rate_per_minute,
        created_ms=now_ms,
    )
    row = {
        "credential_id": cred.credential_id,
        "name": cred.name,
        "kind": kind,
        "secret_hash": secret_hash(secret),
        "area_id": cred.area_id,
        "worker_id": cred.worker_id,
        "device_id": cred.device_id,
        "cameras": json.dumps(list(cams)) if cams else None,
        "rate_per_minute": rate_per_minute,
        "created_ms": now_ms,
        "created_by": actor,
    }
    with audit.transaction(engine) as conn:
        conn.execute(gateway_credentials.insert(), [row])
        audit.append(
            conn,
            actor=actor,
            role="",
            scope=cred.area_id or "",
            action="gateway_credential_created",
            target=cred.credential_id,
            detail={"kind": kind, "name": cred.name, "scope": cred.describe()},
            now_ms=now_ms,
        )
    return cred, secret


def list_all(engine: Engine, include_revoked: bool = True) -> list[Credential]:
    q = select(gateway_credentials).order_by(gateway_credentials.c.created_ms)
    if not include_revoked:
        q = q.where(gateway_credentials.c.revoked_ms.is_(None))
    with engine.connect() as conn:
        return [_of(r) for r in conn.execute(q)]


def revoke(engine: Engine, credential_id: str, *, now_ms: int, actor: str) -> Credential:
    t = gateway_credentials
    with audit.transaction(engine) as conn:
        row = conn.execute(select(t).where(t.c.credential_id == credential_id)).first()
        if row is None:
            raise CredentialError(f"no credential {credential_id}")
        cred = _of(row)
        if cred.revoked:
            raise CredentialError(f"{credential_id} was already revoked")
        conn.execute(
            t.update()
            .where(t.c.credential_id == credential_id)
            .values(revoked_ms=now_ms, revoked_by=actor)
        )
        audit.append(
            conn,
            actor=actor,
            role="",
            scope=cred.area_id or "",
            action="gateway_credential_revoked",
            target=credential_id,
            detail={"kind": cred.kind, "name": cred.name},
            now_ms=now_ms,
        )
    return cred


def load_active(engine: Engine) -> dict[str, Credential]:
    """Every live credential by its secret's hash (one query; a gateway's snapshot)."""
    t = gateway_credentials
    with engine.connect() as conn:
        rows = conn.execute(select(t).where(t.c.revoked_ms.is_(None))).all()
    return {r._mapping["secret_hash"]: _of(r) for r in rows}


def lookup(engine: Engine, secret: str) -> Credential | None:
    """The credential of a secret, revoked ones included (None if unknown)."""
    if not secret or len(secret) > MAX_SECRET:
        return None
    t = gateway_credentials
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.secret_hash == secret_hash(secret))).first()
    return None if row is None else _of(row)


# ------------------------------------------------------------------ the per-process cache


@dataclass
class CredentialCache:
    """What a gateway process knows of the credentials.

    * a snapshot of every live credential (one SQL query, re-read every ``ttl_s``), so a
      request's key is a dictionary look-up, not a query;
    * single look-ups for keys not in the snapshot (a key created since), remembered
      ``ttl_s`` — misses too, so a flood of bogus keys costs one query per key per period;
    * ``generation``: the Redis revocation counter last seen. A different one drops both
      at once (a revoked key is refused from the next request on) and the snapshot is
      re-read."""

    ttl_s: float
    clock: Callable[[], float] = time.monotonic
    max_entries: int = 100_000
    generation: int = -1
    snapshot: dict[str, Credential] = field(default_factory=dict)
    snapshot_at: float = -1e18
    _entries: OrderedDict[str, tuple[float, Credential | None]] = field(default_factory=OrderedDict)

    def get(self, secret: str) -> tuple[bool, Credential | None]:
        """(known, credential) — known may be a remembered miss (None)."""
        key = secret_hash(secret)
        found = self.snapshot.get(key)
        if found is not None:
            return True, found
        got = self._entries.get(key)
        if got is None or self.clock() - got[0] > self.ttl_s:
            return False, None
        return True, got[1]

    def put(self, secret: str, cred: Credential | None) -> None:
        key = secret_hash(secret)
        self._entries[key] = (self.clock(), cred)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def snapshot_due(self) -> bool:
        return self.clock() - self.snapshot_at > self.ttl_s

    def replace_snapshot(self, creds: dict[str, Credential], taken_at: float) -> None:
        self.snapshot = creds
        self.snapshot_at = taken_at

    def seen_generation(self, generation: int) -> bool:
        """Record the revocation counter; True (and everything dropped) if it moved."""
        if generation == self.generation:
            return False
        first = self.generation == -1  # never read (Redis was down at start): drop all too
        self.generation = generation
        if first and not self.snapshot and not self._entries:
            return False
        self._entries.clear()
        self.snapshot = {}
        self.snapshot_at = -1e18
        return True


def generation_key(prefix: str) -> str:
    """Redis counter bumped by every revocation (gateways read it with each request)."""
    return f"{prefix}:gw:cred_gen"
