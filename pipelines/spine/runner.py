"""Wires source → pure transforms → sinks, for one feed per worker process.

One batch: read (claimed, own pending, new) → decode + validate → assign grids →
write live state (Lua, idempotent by event id) → dead-letter rejects → persist to SQL
(idempotent) → XACK. A crash anywhere before XACK means redelivery; every effect
above is keyed by event id (or entry id), so redelivery changes nothing. A worker's loop
(``step_ahead``) reads and prepares the next batch on a thread of its own while the
current one is written: both are pending until acknowledged.

The clock job lives in ``clockjob``, rebuild-live in ``rebuild``; both are re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pipelines.city.geography import City, GridIndex
from pipelines.dispatch.flows import Flows, flows_for
from pipelines.ops import metrics
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import health, store
from pipelines.spine.aggregate import EMPTY_STATE
from pipelines.spine.clockjob import Clock, ClockJob, live_state, stream_name
from pipelines.spine.events import SCHEMAS, decode_batch, stream_order
from pipelines.spine.rebuild import rebuild_live
from pipelines.spine.state import LiveState
from pipelines.spine.streams import FIELD, Batch, Consumer, ensure_group

log = logging.getLogger("wangge.runner")

# Failures a worker outlives: nothing of the batch was acknowledged, it is read again.
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, DBAPIError)


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


@dataclass
class BatchResult:
    applied: int = 0
    updated: int = 0  # video: newer revisions of known alerts, applied in place
    superseded: int = 0  # video: older (or replayed) revisions, no-ops
    redelivered: int = 0
    dead: int = 0
    acked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """A batch read and decoded, before any write (``FeedWorker.prepare``)."""

    batch: Batch
    now_ms: int
    payloads: dict[str, bytes]
    good: pl.DataFrame  # valid entries, with grid and local time keys
    dead_parts: list[pl.DataFrame]  # rejects so far
    resync: pl.DataFrame | None  # poison entries that decode: their ids are set again
    rows: Pings | pl.DataFrame  # what the feed writes: pings, or event / alert rows
    seconds: float  # spent preparing


@dataclass(frozen=True)
class Pings:
    """A batch's valid pings as the locations feed writes them (pure functions of it)."""

    latest: list[tuple[str, int, str]]  # per worker its newest ping
    visits: pl.DataFrame  # first visit per (day, grid)
    slots: pl.DataFrame  # the earliest ping per worker and track slot


