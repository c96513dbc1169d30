"""Which city a database and a Redis prefix belong to.

History in SQL and live state in Redis are keyed by area ids. Started on a database that
holds another city, the product mixes the two: incidents of both cities in one table,
accounts scoped to areas that do not exist, an empty wall. So a database is **bound to
one city** at its first start: ``city_binding`` (one row) records the city's id, name and
a fingerprint of its areas. Every later start of ``wangge run``, ``wangge pipelines``, a
pipeline worker, ``wangge rebuild-live`` and the dashboard compares the configured city
with it and refuses a different one with :class:`CityMismatch`, whose message names both
cities and the ways out. The Redis prefix carries the same stamp (key ``<prefix>:city``),
as a production Redis outlives a change of database.

The fingerprint is a SHA-256 over every area's id, level, parent and name: another
city, another grid count or a renamed area changes it; a corrected boundary with the
same ids does not (history stays meaningful then).

A database from before the binding has no row: it is bound at its first start, unless
its ``areas`` table already holds other areas (that table then tells whose it is).

``wangge geo rebind`` is the explicit way to move a database to the configured city:
``--discard-data`` deletes the previous city's data (every table in
:data:`CITY_TABLES`, and every Redis key under the prefix); ``--keep-data`` (the same
city, new areas) keeps the history. Accounts scoped to the whole previous city move to
the new city; accounts scoped inside it are listed (they see nothing until re-scoped
with ``wangge users set-role``). Both are audited (``city_rebind``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis
from sqlalchemy import Connection, Engine, func, select

from pipelines.city.geography import City
from pipelines.spine import store

SLOT = "city"

# Tables whose rows belong to one city (deleted by ``rebind --discard-data``) and tables
# that do not (accounts, the audit chain). Every table is in exactly one of them (tested).
CITY_TABLES = (
    "areas",
    "incidents",
    "incident_events",
    "video_alerts",
    "track_points",
    "patrols",
    "worker_positions",
    "dead_letters",
    "cameras",
    "workers",
    "warnings",
    "warning_actions",
    "scorecard_snapshots",
    "report_rejects",
    "open311_requests",
    "units",
    "history_marks",
    "history_checkpoints",
    "simulated_history",
)
KEPT_TABLES = (
    "users",
    "login_failures",
    "wall_tokens",
    "audit_log",
    "city_binding",
    "gateway_credentials",
)


@dataclass(frozen=True)
class CityStamp:
    """What identifies a city's data: id, name, area fingerprint and area count."""

    city_id: str
    name: str
    fingerprint: str
    areas: int

    def describe(self) -> str:
        return f"{self.name} ({self.city_id}, {self.areas:,} areas)"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "city_id": self.city_id,
                "name": self.name,
                "fingerprint": self.fingerprint,
                "areas": self.areas,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CityStamp:
        data = orjson.loads(raw)
        return cls(
            str(data["city_id"]), str(data["name"]), str(data["fingerprint"]), int(data["areas"])
        )


def fingerprint(rows: Iterable[Sequence[Any]]) -> str:
    """SHA-256 over ``(area_id, level, parent_id, name)`` rows, in area id order."""
    digest = hashlib.sha256()
    for row in sorted((tuple(r) for r in rows), key=lambda r: str(r[0])):
        digest.update(orjson.dumps([str(row[0]), str(row[1]), row[2], str(row[3])]))
        digest.update(b"\n")
    return digest.hexdigest()


def stamp_of(city: City) -> CityStamp:
    rows = city.areas.select("area_id", "level", "parent_id", "name").rows()
    return CityStamp(city.city_id, city.name, fingerprint(rows), len(rows))


def _areas_stamp(conn: Connection) -> CityStamp | None:
    """The stamp of what a database's ``areas`` table holds (None when it is empty)."""
    t = store.areas
    rows = conn.execute(select(t.c.area_id, t.c.level, t.c.parent_id, t.c.name)).all()
    if not rows:
        return None
    top = [r for r in rows if r[1] == "city"]
    city_id, name = (str(top[0][0]), str(top[0][3])) if top else ("?", "?")
    return CityStamp(city_id, name, fingerprint(rows), len(rows))


def bound_stamp(engine: Engine) -> CityStamp | None:
    """The city a database belongs to: its binding, else what its ``areas`` hold."""
    t = store.city_binding
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.slot == SLOT)).first()
        if row is not None:
            return CityStamp(row.city_id, row.name, row.fingerprint, row.areas)
        return _areas_stamp(conn)


