"""The backfill from the command line: when `wangge run` does it (an empty database of the
demo city), `wangge simulate --backfill SPAN` on demand, the console's progress bar, and
the wiring of ``simulator.backfill`` to the real streams and worker processes."""

from __future__ import annotations

import bisect
import hashlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import redis
from sqlalchemy import Engine, select

from pipelines.city import geography as geo
from pipelines.city.simulator.backfill import (
    GROUP_MS,
    BackfillProgress,
    BackfillResult,
    backfill_config,
    backfill_simulator,
    describe_span,
    run_backfill,
)
from pipelines.city.simulator.core import Simulator
from pipelines.city.simulator.mixes import DAY_MS, HOUR_MS
from pipelines.cli.runtime import FEEDS
from pipelines.dispatch.flows import flows_for
from pipelines.history import spans
from pipelines.settings import Settings, env_name
from pipelines.spine import health, store
from pipelines.spine.partitions import keys_of, split
from pipelines.spine.streams import ensure_group, group_info, id_key, trim_acknowledged, xadd_many
from pipelines.warnings.replay import PastEngine, ReplayResult, replay
from pipelines.warnings.store import republish

log = logging.getLogger("wangge.backfill")
HISTORY = ("incident_events", "video_alerts", "track_points")
# A replay of the past evaluates the slow rules (recurrence over 7 days) at most hourly.
PAST_SLOW_EVERY_S = 3600.0


def history_tables(engine: Engine) -> list[str]:
    """The history tables that already hold rows (one indexed probe each)."""
    tables = {
        "incident_events": store.incident_events,
        "video_alerts": store.video_alerts,
        "track_points": store.track_points,
    }
    held = []
    with engine.connect() as conn:
        for name in HISTORY:
            if conn.execute(select(1).select_from(tables[name]).limit(1)).first() is not None:
                held.append(name)
    return held


def refusal(
    settings: Settings, engine: Engine, days: float, *, explicit: bool, force: bool = False
) -> str | None:
    """Why a backfill of ``days`` must not run here, or None.

    Never into a database that holds events (unless ``force``: the simulated past is then
    added to the history already there; its ids never collide with earlier ones); an
    imported city only on demand (``explicit``), never by `wangge run`; never further back
    than the pipelines accept (``streams.max_age_days``: older events are dead-lettered)."""
    if days <= 0:
        return "backfill_days is 0 (off)"
    limit = settings.streams.max_age_days
    if days >= limit:
        return (
            f"a backfill of {days:g} days reaches past streams.max_age_days ({limit}): "
            "the pipelines would dead-letter the oldest events as out_of_range"
        )
    if settings.geo.source != "demo" and not explicit:
        return (
            "the city is an imported one: backfill it on demand with "
            "`wangge simulate --backfill 7d` (a simulated past of a real city is for demos)"
        )
    held = history_tables(engine)
    if held and not force:
        return (
            f"the database already holds events ({', '.join(held)}): a backfill would "
            "mix a simulated past into it (`wangge simulate --backfill SPAN --force` adds it "
            "anyway)"
        )
    return None


def resume_refusal(settings: Settings, city: geo.City, span: spans.Span, now_ms: int) -> str | None:
    """Why the backfill cut short (``span``) must not be resumed, or None: it would not
    regenerate the same events (the simulator's settings, the city or the flows changed),
    or the pipelines would now refuse its oldest ones (``streams.max_age_days``)."""
    if span.fingerprint != fingerprint(settings, city):
        return "the simulator's settings, the city or the flows changed since"
    if now_ms - span.start_ms >= settings.streams.max_age_days * DAY_MS:
        return f"it began more than streams.max_age_days ({settings.streams.max_age_days}) ago"
    return None


def wait_drained(
    r: redis.Redis, settings: Settings, stop: Callable[[], bool], wait: Callable[[], object]
) -> None:
    """Until the consumer group has acknowledged every entry of every feed stream (what a
    run cut short left in a Redis that kept it is applied before a resume looks at SQL)."""
    group = settings.streams.group
    keys = list(stream_keys(settings).values())
    while not stop():
        left = 0
        for key in keys:
            if not r.exists(key):
                continue
            ensure_group(r, key, group)
            info = _group(r, key, group)
            last = r.xinfo_stream(key)["last-generated-id"]
            behind = id_key(info["last-delivered-id"]) < id_key(last)
            left += int(info["pending"]) + int(behind)
        if not left:
            return
        wait()


