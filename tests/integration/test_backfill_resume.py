"""A backfill cut short (Ctrl-C, a crash) is resumed at the next start and ends with the
history an uninterrupted one writes: nothing missing, nothing twice, no dead letter.

The oracle is a backfill of the same span that was never interrupted (same city, seed,
start and end), run through the same real streams and feed workers into its own
database; the cut-short one is resumed by ``wangge run``'s own start-up step while its
workers run beside it, as worker processes do. Two cuts: Redis kept what the cut-short
run left in the streams (an external Redis: it is applied before the resume looks at
SQL), and Redis lost it (the embedded one writes no append-only file during a backfill:
it restarts on the state before, rebuilt from SQL)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city.geography import City, GridIndex
from pipelines.city.simulator.backfill import BackfillProgress
from pipelines.cli import backfill as bf
from pipelines.cli.run import _backfill_at_start
from pipelines.cli.runtime import Runtime
from pipelines.cli.status import cut_short_line
from pipelines.history import spans
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import FeedWorker, make_worker, rebuild_live
from tests.clock import TZ, named
from tests.conftest import open_engine, private_database, private_prefix, settings_for
from tests.integration.test_backfill import SMALL

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
SPAN_H = 14  # past the reports' first release (they are held 12 h, then go out by incident)
CUT_AT = 13  # the cut-short run stops after this many of its hourly steps
# fewer events than test_backfill's small city (a span of 14 h is run three times), and
# `wangge run`'s backfill here starts no report workers of its own
LIGHT = {"incidents_per_day": 1500, "video_alerts_per_day": 600, "backfill_report_workers": 1}
LATER_MS = 10 * 60_000  # the next start, this long after the cut
NOW = named("thu-10:00")
# what SQL holds that names stream entries (a resumed run sends some events again, as new
# entries): left out of the comparison
ENTRY_COLUMNS = {"entry_id", "rev_entry", "walk_entry", "acc"}
HISTORY = (
    store.incident_events,
    store.report_rejects,
    store.video_alerts,
    store.track_points,
    store.patrols,
    store.incidents,
    store.dead_letters,
)


@dataclasses.dataclass
class Site:
    """One backfill's own Redis prefix, database and in-process feed workers."""

    settings: Settings
    r: redis.Redis
    engine: Engine
    city: City
    index: GridIndex
    clock_ms: list[int]
    workers: dict[str, FeedWorker] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start_workers()

    def start_workers(self) -> None:
        """New worker processes, as a start gives (their consumer group made if missing)."""
        clock = lambda: self.clock_ms[0] / 1000  # noqa: E731
        s, c, i, r, e = self.settings, self.city, self.index, self.r, self.engine
        self.workers = {
            f: make_worker(f, s, c, i, r, e, f"{f}-t", clock=clock)
            for f in ("reports", "locations", "video")
        }

    def step(self) -> int:
        """One batch per feed; the entries acknowledged."""
        return sum(w.step().acked for w in self.workers.values())

    def drain(self) -> None:
        while self.step():
            pass

    @contextmanager
    def running(self, stop: threading.Event, after_s: float) -> Iterator[None]:
        """The workers in a thread of their own, as worker processes run beside `wangge run`,
        up ``after_s`` later (a failure sets ``stop``, and is raised at the end)."""
        done, failed = threading.Event(), []

        def loop() -> None:
            try:
                done.wait(after_s)
                while not done.is_set():
                    if not self.step():
                        done.wait(0.01)
            except BaseException as exc:  # the test fails with it (not a stalled wait)
                failed.append(exc)
                stop.set()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()
        if failed:
            raise failed[0]


@contextmanager
def site(redis_url: str, city: City, index: GridIndex, tmp: Path) -> Iterator[Site]:
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        # smaller batches than the default: each hourly step is several batches
        s = settings_for(
            redis_url,
            prefix,
            db,
            tmp,
            simulate={**SMALL, **LIGHT},
            streams={"batch_size": 200, "block_ms": 2},
        )
        engine, r = open_engine(db), redis.Redis.from_url(redis_url)
        try:
            yield Site(s, r, engine, city, index, [NOW.ms])
        finally:
            engine.dispose()