def redis_key(prefix: str) -> str:
    return f"{prefix}:city"


class CityMismatch(RuntimeError):
    """The database (or Redis prefix) belongs to another city than the configured one."""

    def __init__(self, where: str, bound: CityStamp, configured: CityStamp) -> None:
        self.where, self.bound, self.configured = where, bound, configured
        super().__init__(_message(where, bound, configured))


def _message(where: str, bound: CityStamp, configured: CityStamp) -> str:
    new = configured.name
    if where == "database":
        holder = "This database"
        elsewhere = (
            f"point at another database for {new}: DATABASE_URL (or database.url; "
            "on PostgreSQL also WANGGE_DATABASE_SCHEMA), with its own Redis prefix "
            "(WANGGE_REDIS_PREFIX) when REDIS_URL is set"
        )
    else:
        holder = f"Redis ({where})"
        elsewhere = f"use another Redis prefix for {new} (WANGGE_REDIS_PREFIX) or another Redis"
    if bound.city_id != configured.city_id:
        head = (
            f"{holder} belongs to {bound.describe()}, but the configured city (geo.source) is "
            f"{configured.describe()}. Refusing to start: the two cities' data would mix."
        )
        outs = [
            elsewhere,
            f"`wangge geo rebind --discard-data`: delete {bound.name}'s data here (incidents, "
            f"tracks, warnings, roster, live state; accounts and the audit log stay) and bind "
            f"it to {new}",
            f"or configure {bound.name} again (WANGGE_GEO_SOURCE)",
        ]
    else:
        head = (
            f"{holder} belongs to {bound.describe()}, but the configured {configured.describe()} "
            "has other areas (another import, grid count or names). Refusing to start: "
            "history would point at areas that are not there."
        )
        outs = [
            elsewhere,
            "`wangge geo rebind --keep-data`: bind to the new areas and keep the history "
            "(then `wangge rebuild-live`)",
            "`wangge geo rebind --discard-data`: start this city afresh",
        ]
    return head + "\nWays out:\n" + "\n".join(f"  • {o}" for o in outs)


# ------------------------------------------------------------------ checks


def check_database(engine: Engine, city: City, now_ms: int) -> CityStamp:
    """Bind an unbound database to ``city``; raise :class:`CityMismatch` when it is bound
    to (or its ``areas`` hold) another city or other areas."""
    configured = stamp_of(city)
    t = store.city_binding
    with engine.begin() as conn:
        row = conn.execute(select(t).where(t.c.slot == SLOT)).first()
        if row is None:
            held = _areas_stamp(conn)
            if held is not None and held.fingerprint != configured.fingerprint:
                raise CityMismatch("database", held, configured)
            store.insert_ignore(conn, t, [_binding_row(configured, now_ms)])
            row = conn.execute(select(t).where(t.c.slot == SLOT)).one()
    bound = CityStamp(row.city_id, row.name, row.fingerprint, row.areas)
    if bound.fingerprint != configured.fingerprint:
        raise CityMismatch("database", bound, configured)
    return bound


def check_redis(r: redis.Redis, prefix: str, city: City) -> CityStamp:
    """Stamp an unstamped Redis prefix with ``city``; raise :class:`CityMismatch` when it
    holds another city's (or other areas') live state."""
    configured = stamp_of(city)
    key = redis_key(prefix)
    r.set(key, configured.to_json(), nx=True)
    raw = r.get(key)
    bound = CityStamp.from_json(raw) if raw is not None else configured
    if bound.fingerprint != configured.fingerprint:
        raise CityMismatch(f"prefix {prefix!r}", bound, configured)
    return bound


def check(engine: Engine, r: redis.Redis | None, prefix: str, city: City, now_ms: int) -> None:
    """Both checks (Redis only when given)."""
    check_database(engine, city, now_ms)
    if r is not None:
        check_redis(r, prefix, city)


def _binding_row(stamp: CityStamp, now_ms: int) -> dict[str, Any]:
    return {
        "slot": SLOT,
        "city_id": stamp.city_id,
        "name": stamp.name,
        "fingerprint": stamp.fingerprint,
        "areas": stamp.areas,
        "bound_ms": now_ms,
    }


# ------------------------------------------------------------------ rebind


class RebindError(ValueError):
    """A rebind that would not be safe (e.g. keeping another city's data)."""