def stream_keys(settings: Settings) -> dict[tuple[str, int], str]:
    """Every feed partition's stream key, by (feed, partition)."""
    keys = keys_of(settings)
    return {
        (f, p): keys.stream(getattr(settings.streams, f), p)
        for f in FEEDS
        for p in range(keys.partitions)
    }


def _group(r: redis.Redis, key: str, group: str) -> dict[str, Any]:
    """The consumer group's record (``ensure_group`` made it before anything was read)."""
    info = group_info(r, key, group)
    if info is None:
        raise RuntimeError(f"stream {key} has no consumer group {group}")
    return info


@dataclass
class StreamFeed:
    """Publishes to the feed streams and tells how many published entries the consumer
    group has not acknowledged yet: pending + entries after the group's last delivered
    one. Redis ≥ 7 reports that lag; for Redis 6.2 (the embedded one) the entries after
    it are counted from the ids XADD returned (per chunk of ``chunk``: an over-estimate of
    less than a chunk while a chunk is being read, exact when all is delivered)."""

    r: redis.Redis
    settings: Settings
    chunk: int = 2000
    # the simulated moment up to which a feed's events are all published when it publishes
    # (``run_backfill`` publishes each feed's events up to the simulated clock at once)
    through: Callable[[], int] = lambda: 0
    # per (feed, partition): (last id of a chunk, entries published up to and including it)
    marks: dict[tuple[str, int], list[tuple[tuple[int, int], int]]] = field(default_factory=dict)
    # per feed, each publish call: its moment (``through``) and the last id per partition
    calls: dict[str, list[tuple[int, dict[int, tuple[int, int]]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.floor = self.through()  # where the simulation starts: nothing published before
        self.keys = stream_keys(self.settings)
        for key in self.keys.values():
            ensure_group(self.r, key, self.settings.streams.group)

    def publish(self, feed: str, payloads: list[bytes]) -> None:
        partitions = keys_of(self.settings).partitions
        at, lasts = self.through(), {}
        for p, part in split(feed, payloads, partitions).items():
            last = self._publish((feed, p), part)
            if last is not None:
                lasts[p] = last
        self.calls.setdefault(feed, []).append((at, lasts))

    def _publish(self, stream: tuple[str, int], payloads: list[bytes]) -> tuple[int, int] | None:
        key, marks = self.keys[stream], self.marks.setdefault(stream, [])
        # what the pipelines have acknowledged goes first: a week is millions of entries, and
        # the clock job that trims the streams only starts once the backfill is done
        trim_acknowledged(self.r, key)
        for i in range(0, len(payloads), self.chunk):
            part = payloads[i : i + self.chunk]
            last = xadd_many(self.r, key, part)
            assert last is not None
            marks.append((id_key(last), (marks[-1][1] if marks else 0) + len(part)))
        return marks[-1][0] if payloads else None

    def backlog(self) -> int:
        total = 0
        group = self.settings.streams.group
        for stream, marks in self.marks.items():
            if not marks:
                continue
            info = _group(self.r, self.keys[stream], group)
            pending = int(info["pending"])
            if info.get("lag") is not None:
                total += int(info["lag"]) + pending
                continue
            delivered = id_key(info["last-delivered-id"])
            done = bisect.bisect_right(marks, (delivered, 1 << 62))
            read = marks[done - 1][1] if done else 0
            total += marks[-1][1] - read + pending
        return total

    def filled_ms(self) -> int:
        """The moment up to which every event is acknowledged (so in SQL): the earliest over
        the feeds of the moment of their last publish call wholly acknowledged (``floor``
        for a feed with none: reports are held a while before they are published). A
        lower bound: events after it may be in too."""
        group = self.settings.streams.group
        acked: dict[str, tuple[int, int]] = {}  # per stream: every id below is acknowledged

        def below(key: str) -> tuple[int, int]:
            if key not in acked:
                acked[key] = _acked_below(self.r, key, group)
            return acked[key]

        def filled(feed: str) -> int:
            got = self.floor
            for at, lasts in self.calls.get(feed, []):
                if not all(last < below(self.keys[(feed, p)]) for p, last in lasts.items()):
                    break
                got = at
            return got

        return min(filled(f) for f in FEEDS)


def _acked_below(r: redis.Redis, key: str, group: str) -> tuple[int, int]:
    """Every entry of ``key`` below this id is acknowledged by ``group``: the first pending
    one, or just after the last delivered (entries are delivered in order). Read in that
    order, the last delivered first: the workers acknowledge and read meanwhile, and an
    entry pending in the first read may be acknowledged by the second (it was: the
    pending count said one, the first pending id was none)."""
    delivered = _group(r, key, group)["last-delivered-id"]
    first = r.xpending(key, group)["min"]
    if first is not None:
        return id_key(first)
    ms, seq = id_key(delivered)  # none pending then: none of these either
    return ms, seq + 1


def time_left(fraction: float, elapsed_s: float) -> str:
    """The wall-clock time a backfill still needs, from its pace so far (for the console;
    the simulated span left would read as days to wait)."""
    if fraction >= 1.0:
        return "finishing"
    if fraction < 0.01 or elapsed_s < 2.0:
        return "estimating…"
    left_s = elapsed_s * (1.0 - fraction) / fraction
    if left_s < 90:
        return f"~{max(1, round(left_s))} s left"
    return f"~{round(left_s / 60)} min left"


@dataclass
class ProgressBar:
    """One line redrawn in place on a terminal (a line per 10 % otherwise)."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    width: int = 30
    _last_decile: int = -1
    _drawn: bool = False
    _fraction: float = 0.0

    def __call__(self, p: BackfillProgress) -> None:
        frac = self._fraction = p.fraction
        rate = p.published / p.elapsed_s if p.elapsed_s > 0 else 0.0
        done = int(frac * self.width)
        bar = "█" * done + "░" * (self.width - done)
        text = (
            f"  backfill  {bar} {frac * 100:5.1f}%  {time_left(frac, p.elapsed_s):>14s} · "
            f"{p.published:,} events · {rate:,.0f}/s · {p.backlog:,} in the pipelines"
        )
        if self.out.isatty():
            self.out.write("\r" + text + "\x1b[K")
            self.out.flush()
            self._drawn = True
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            print(text, file=self.out, flush=True)

    def stopped(self) -> None:
        """A stop cut the backfill short: how far it got, and that it is not lost."""
        self._end_line()
        print(
            f"  backfill  stopped at {self._fraction * 100:.0f}%; the next start resumes it",
            file=self.out,
            flush=True,
        )

    def _end_line(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self._drawn = False

    def done(self, res: BackfillResult) -> None:
        self._end_line()
        span = describe_span(res.end_ms - res.start_ms)
        print(
            f"  backfill  {span} of history: {res.total:,} events "
            f"({', '.join(f'{f} {n:,}' for f, n in res.events.items())}) "
            f"in {res.elapsed_s:.1f} s = {res.rate:,.0f} events/s",
            file=self.out,
            flush=True,
        )


def store_registries(engine: Engine, r: redis.Redis, settings: Settings, sim: Simulator) -> None:
    """The simulated cameras and roster in SQL (the video pipeline looks cameras up), then
    the registries' count bumped: the video workers reload theirs at their next alert of a
    camera they do not know (else they would dead-letter it as ``unknown_camera``)."""
    cams = sim.cameras.select("camera_id", "lon", "lat", "grid_id")
    store.replace_table(engine, store.cameras, cams.to_dicts())
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    r.incr(keys_of(settings).registries())


def backfill_streams(
    settings: Settings,
    city: geo.City,
    r: redis.Redis,
    engine: Engine,
    days: float,
    *,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[BackfillProgress], None] | None = None,
    clock: Callable[[], float] = time.time,
    wait: Callable[[], None] = lambda: time.sleep(0.05),
    ready: Callable[[], None] = lambda: None,
    resume: spans.Span | None = None,
) -> tuple[Simulator, BackfillResult]:
    """Simulate the last ``days`` into the feed streams while the workers of the consumer
    group (processes, already running) apply them; returns the simulator (to carry on
    live) and what was sent. ``wait()`` is called while the pipelines catch up (tests step
    in-process workers there); ``ready()`` once the registries are stored.

    The span is recorded as it begins and how far it got as it goes (``spans``); with
    ``resume`` (one cut short: ``spans.unfinished``, its fingerprint equal) the same
    simulation goes on from where every event is in SQL (``Unsent``). ``finish_span``
    records it done."""
    s = settings
    flows = flows_for(s)
    if resume is None:
        sim = backfill_simulator(city, s.simulate, flows, int(clock() * 1000), days)
        span = spans.begin(
            engine, sim.start_ms, s.simulate.backfill_track_every_s, fingerprint(s, city)
        )
    else:
        span = resume
        sim = Simulator(city, backfill_config(s.simulate), flows, span.start_ms)
        assert span.resume_ms is not None and span.reached_ms is not None
        while sim.clock_ms < span.resume_ms:  # in SQL already (an hour at a time: memory)
            sim.advance(min(sim.clock_ms + HOUR_MS, span.resume_ms))
    store_registries(engine, r, s, sim)
    ready()
    feed = StreamFeed(r, s, through=lambda: sim.clock_ms)
    publish = feed.publish if resume is None else Unsent(engine, feed.publish, span, sim)
    reached = span.reached_ms or span.start_ms

    def save() -> None:  # how far it got, for a resume if it is cut short
        spans.advanced(engine, span.start_ms, feed.filled_ms(), max(reached, sim.clock_ms))

    shown = BackfillMark(r, s.redis.prefix, progress, save=save)
    shown.mark(0.0)
    try:
        res = run_backfill(
            sim,
            publish,
            feed.backlog,
            wait,
            lambda: int(clock() * 1000),
            progress=shown,
            stop=stop,
        )
        save()  # (cut short: from exactly here)
    finally:
        shown.clear()
    return sim, res


def fingerprint(settings: Settings, city: geo.City) -> str:
    """What a backfill's events follow from (the simulator's settings for the past, the
    city's areas, the flows): a resume regenerates the same events only when it is equal."""
    text = repr((backfill_config(settings.simulate), flows_for(settings).flows))
    return hashlib.sha256((text + city.geometry_hash()).encode()).hexdigest()


_ID_KEYS = {"reports": "event_id", "video": "alert_id"}  # what a second copy would repeat


@dataclass
class Unsent:
    """The publisher of a resumed backfill: while the simulated clock is within reach of
    where the run cut short published (reports are held up to ``GROUP_MS``), a report
    whose event id or an alert whose id SQL holds is left out (it would be a duplicate);
    pings go again (rewriting them changes nothing)."""

    engine: Engine
    publish: Callable[[str, list[bytes]], None]
    span: spans.Span
    sim: Simulator

    def __call__(self, feed: str, payloads: list[bytes]) -> None:
        reached = self.span.reached_ms or self.span.start_ms
        key = _ID_KEYS.get(feed)
        if key is not None and self.sim.clock_ms <= reached + GROUP_MS:
            ids = [orjson.loads(p)[key] for p in payloads]
            held = self._held(feed, ids)
            payloads = [p for p, i in zip(payloads, ids, strict=True) if i not in held]
        if payloads:
            self.publish(feed, payloads)

    def _held(self, feed: str, ids: list[str]) -> set[str]:
        tables = (
            (store.incident_events, store.report_rejects)
            if feed == "reports"
            else (store.video_alerts,)
        )
        key = _ID_KEYS[feed]
        with self.engine.connect() as conn:
            return {i for t in tables for i in store._rows_in(conn, t, key, ids, [key])[key]}


@dataclass
class BackfillMark:
    """A backfill's progress callback that also tells the screens a backfill runs (and how
    far: ``health.BACKFILL.mark``, at most every ``every_s``), then calls ``then``."""

    r: redis.Redis
    prefix: str
    then: Callable[[BackfillProgress], None] | None = None
    every_s: float = 1.0
    save: Callable[[], None] = lambda: None  # (also at most every ``every_s``)
    _last: float = float("-inf")

    def __call__(self, p: BackfillProgress) -> None:
        now = time.monotonic()  # (a rate limit only: what is written comes from ``p``)
        if now - self._last >= self.every_s:
            self._last = now
            self.mark(p.fraction)
            self.save()
        if self.then is not None:
            self.then(p)

    def mark(self, fraction: float) -> None:
        _quietly(health.BACKFILL.mark, self.r, self.prefix, fraction)

    def clear(self) -> None:
        _quietly(health.BACKFILL.clear, self.r, self.prefix)


def finish_span(engine: Engine, sim: Simulator, res: BackfillResult) -> spans.Span:
    """The backfilled span (``history.spans``), once all of it is in SQL."""
    return spans.finish(engine, sim.start_ms, res.end_ms)


def spawn_workers(
    settings: Settings, env: dict[str, str], counts: dict[str, int], tag: str
) -> list[subprocess.Popen[bytes]]:
    """Worker processes (`wangge worker`) named ``<feed>-<tag><i>`` in the consumer group,
    ``n`` for each partition of the feed (``<feed>-p<k>-<tag><i>`` with several), reading
    ``simulate.backfill_batch_size`` entries at once."""
    parts = keys_of(settings).partitions
    env = {**env, env_name("streams", "batch_size"): str(settings.simulate.backfill_batch_size)}
    procs = []
    for feed, n in counts.items():
        for k in range(parts):
            for i in range(1, n + 1):
                name = f"{feed}-{tag}{i}" if parts == 1 else f"{feed}-p{k}-{tag}{i}"
                cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed]
                cmd += ["--name", name, "--partition", str(k)]
                procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    return procs


def watching(procs: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    """A ``wait`` for the backfill: a short sleep, and an error when one of ``procs`` died
    (its entries would wait for a consumer that never comes)."""

    def wait() -> None:
        time.sleep(0.05)
        for p in procs:
            if p.poll() is not None:
                name = str(p.args[-1]) if isinstance(p.args, list) else str(p.pid)
                raise RuntimeError(f"backfill worker {name} exited with {p.returncode}")

    return wait


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def replay_warnings(
    settings: Settings,
    city: geo.City,
    r: redis.Redis,
    engine: Engine,
    span: spans.Span,
    *,
    stop: Callable[[], bool] = lambda: False,
    out: TextIO | None = None,
) -> ReplayResult | None:
    """The warnings of a backfilled past (``warnings.replay``): the engine evaluated every
    ``simulate.backfill_warnings_every_min`` of ``span`` over the history it wrote (from
    where an earlier replay of it stopped), before the live engine starts; the warnings
    open at its end are then the live list. None when that is off, or when the database
    holds warnings first seen after that point (evaluated live: a replay must not
    interleave with them)."""
    out = out or sys.stdout
    s = settings
    every = s.simulate.backfill_warnings_every_min
    if every <= 0 or span.end_ms <= span.start_ms:
        return None
    done = span.warnings_ms
    w = store.warnings
    with engine.connect() as conn:
        later = select(1).where(w.c.first_seen_ms > (done or span.start_ms)).limit(1)
        if conn.execute(later).first() is not None:
            print(
                "  warnings  the past's not evaluated: warnings were evaluated after it", file=out
            )
            return None
    again = f", resumed from {describe_span(done - span.start_ms)} in" if done else ""
    print(
        f"  warnings  evaluating the backfilled past every {every:g} min{again} "
        "(the live warnings start when it is done)",
        file=out,
        flush=True,
    )
    past = PastEngine(
        s,
        city,
        r,
        engine,
        track_every_s=span.track_every_s,
        slow_every_s=PAST_SLOW_EVERY_S,
    )

    def quarter(at: int) -> int:
        return 4 * (at - span.start_ms) // max(span.end_ms - span.start_ms, 1)

    quarters = [quarter(done) if done else 0]
    reached = [done or span.start_ms]

    def progress(got: ReplayResult, at: int) -> None:  # a line per quarter of the span
        spans.replayed(engine, span, at)
        reached[0] = at
        _quietly(health.REPLAY.mark, r, s.redis.prefix, replayed_fraction(span, at))
        q = quarter(at)
        if 0 < q < 4 and q > quarters[0]:
            quarters[0] = q
            print(
                f"  warnings  {25 * q}%: {got.steps:,} moments, {got.opened:,} warnings opened"
                f" in {got.elapsed_s:.0f} s",
                file=out,
                flush=True,
            )

    step = round(every * 60_000)
    _quietly(health.REPLAY.mark, r, s.redis.prefix, replayed_fraction(span, done))
    try:
        got = replay(
            past, span.start_ms, span.end_ms, step, stop=stop, progress=progress, after_ms=done
        )
        republish(engine, past.live, city)  # what is open at the end is the live list
    finally:
        _quietly(health.REPLAY.clear, r, s.redis.prefix)
    if reached[0] < span.end_ms:  # a stop cut it short (not the line of a finished one)
        pct = replayed_fraction(span, reached[0]) * 100
        print(
            f"  warnings  stopped at {pct:.0f}% of the backfilled past ({got.steps:,} moments,"
            f" {got.opened:,} warnings opened); the next start resumes it",
            file=out,
            flush=True,
        )
    else:
        print(got.line(), file=out, flush=True)
    return got


def replayed_fraction(span: spans.Span, at_ms: int | None) -> float:
    """How much of a backfilled past's warnings are evaluated once it is up to ``at_ms``."""
    if at_ms is None:
        return 0.0
    return (at_ms - span.start_ms) / max(span.end_ms - span.start_ms, 1)


def _quietly(mark: Callable[..., None], *args: Any) -> None:
    """A screens' progress mark: the work goes on (or fails) alone when Redis refuses it
    (the mark expires by itself)."""
    try:
        mark(*args)
    except redis.RedisError as exc:
        log.debug("%s: %s", mark.__name__, exc)