def history(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the history tables, less the columns that name stream entries."""
    out = {}
    with engine.connect() as conn:
        for t in HISTORY:
            cols = [c for c in t.columns if c.name not in ENTRY_COLUMNS]
            out[t.name] = sorted(conn.execute(select(*cols)).all(), key=repr)
    return out


def backfill(
    x: Site, city: City, days: float, stop: Callable[[], bool], progress: Any = None
) -> tuple[Any, Any]:
    return bf.backfill_streams(
        x.settings,
        city,
        x.r,
        x.engine,
        days,
        stop=stop,
        progress=progress,
        clock=lambda: x.clock_ms[0] / 1000,
        wait=x.step,  # (and no reload of the video worker's cameras: the registries' count)
    )


@pytest.fixture(scope="module")
def reference(
    redis_url: str, city: City, index: GridIndex, tmp_path_factory: pytest.TempPathFactory
) -> tuple[spans.Span, dict[str, list[tuple[Any, ...]]]]:
    """The same span never interrupted: from the cut-short run's start to the next start."""
    with site(redis_url, city, index, tmp_path_factory.mktemp("ref")) as x:
        x.clock_ms[0] = NOW.ms + LATER_MS
        days = (SPAN_H * HOUR_MS + LATER_MS) / 86_400_000
        sim, res = backfill(x, city, days, lambda: False, lambda p: x.drain())
        x.drain()
        span = bf.finish_span(x.engine, sim, res)
        return span, history(x.engine)


@pytest.mark.parametrize("redis_kept", [True, False], ids=["redis-kept", "redis-lost"])
def test_a_backfill_cut_short_is_resumed_to_the_same_history(
    redis_kept: bool,
    reference: tuple[spans.Span, dict[str, list[tuple[Any, ...]]]],
    redis_url: str,
    city: City,
    index: GridIndex,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref_span, ref = reference
    assert ref["incident_events"] and ref["video_alerts"] and ref["track_points"]
    assert not ref["dead_letters"] and not ref["report_rejects"]
    with site(redis_url, city, index, tmp_path) as x:
        steps: list[BackfillProgress] = []

        def progress(p: BackfillProgress) -> None:  # the pipelines keep up, but for the last hour
            steps.append(p)
            if len(steps) < CUT_AT:
                x.drain()
            else:
                x.step()

        backfill(x, city, SPAN_H / 24, lambda: len(steps) >= CUT_AT, progress)
        cut = spans.unfinished(x.engine)
        assert cut is not None and cut.start_ms == ref_span.start_ms
        assert cut.resume_ms is not None and cut.reached_ms is not None
        # resumed from past the reports' first release, and the last hour was in flight
        assert cut.start_ms + 12 * HOUR_MS <= cut.resume_ms < cut.reached_ms
        assert cut.reached_ms == cut.start_ms + CUT_AT * HOUR_MS
        assert spans.unreplayed(x.engine) is None  # its warnings wait until it is whole
        at = datetime.fromtimestamp(cut.resume_ms / 1000, TZ).strftime("%Y-%m-%d %H:%M")
        assert cut_short_line(x.engine, x.settings) == (
            f"backfill   cut short: its events up to {at} are in; the next `wangge run` resumes it"
        )
        # what it says is in SQL is: every event up to then of the uninterrupted run
        got = history(x.engine)
        for t in (store.incident_events, store.video_alerts, store.track_points):
            i = [c.name for c in t.columns if c.name not in ENTRY_COLUMNS].index("ts_ms")
            early = [row for row in ref[t.name] if row[i] <= cut.resume_ms]
            assert early and set(early) <= set(got[t.name]), t.name
        left = sum(x.r.xlen(k) for k in bf.stream_keys(x.settings).values())
        assert left > 0  # entries the cut left unacknowledged in the streams
        if not redis_kept:
            prefix = x.settings.redis.prefix
            for k in list(x.r.scan_iter(match=f"{prefix}:*", count=1000)):
                x.r.delete(k)
            rebuild_live(x.settings, city, x.r, x.engine, clock=lambda: NOW.ms / 1000)
        x.start_workers()
        # the next start, a little later
        x.clock_ms[0] = NOW.ms + LATER_MS
        capsys.readouterr()
        rt = Runtime(x.settings, x.r, x.engine)
        stop = threading.Event()
        # the workers come up after the resume is under way: it must wait for them to
        # apply what the cut left in the streams before it looks at SQL
        with x.running(stop, after_s=2.0):
            _sim, span = _backfill_at_start(rt, city, stop, {}, clock=lambda: x.clock_ms[0] / 1000)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                x.r.xinfo_groups(k)[0]["pending"]
                for k in bf.stream_keys(x.settings).values()
                if x.r.exists(k)
            ):
                time.sleep(0.05)
        x.drain()
        said = capsys.readouterr().out
        assert "resuming the one cut short" in said
        assert span is not None and span.finished
        assert (span.start_ms, span.end_ms) == (ref_span.start_ms, ref_span.end_ms)
        assert spans.unfinished(x.engine) is None and cut_short_line(x.engine, x.settings) is None
        assert spans.unreplayed(x.engine) == span  # its warnings are evaluated next
        assert history(x.engine) == ref