@dataclass
class WrittenCache:
    """What this worker process already wrote, so certain no-op writes can be skipped.

    Only an optimisation: every write stays idempotent, the cache is empty after a
    restart and is cleared every ``ttl_s`` (so it heals after e.g. a rebuild-live).
    Entries are added only after the Redis and SQL writes succeeded.
    """

    ttl_s: float = 300.0
    visits: set[tuple[str, str]] = field(default_factory=set)  # (day, grid) applied + stored
    slots: dict[str, int] = field(default_factory=dict)  # worker → track slot stored
    born: float = 0.0

    def fresh(self, now: float) -> WrittenCache:
        if now - self.born > self.ttl_s:
            self.visits.clear()
            self.slots.clear()
            self.born = now
        return self

    def new_visits(self, df: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``df`` whose (day, grid_id) is not known to be written."""
        if not self.visits or df.is_empty():
            return df
        pairs = zip(df["day"].to_list(), df["grid_id"].to_list(), strict=True)
        return df.filter(pl.Series([p not in self.visits for p in pairs], dtype=pl.Boolean))

    def new_slots(self, df: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``df`` whose (worker_id, slot) is not the worker's known written slot."""
        if not self.slots or df.is_empty():
            return df
        got = self.slots.get
        pairs = zip(df["worker_id"].to_list(), df["slot"].to_list(), strict=True)
        return df.filter(pl.Series([got(w) != s for w, s in pairs], dtype=pl.Boolean))


@dataclass
class FeedWorker:
    """Processes batches of one feed. State is explicit: nothing module-global."""

    feed: str
    settings: Settings
    city: City
    index: GridIndex
    state: LiveState
    engine: Engine
    consumer: Consumer
    clock: Clock = time.time
    cameras: dict[str, tuple[float, float]] = field(default_factory=dict)
    written: WrittenCache = field(default_factory=WrittenCache)
    _cameras_loaded_at: float = 0.0
    _cameras_of: Any = None  # the registries' write count when they were read
    # One thread for a Redis call that overlaps SQL work of the same batch.
    _background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="wangge-live")
    )
    # One thread that reads and prepares the next batch while this one is written.
    _reader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="wangge-read")
    )
    _ahead: Future[Prepared | None] | None = None

    @property
    def flows(self) -> Flows:
        """The standard flows: every incident's closure deadline (read once per file version)."""
        return flows_for(self.settings)

    # ---------------------------------------------------------------- loop

    def run(self, stop: threading.Event, retry_s: float = 1.0) -> None:
        """A worker's loop until ``stop``. A batch that fails on Redis or SQL is not
        acknowledged: it and the one read ahead are read again from our pending list
        after ``retry_s``. At the stop, the batch read ahead is processed too."""
        while not stop.is_set():
            try:
                self.step_ahead()
            except RETRYABLE as exc:
                log.warning("%s: %s; retrying the batch", self.consumer.name, _line(exc))
                self.drop_ahead()
                self.consumer.retry_pending()
                stop.wait(retry_s)
        try:
            self.finish_ahead()
        except RETRYABLE as exc:
            log.warning(
                "%s: %s; the batch read ahead stays pending", self.consumer.name, _line(exc)
            )

    def step(self) -> BatchResult:
        """Read one batch and process it; nothing is left in flight."""
        batch = self.consumer.read()
        if not len(batch):
            return BatchResult()
        return self._finish_timed(self.prepare(batch))

    def step_ahead(self) -> BatchResult:
        """Process one batch while the next one is read and prepared (decoded, grids
        assigned) on the reader thread: a worker's loop. The batch read ahead is pending
        for this consumer like the one in flight, so a crash loses neither; after a failed
        batch call ``drop_ahead`` before ``consumer.retry_pending``."""
        ahead, self._ahead = self._ahead, None
        p = ahead.result() if ahead is not None else self._read_prepared(frozenset())
        if p is None:
            return BatchResult()
        held = frozenset(e for e, _ in p.batch.entries) | frozenset(e for e, _ in p.batch.poison)
        self._ahead = self._reader.submit(self._read_prepared, held)
        return self._finish_timed(p)

    def drop_ahead(self) -> None:
        """Forget the batch read ahead (after a failure: it is read again from our pending
        list), once its read has ended."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead.result()
            except Exception as exc:  # the failed batch's error is the one reported
                log.debug("read ahead failed too: %s", exc)

    def finish_ahead(self) -> BatchResult:
        """Process the batch read ahead, if any, and read no further (before stopping)."""
        ahead, self._ahead = self._ahead, None
        p = ahead.result() if ahead is not None else None
        return self._finish_timed(p) if p is not None else BatchResult()

    def _read_prepared(self, held: frozenset[str]) -> Prepared | None:
        batch = self.consumer.read(held)
        return self.prepare(batch) if len(batch) else None

    def _finish_timed(self, p: Prepared) -> BatchResult:
        t0 = time.perf_counter()
        res = self.finish(p)
        metrics.observe_batch(
            self.feed, time.perf_counter() - t0 + p.seconds, res.applied + res.updated, res.reasons
        )
        return res

    # ---------------------------------------------------------------- one batch

    def process(self, batch: Batch) -> BatchResult:
        """One batch, whatever it holds (only bad entries, only poison, nothing valid):
        every entry ends applied, redelivered or dead-lettered, then all are XACKed."""
        return self.finish(self.prepare(batch))

    def prepare(self, batch: Batch) -> Prepared:
        """What a batch's entries say, before any write: decoded and validated, cameras
        placed, grids and local time keys assigned; the rejects so far."""
        t0 = time.perf_counter()
        s = self.settings
        now_ms = int(self.clock() * 1000)
        payloads = dict(batch.entries)
        payloads.update(batch.poison)
        good, dead = self._decoded(batch.entries, now_ms)
        dead_parts = [dead]
        if batch.poison:
            dead_parts.append(_dead(batch.poison, "max_deliveries", "delivered too often"))
        if self.feed == "video":
            good, unknown = self._camera_locations(good)
            dead_parts.append(_dead_of(unknown, payloads, "unknown_camera", "camera_id"))
        if not good.is_empty():
            gi = self.index.assign(good["lon"].to_numpy(), good["lat"].to_numpy())
            good, outside = agg.split_outside(agg.with_grid(good, gi, self.city.grids))
            dead_parts.append(_dead_of(outside, payloads, "outside_city", "lon/lat"))
            good = agg.with_time_keys(good, s.live.timezone)
        # Valid entries that became poison may have reached Redis in a failed attempt:
        # their incidents / alert ids are set again to what SQL holds.
        resync = self._decoded(batch.poison, now_ms)[0] if batch.poison else None
        rows = self._rows(good)
        seconds = time.perf_counter() - t0
        return Prepared(batch, now_ms, payloads, good, dead_parts, resync, rows, seconds)

    def _rows(self, good: pl.DataFrame) -> Pings | pl.DataFrame:
        if self.feed == "locations":
            if good.is_empty():  # (no grid columns either)
                return Pings([], pl.DataFrame(), pl.DataFrame())
            every = self.settings.pipelines.persist_tracks_every_s
            return Pings(
                agg.latest_positions(good), agg.first_visits(good), agg.track_slots(good, every)
            )
        if self.feed == "reports":
            if good.is_empty():
                return pl.DataFrame(schema=store.frame_schema(store.incident_events))
            return agg.report_history(good).select(store.EVENT_COLUMNS)
        if good.is_empty():
            return pl.DataFrame(schema=store.frame_schema(store.video_alerts))
        return agg.video_history(good).select(store.VIDEO_COLUMNS)

    def finish(self, p: Prepared) -> BatchResult:
        """Write a prepared batch (live state, SQL, dead letters), then XACK it."""
        batch, now_ms, good = p.batch, p.now_ms, p.good
        dead_parts = list(p.dead_parts)
        result = BatchResult()
        if self.feed == "locations":
            assert isinstance(p.rows, Pings)
            self._apply_locations(p.rows, good.height, result)
            dead_all = _in_stream_order(dead_parts)
            self._dead_letter(dead_all, now_ms)
        else:
            decide = self._decide_reports if self.feed == "reports" else self._decide_video
            assert isinstance(p.rows, pl.DataFrame)
            dead_all = decide(
                p.rows, p.payloads, dead_parts, result, now_ms, p.resync, batch.retried
            )
        # Live state written: freshness, and how far this consumer got (before XACK).
        marks: dict[str, Any] = {f"last_{self.feed}_ms": now_ms}
        if batch.entries:
            marks[f"applied:{self.consumer.name}"] = batch.entries[-1][0]
        self.state.set_meta(**marks)
        newest = int(good["ts"].cast(pl.Int64).max() or 0) if not good.is_empty() else 0  # type: ignore[arg-type]
        health.mark_applied(self.state.r, self.state.prefix, self.feed, newest, now_ms)
        ids = [e for e, _ in batch.entries] + [e for e, _ in batch.poison]
        self.consumer.ack(ids)
        result.dead = dead_all.height
        result.acked = len(ids)
        for r in dead_all["reason"].to_list():
            result.reasons[r] = result.reasons.get(r, 0) + 1
        return result

    def _decoded(
        self, entries: list[tuple[str, bytes]], now_ms: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        st = self.settings.streams
        return decode_batch(
            self.feed,
            entries,
            now_ms=now_ms,
            future_skew_ms=st.future_skew_s * 1000,
            max_age_ms=st.max_age_days * 86_400_000,
            max_payload_bytes=st.max_payload_bytes,
        )

    def _decide_reports(
        self,
        events: pl.DataFrame,
        payloads: dict[str, bytes],
        dead_parts: list[pl.DataFrame],
        result: BatchResult,
        now_ms: int,
        resync: pl.DataFrame | None,
        retried: bool = False,
    ) -> pl.DataFrame:
        """SQL decides (under locks) which events are accepted; inside the same
        transaction Redis is set to the touched incidents' new states and the rejects
        are dead-lettered, then it commits. The Redis script runs on the background
        thread while this thread writes the decision to SQL; the commit waits for it (a
        failed script rolls SQL back). A crash before the commit leaves SQL as it was
        and Redis is corrected by the redelivery (states, not increments). When SQL
        fails after the script ran (a write or the commit), the script's incidents are
        set back to SQL's states at once (``_undo_pushes``)."""
        pushed: list[list[Any]] = []  # rows the script applied
        try:
            with self.engine.begin() as conn:
                d = store.decide_reports(
                    conn, events, self.flows, write=False, tz=self.settings.live.timezone
                )
                verdicts = pl.DataFrame(
                    {"entry_id": list(d.verdicts), "reason": list(d.verdicts.values())},
                    schema={"entry_id": pl.String, "reason": pl.String},
                )
                for reason in ("duplicate", "bad_transition"):
                    lost = verdicts.filter(pl.col("reason") == reason)
                    dead_parts.append(_dead_of(lost, payloads, reason, _DETAIL[reason]))
                dead_parts.append(self._turned_down(d.turned_down, payloads))
                new_acc = [e for e, v in d.verdicts.items() if v == "accepted" and e not in d.known]
                result.applied = len(new_acc)
                result.redelivered = sum(1 for v in d.known.values() if v == "A")
                # Pushed: incidents SQL changed; on a retry also the batch's others, whose Redis
                # state a failed attempt may have changed although SQL did not commit.
                push = d.changed | (set(events["incident_id"]) if retried else set())
                rows = self._incident_pushes(d, push)
                if resync is not None and resync.height:
                    rows += self._incident_resync(conn, resync, push)
                dead_all = _in_stream_order(dead_parts)
                live = self._background.submit(self._push_reports, rows, dead_all)
                try:
                    store.write_decision(conn, d, self.flows)
                    self._dead_letter_sql(conn, dead_all, now_ms)
                finally:
                    live.result()  # before the commit; raises (rolls back) when the script failed
                    pushed.extend(rows)
        except BaseException:
            self._undo_pushes(pushed)
            raise
        return dead_all

    def _push_reports(self, rows: list[list[Any]], dead_all: pl.DataFrame) -> None:
        self.state.push_incidents(rows)
        self._dead_letter_redis(dead_all)

    def _undo_pushes(self, rows: list[list[Any]]) -> None:
        """SQL rolled back after the script set these incidents: set each it changed back
        to its state in SQL (the row's state before), counting from the state the script
        left (held, or none when it dropped the incident). Else a retry could count from
        SQL's state an incident whose counts the script had already taken back. If this
        fails too, the batch's retry corrects the states Redis still holds."""
        undo = [[inc, "1", old, new, ""] for inc, mode, new, old, _ in rows if mode == "1"]
        if not undo:
            return
        try:
            self.state.push_incidents(undo)
        except RETRYABLE as exc:
            log.warning("%s: could not set back %d incidents: %s", self.feed, len(undo), exc)

    def _incident_pushes(self, d: store.ReportDecision, push: set[str]) -> list[list[Any]]:
        s = self.settings
        tz, cid = s.live.timezone, self.city.city_id
        ids, changed = list(push), list(d.changed)
        # after: from the rows written (they keep the live state's facts); before: from
        # the history read, or the row read for an incident decided from its row
        assert d.rows is not None and d.prior is not None
        after = agg.row_states(d.rows.filter(pl.col("incident_id").is_in(ids)), cid, self.flows)
        before = agg.incident_states(
            d.before.filter(pl.col("incident_id").is_in(changed)), cid, tz, self.flows
        ) | agg.row_states(d.prior.filter(pl.col("incident_id").is_in(changed)), cid, self.flows)
        fresh = d.new_accepted if d.new_accepted is not None else d.after.clear()
        ticks = agg.report_tickers(fresh)
        lines: dict[str, list[str]] = {}
        for e, inc in fresh.select("entry_id", "incident_id").iter_rows():
            lines.setdefault(inc, []).append(f"{e}\t{ticks[e].decode()}")
        rows: list[list[Any]] = []
        for inc in sorted(push):
            mode = "1" if inc in d.changed else "0"
            old = before.get(inc, EMPTY_STATE) if mode == "1" else EMPTY_STATE
            tk = "\n".join(lines.get(inc, []))
            rows.append([inc, mode, after.get(inc, EMPTY_STATE), old, tk])
        return rows

    def _incident_resync(self, conn: Any, resync: pl.DataFrame, done: set[str]) -> list[list[Any]]:
        """Incidents named by poison entries: Redis is set to SQL's state of them."""
        ids = sorted(set(resync["incident_id"].to_list()) - done)
        if not ids:
            return []
        store.lock_incidents(conn, ids)
        s = self.settings
        states = agg.incident_states(
            store._events_of(conn, ids), self.city.city_id, s.live.timezone, self.flows
        )
        return [[i, "0", states.get(i, EMPTY_STATE), EMPTY_STATE, ""] for i in ids]

    def _turned_down(self, rows: pl.DataFrame, payloads: dict[str, bytes]) -> pl.DataFrame:
        """Dead letters for entries of earlier batches that this batch turned down, with
        their original payload (still in the stream: it is only trimmed below the oldest
        pending entry, and this batch's entries are earlier and pending)."""
        if rows.is_empty():
            return _dead([], "duplicate", "")
        ids = rows["entry_id"].to_list()
        found = self._stream_payloads([e for e in ids if e not in payloads])
        out = []
        for r in rows.iter_rows(named=True):
            e = r["entry_id"]
            payload = payloads.get(e) or found.get(e) or _wire_payload(r, "reports")
            out.append(_dead([(e, payload)], r["verdict"], _DETAIL[r["verdict"]]))
        return pl.concat(out)

    def _stream_payloads(self, entry_ids: list[str]) -> dict[str, bytes]:
        c = self.consumer
        entry_ids = [e for e in entry_ids if c.owns(e)]  # (ids of this partition only)
        if not entry_ids:
            return {}
        pipe = self.state.r.pipeline(transaction=False)
        for e in entry_ids:
            pipe.xrange(c.stream, min=c.real(e), max=c.real(e))
        out: dict[str, bytes] = {}
        for e, got in zip(entry_ids, pipe.execute(), strict=True):
            if got and FIELD in got[0][1]:
                out[e] = got[0][1][FIELD]
        return out

    def _decide_video(
        self,
        alerts: pl.DataFrame,
        payloads: dict[str, bytes],
        dead_parts: list[pl.DataFrame],
        result: BatchResult,
        now_ms: int,
        resync: pl.DataFrame | None,
        retried: bool = False,
    ) -> pl.DataFrame:
        """As for reports: SQL decides (one alert per alert id, created by the first entry
        in stream order, updated in place by newer revisions), Redis is set to the
        decided alerts inside the same transaction (a state, not an increment), on the
        background thread while this one writes SQL; the commit waits for it."""
        tz, cid = self.settings.live.timezone, self.city.city_id
        with self.engine.begin() as conn:
            d = store.decide_alerts(conn, alerts, write=False)
            for code, reason in (("D", "duplicate"), ("M", "moved_alert")):
                lost = [e for e, st in d.statuses.items() if st == code]
                dead_parts.append(_dead([(e, payloads[e]) for e in lost], reason, _DETAIL[reason]))
            # a creating entry that lost its place: a duplicate when it had no revision
            lost_place = d.displaced.filter(pl.col("revision").is_null())
            found = self._stream_payloads(lost_place["entry_id"].to_list())
            for r in lost_place.iter_rows(named=True):
                p = found.get(r["entry_id"]) or _wire_payload(r, "video")
                dead_parts.append(_dead([(r["entry_id"], p)], "duplicate", _DETAIL["duplicate"]))
            n = {k: sum(1 for v in d.statuses.values() if v == k) for k in "AURS"}
            result.applied, result.updated = n["A"], n["U"]
            result.redelivered, result.superseded = n["R"], n["S"]
            fields = agg.alert_rows(d.current, cid, tz)
            # Every entry that does not create its alert now is a loser: a displaced creator,
            # and any entry of this batch (a duplicate, an older revision, a moved alert) that
            # an earlier, failed attempt may have counted in Redis as a creator on its own day
            # (Redis is written before the SQL commit). Redis takes back only what such an
            # entry still holds, so naming one that holds nothing changes nothing.
            creators = dict(zip(d.current["alert_id"], d.current["entry_id"], strict=True))
            losers: dict[str, list[tuple[str, str]]] = {}
            others = alerts.filter(
                pl.col("entry_id")
                != pl.col("alert_id").replace_strict(creators, default=None, return_dtype=pl.String)
            )
            losing = pl.concat([d.displaced.select(others.columns), others]).select(
                "alert_id", "entry_id", ts="ts_ms"
            )
            for a, e, day in (
                agg.with_time_keys(losing, tz).select("alert_id", "entry_id", "day").iter_rows()
            ):  # the local day of every row at once (not one frame per row)
                pair = (e, day)
                if pair not in losers.setdefault(a, []):
                    losers[a].append(pair)
            rows = [(a, f[0], f[1:], losers.get(a, [])) for a, f in fields.items()]
            if resync is not None and resync.height:
                rows += self._alert_resync(conn, resync, set(fields))
            dead_all = _in_stream_order(dead_parts)
            live = self._background.submit(self._push_alerts, rows, dead_all)
            try:
                store.write_alerts(conn, d)
                self._dead_letter_sql(conn, dead_all, now_ms)
            finally:
                live.result()  # before the commit; raises (rolls back) when the script failed
        return dead_all

    def _push_alerts(self, rows: list[Any], dead_all: pl.DataFrame) -> None:
        self.state.set_alerts(rows)
        self._dead_letter_redis(dead_all)

    def _alert_resync(
        self, conn: Any, resync: pl.DataFrame, done: set[str]
    ) -> list[tuple[str, str, Any, list[tuple[str, str]]]]:
        """Alert ids of poison entries: Redis drops those entries, keeps SQL's alert."""
        tz, cid = self.settings.live.timezone, self.city.city_id
        todo = resync.filter(~pl.col("alert_id").is_in(list(done)))
        if todo.is_empty():
            return []
        store.lock_keys(conn, [f"alert:{a}" for a in todo["alert_id"]])
        current = store._rows_in(
            conn, store.video_alerts, "alert_id", todo["alert_id"], store.VIDEO_COLUMNS
        )
        fields = agg.alert_rows(current, cid, tz)
        poison = agg.with_time_keys(todo.select("alert_id", "entry_id", "ts"), tz)
        out = []
        for a, e, day in poison.select("alert_id", "entry_id", "day").iter_rows():
            if a in fields:
                if fields[a][0].split("/")[0] != e:
                    out.append((a, fields[a][0], fields[a][1:], [(e, day)]))
            else:  # no alert: only take the entry back
                out.append((a, "", ("",) * 8 + (b"",), [(e, day)]))
        return out

    def _apply_locations(self, pings: Pings, n: int, result: BatchResult) -> None:
        result.applied = n
        if not n:
            return
        cache = self.written.fresh(self.clock())
        latest = pings.latest
        visits = cache.new_visits(pings.visits)
        patrolled = agg.patrolled_grids(visits)
        # Redis runs the live-state script while this thread writes SQL (GIL released in
        # socket and SQLite calls); both are done before the batch is acknowledged.
        live = self._background.submit(self.state.apply_locations, latest, patrolled)
        try:
            every = self.settings.pipelines.persist_tracks_every_s
            points = cache.new_slots(pings.slots)
            with self.engine.begin() as conn:  # one transaction, one commit
                store.persist_patrols(conn, visits)
                store.persist_tracks(conn, points, slot_ms=every * 1000)
                # the latest positions too: after XACK, a crash must not lose them
                store.persist_positions(conn, latest)
        finally:
            live.result()
        cache.visits.update((p[0], p[1]) for p in patrolled)
        cache.slots.update(
            zip(points["worker_id"].to_list(), points["slot"].to_list(), strict=True)
        )

    # ---------------------------------------------------------------- sinks

    def _dead_letter(self, dead: pl.DataFrame, now_ms: int) -> None:
        if dead.is_empty():
            return
        self._dead_letter_redis(dead)
        with self.engine.begin() as conn:
            self._dead_letter_sql(conn, dead, now_ms)

    def _dead_letter_redis(self, dead: pl.DataFrame) -> None:
        if dead.is_empty():
            return
        stream = self.feed
        rows = [
            (stream, e, reason, detail or "", payload, str(int(e.split("-")[0]) // 86_400_000))
            for e, payload, reason, detail in dead.iter_rows()
        ]
        self.state.dead_letter(rows)

    def _dead_letter_sql(self, conn: Any, dead: pl.DataFrame, now_ms: int) -> None:
        rows = [
            {
                "stream": self.feed,
                "entry_id": e,
                "reason": reason,
                "detail": detail,
                "payload": payload,
                "received_ms": now_ms,
            }
            for e, payload, reason, detail in dead.iter_rows()
        ]
        store.insert_ignore(conn, store.dead_letters, rows)

    # ---------------------------------------------------------------- cameras

    def _camera_locations(self, good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split off alerts of cameras not in the registry (``unknown_camera``, whatever
        they carry); fill the others' missing lon/lat from the registry."""
        if good.is_empty():
            return good, good
        ids = good["camera_id"].unique().to_list()
        if any(c not in self.cameras for c in ids) and (
            self.clock() - self._cameras_loaded_at > 5 or self._registries() != self._cameras_of
        ):
            self.reload_cameras()
        reg = pl.DataFrame(
            {
                "camera_id": list(self.cameras),
                "_lon": [v[0] for v in self.cameras.values()],
                "_lat": [v[1] for v in self.cameras.values()],
            },
            schema={"camera_id": pl.String, "_lon": pl.Float64, "_lat": pl.Float64},
        )
        good = good.join(reg, on="camera_id", how="left", maintain_order="left")
        known = pl.col("_lon").is_not_null()
        good = good.with_columns(lon=pl.coalesce("lon", "_lon"), lat=pl.coalesce("lat", "_lat"))
        return good.filter(known).drop("_lon", "_lat"), good.filter(~known).drop("_lon", "_lat")

    def _registries(self) -> Any:
        """The registries' write count (``Keys.registries``)."""
        return self.state.r.get(self.state.keys.registries())

    def reload_cameras(self) -> None:
        self._cameras_of = self._registries()  # (before the read: a later write is seen next)
        cams = store.cameras_frame(self.engine)
        self.cameras = {
            c: (lon, lat) for c, lon, lat in cams.select("camera_id", "lon", "lat").iter_rows()
        }
        self._cameras_loaded_at = self.clock()


_DETAIL = {
    "duplicate": "an earlier stream entry has this id",
    "bad_transition": "no lifecycle step leads here",
    "moved_alert": "a later revision of this alert names another camera",
}


def _wire_payload(row: dict[str, Any], feed: str) -> bytes:
    """An event as its stored row says it was (when its stream entry is gone)."""
    names = [f.name for f in SCHEMAS[feed]]
    stored = {"ts": "ts_ms", "end_ts": "end_ms"}
    ev = {n: row.get(stored.get(n, n)) for n in names}
    return orjson.dumps({k: v for k, v in ev.items() if v is not None})


def _dead(entries: list[tuple[str, bytes]], reason: str, detail: str) -> pl.DataFrame:
    from pipelines.spine.events import DEADLETTER_SCHEMA

    return pl.DataFrame(
        {
            "entry_id": [e for e, _ in entries],
            "payload": [p for _, p in entries],
            "reason": [reason] * len(entries),
            "detail": [detail] * len(entries),
        },
        schema=DEADLETTER_SCHEMA,
    )


def _in_stream_order(parts: list[pl.DataFrame]) -> pl.DataFrame:
    full = [p for p in parts if p.height]
    if not full:  # the common case: nothing to sort
        return _dead([], "", "")
    df = pl.concat(full)
    return df.sort(stream_order()).unique("entry_id", keep="first", maintain_order=True)


def _dead_of(
    rows: pl.DataFrame, payloads: dict[str, bytes], reason: str, detail: str
) -> pl.DataFrame:
    ids = rows["entry_id"].to_list() if not rows.is_empty() else []
    return _dead([(e, payloads[e]) for e in ids], reason, detail)


def make_worker(
    feed: str,
    settings: Settings,
    city: City,
    index: GridIndex,
    r: redis.Redis,
    engine: Engine,
    name: str,
    clock: Clock = time.time,
    *,
    partition: int = 0,
) -> FeedWorker:
    """A worker of one feed partition: its own stream and consumer group."""
    state = live_state(r, settings)
    if not 0 <= partition < state.partitions:
        raise ValueError(f"partition {partition} of {state.partitions}")
    key = state.keys.stream(stream_name(settings, feed), partition)
    ensure_group(r, key, settings.streams.group)
    consumer = Consumer(
        r,
        key,
        settings.streams.group,
        name,
        count=settings.streams.batch_size,
        block_ms=settings.streams.block_ms,
        claim_idle_ms=settings.streams.claim_idle_ms,
        max_deliveries=settings.streams.max_deliveries,
        partitions=state.partitions,
        partition=partition,
    )
    w = FeedWorker(feed, settings, city, index, state, engine, consumer, clock=clock)
    if feed == "video":
        w.reload_cameras()
    return w


__all__ = [
    "BatchResult",
    "Clock",
    "ClockJob",
    "FeedWorker",
    "WrittenCache",
    "live_state",
    "make_worker",
    "rebuild_live",
    "stream_name",
]