@dataclass(frozen=True)
class RebindReport:
    previous: CityStamp | None
    configured: CityStamp
    mode: str
    deleted: dict[str, int]  # table → rows deleted
    redis_keys_deleted: int
    moved: list[str]  # usernames whose city-wide scope moved to the new city
    unplaced: list[tuple[str, str, str]]  # (username, role, scope) outside the new city

    def lines(self) -> list[str]:
        was = self.previous.describe() if self.previous else "no city"
        out = [f"bound to {self.configured.describe()} (was {was}; {self.mode})"]
        if self.deleted:
            rows = ", ".join(f"{t} {n:,}" for t, n in self.deleted.items() if n)
            out.append(f"deleted rows: {rows or 'none'}")
            out.append(f"deleted {self.redis_keys_deleted:,} Redis keys under the prefix")
        for user in self.moved:
            out.append(f"account {user}: city-wide scope moved to {self.configured.city_id}")
        for user, role, scope in self.unplaced:
            out.append(
                f"account {user} ({role}) is scoped to {scope}, not an area of "
                f"{self.configured.name}: it sees nothing until `wangge users set-role {user} "
                "--role … --scope …`"
            )
        return out


def _delete_prefix(r: redis.Redis, prefix: str, batch: int = 1000) -> int:
    """UNLINK every key under ``<prefix>:`` (SCAN, bounded batches); returns the count."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*"
    n = 0
    keys: list[Any] = []
    for key in r.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            n += int(r.unlink(*keys))
            keys = []
    if keys:
        n += int(r.unlink(*keys))
    return n


def rebind(
    engine: Engine,
    r: redis.Redis | None,
    prefix: str,
    city: City,
    mode: Literal["discard", "keep"],
    *,
    now_ms: int,
    actor: str,
) -> RebindReport:
    """Bind the database (and Redis prefix) to ``city``; see the module notes."""
    from pipelines.access import accounts, audit

    configured = stamp_of(city)
    previous = bound_stamp(engine)
    if mode == "keep" and previous is not None and previous.city_id != configured.city_id:
        raise RebindError(
            f"--keep-data keeps history only for the same city: this database holds "
            f"{previous.describe()}, the configured city is {configured.describe()}. "
            "Use --discard-data, or another database."
        )
    deleted: dict[str, int] = {}
    store.load_table_modules()  # every city table is known here, whatever was imported
    tables = {t.name: t for t in store.metadata.sorted_tables}
    with engine.begin() as conn:
        if mode == "discard":
            for name in CITY_TABLES:
                t = tables[name]
                deleted[name] = int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                conn.execute(t.delete())
        else:
            conn.execute(store.areas.delete())
        cols = [c.name for c in store.areas.columns]
        store.insert_ignore(conn, store.areas, city.areas.select(cols).to_dicts())
        conn.execute(store.city_binding.delete())
        store.insert_ignore(conn, store.city_binding, [_binding_row(configured, now_ms)])
    keys = 0
    if r is not None:
        if mode == "discard":
            keys = _delete_prefix(r, prefix)
        r.set(redis_key(prefix), configured.to_json())
    moved, unplaced = [], []
    old_city = previous.city_id if previous else None
    for user in accounts.list_users(engine):
        if city.level_of(user.scope_area_id) is not None:
            continue
        if user.scope_area_id == old_city:
            accounts.set_role(
                engine, city, user.username, user.role, city.city_id, now_ms=now_ms, actor=actor
            )
            moved.append(user.username)
        else:
            unplaced.append((user.username, user.role, user.scope_area_id))
    report = RebindReport(previous, configured, mode, deleted, keys, moved, unplaced)
    audit.record(
        engine,
        actor=actor,
        role="cli",
        scope=city.city_id,
        action="city_rebind",
        target=city.city_id,
        detail={
            "mode": mode,
            "from": previous.describe() if previous else None,
            "to": configured.describe(),
            "fingerprint": configured.fingerprint,
            "deleted": deleted,
            "redis_keys_deleted": keys,
            "moved": moved,
            "unplaced": [u for u, _r, _s in unplaced],
        },
        now_ms=now_ms,
    )
    return report


__all__ = [
    "CITY_TABLES",
    "KEPT_TABLES",
    "CityMismatch",
    "CityStamp",
    "RebindError",
    "RebindReport",
    "bound_stamp",
    "check",
    "check_database",
    "check_redis",
    "rebind",
    "stamp_of",
]
