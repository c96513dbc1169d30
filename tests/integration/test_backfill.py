"""The backfill (a lived-in first start): a simulated past through the real streams and
feed workers, on an injected clock at named calendar moments.

A small city (300 grids) and a 6-hour span keep it cheap; the full city's 7 days are
measured in ``tests/bench/test_backfill_bench.py``."""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import math
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import redis
from sqlalchemy import Engine, select

from dashboard import live as L
from dashboard.backend import Backend
from pipelines.city.geography import City, GridIndex
from pipelines.city.simulator.backfill import (
    BackfillProgress,
    backfill_simulator,
    parse_span,
    run_backfill,
)
from pipelines.cli import backfill as bf
from pipelines.cli import parser
from pipelines.cli.data import cmd_simulate
from pipelines.cli.run import _backfill_at_start
from pipelines.cli.runtime import Runtime
from pipelines.cli.status import health_lines
from pipelines.dispatch.flows import flows_for
from pipelines.history import spans
from pipelines.history.state import HistoricState
from pipelines.settings import Settings
from pipelines.spine import health, store
from pipelines.spine.runner import ClockJob, FeedWorker, live_state, make_worker, rebuild_live
from pipelines.spine.streams import id_key, xadd_many
from tests.clock import TZ, Moment, named
from tests.conftest import open_engine, private_database, private_prefix, settings_for
from tests.integration.test_rebuild_live import live_state_of

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
SPAN_H = 6
SMALL = {
    "workers": 300,
    "cameras": 60,
    "incidents_per_day": 4000,
    "video_alerts_per_day": 2000,
    "backfill_track_every_s": 1800.0,
}
# a weekday morning (the span covers the night and the start of the day shift) and the
# minute after midnight that starts a new day, ISO week and month (the span is yesterday)
AT = (named("thu-10:00"), named("mon-00:01"))


def small_settings(redis_url: str, prefix: str, db: Any, tmp: Path) -> Settings:
    return settings_for(redis_url, prefix, db, tmp, simulate=SMALL)


def in_process(
    settings: Settings, city: City, index: GridIndex, r: redis.Redis, engine: Engine, now: int
) -> dict[str, FeedWorker]:
    clock = lambda: now / 1000  # noqa: E731
    return {
        f: make_worker(f, settings, city, index, r, engine, f"{f}-t", clock=clock)
        for f in ("reports", "locations", "video")
    }


@dataclasses.dataclass(frozen=True)
class Backfilled:
    moment: Moment
    settings: Settings
    engine: Engine
    r: redis.Redis
    result: Any
    steps: list[BackfillProgress]
    live: dict[str, Any]  # the live state right after the backfill (and a clock tick)
    past: Any  # the past's warnings evaluated (``bf.replay_warnings``): stopped, resumed
    said: str  # what that printed
    # while it ran, at each of the pipelines' turns: the backfill mark, its expiry (s) and
    # the screens' freshness line (zh-CN); then the mark and the line after it ended
    during: list[tuple[float | None, int, str]]
    after: tuple[float | None, str]
    # while the past's warnings were evaluated, at each moment: the replay mark, its
    # expiry (s), the screens' line and `wangge status`'s lines; then the mark and the
    # screens' line after both replays
    replaying: list[tuple[float | None, int, str, list[str]]]
    replayed: tuple[float | None, str]


@pytest.fixture(scope="module", params=AT, ids=str)
def backfilled(
    request: pytest.FixtureRequest,
    redis_url: str,
    city: City,
    index: GridIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    moment: Moment = request.param
    tmp = tmp_path_factory.mktemp("backfill")
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        settings = small_settings(redis_url, prefix, db, tmp)
        engine = open_engine(db)
        r = redis.Redis.from_url(redis_url)
        now = moment.ms
        clock = lambda: now / 1000  # noqa: E731
        ws = in_process(settings, city, index, r, engine, now)
        steps: list[BackfillProgress] = []
        during: list[tuple[float | None, int, str]] = []

        def screen() -> str:  # a fresh board: the line of a new tick
            return L.feed_fresh_text(Backend(settings, city, r, engine, clock=clock), "zh-CN")

        def wait() -> None:  # the pipelines' turn: one batch per feed
            if len(during) < 3:
                mark = health.BACKFILL.read(r, prefix)
                during.append((mark, int(r.ttl(health.BACKFILL.key(prefix))), screen()))
            for w in ws.values():
                w.step()

        sim, res = bf.backfill_streams(
            settings,
            city,
            r,
            engine,
            SPAN_H / 24,
            progress=steps.append,
            clock=lambda: now / 1000,
            wait=wait,
            ready=ws["video"].reload_cameras,
        )
        after = (health.BACKFILL.read(r, prefix), screen())
        # the past's warnings, stopped after 12 of its 24 moments (Ctrl-C) and resumed at
        # the next start from where the span says they got to
        said = io.StringIO()
        span = bf.finish_span(engine, sim, res)
        asked = itertools.count()
        replaying: list[tuple[float | None, int, str, list[str]]] = []

        def stop_after_12() -> bool:  # (asked before each moment)
            mark, ttl = health.REPLAY.read(r, prefix), int(r.ttl(health.REPLAY.key(prefix)))
            replaying.append((mark, ttl, screen(), health_lines(r, settings, now)))
            return next(asked) >= 12

        first = bf.replay_warnings(settings, city, r, engine, span, out=said, stop=stop_after_12)
        again = spans.unreplayed(engine)
        assert again is not None and again.warnings_ms is not None
        second = bf.replay_warnings(settings, city, r, engine, again, out=said)
        assert spans.unreplayed(engine) is None
        replayed = (health.REPLAY.read(r, prefix), screen())
        past = (first, second, again.warnings_ms)
        ClockJob(settings, city, live_state(r, settings), r, clock=lambda: now / 1000).tick()
        live = live_state_of(r, prefix)
        try:
            yield Backfilled(
                moment,
                settings,
                engine,
                r,
                res,
                steps,
                live,
                past,
                said.getvalue(),
                during,
                after,
                replaying,
                replayed,
            )
        finally:
            r.close()
            engine.dispose()


def local_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, TZ).strftime("%Y%m%d")


def test_backfill_goes_through_the_streams_into_sql(backfilled: Any) -> None:
    b = backfilled
    s, now = b.settings, b.moment.ms
    prefix = s.redis.prefix
    # every event went through a stream and was acknowledged (the clock job then trimmed
    # the streams to nothing); nothing was dead-lettered
    for feed in ("reports", "locations", "video"):
        key = f"{prefix}:{getattr(s.streams, feed)}"
        assert b.result.events[feed] > 0 and b.r.xlen(key) == 0
        info = {g["name"]: g for g in b.r.xinfo_groups(key)}[s.streams.group.encode()]
        assert info["pending"] == 0
    assert b.r.xlen(f"{prefix}:{s.streams.deadletter}") == 0
    assert store.table_count(b.engine, store.dead_letters) == 0
    assert store.table_count(b.engine, store.incident_events) == b.result.events["reports"]
    assert store.table_count(b.engine, store.video_alerts) == b.result.events["video"]
    # spread over the span, never in the future, in the right local days and hours
    ev = store.read_frame(
        b.engine, select(store.incident_events.c.ts_ms, store.incident_events.c.step)
    )
    ts = ev["ts_ms"].to_list()
    start = now - SPAN_H * HOUR_MS
    assert start < min(ts) and max(ts) <= now
    hours = {(t - start) // HOUR_MS for t in ts}
    assert hours == set(range(SPAN_H))  # every hour of the span has reports
    expected_days = {local_day(start + 1), local_day(now)}
    days = {local_day(t) for t in ts}
    assert days <= expected_days and local_day(start + 1) in days
    # lifecycles, not just reports: accepted, dispatched, handling … closed
    assert {"reported", "accepted", "handling", "resolved", "closed"} <= set(ev["step"])
    tracks = store.read_frame(b.engine, select(store.track_points.c.ts_ms))
    assert tracks.height and tracks["ts_ms"].min() > start and tracks["ts_ms"].max() <= now
    # the progress went forward to the end
    fr = [p.fraction for p in b.steps]
    assert fr[-1] == 1.0 and b.steps[-1].backlog == 0


def test_the_screens_say_a_backfill_runs_and_how_far_until_it_ends(backfilled: Any) -> None:
    """While it runs, every screen's freshness line starts with how far the backfill is
    (the mark it keeps in Redis, expiring if its process dies); once it ends, the mark is
    gone and so is the line's note."""
    b = backfilled
    assert b.during, "the backfill never waited for the pipelines"
    for mark, ttl, line in b.during:
        assert mark is not None and 0.0 <= mark <= 1.0
        assert 0 < ttl <= health.PROGRESS_TTL_S
        assert line.startswith(f"正在回填近期历史 {int(mark * 100)}% · "), line
        assert "积压未处理" not in line  # its backlog is not a stalled pipeline
    marks = [m for m, _, _ in b.during]
    assert marks == sorted(marks)  # (it only goes forward)
    mark, line = b.after
    assert mark is None and "回填" not in line and line


def test_the_screens_say_the_pasts_warnings_are_evaluated_and_how_far(backfilled: Any) -> None:
    """While the backfilled past's warnings are evaluated (the live warnings start after,
    so the warnings list is empty meanwhile) every freshness line says so and how far, from
    a mark that expires if the process dies; once done, the mark and the note are gone."""
    b = backfilled
    res, step = b.result, round(b.settings.simulate.backfill_warnings_every_min * 60_000)
    assert len(b.replaying) == 13  # asked before each of the first 13 moments (then stopped)
    for i, (mark, ttl, line, status) in enumerate(b.replaying):
        # before moment i+1, the first i are evaluated: how far, from the span alone
        assert mark == pytest.approx(i * step / (res.end_ms - res.start_ms), abs=1e-4)
        assert 0 < ttl <= health.PROGRESS_TTL_S
        assert f"正在研判回填历史的预警 {int(mark * 100)}%" in line, line
        said = f"warnings   evaluating the backfilled past, {mark * 100:.0f}% done"
        assert any(x.startswith(said) for x in status), status
    mark, line = b.replayed
    assert mark is None and "研判回填" not in line and line


def test_the_past_has_the_warnings_its_reports_call_for(backfilled: Any) -> None:
    """Every report that alone opens a threshold warning (a spec of count 1 whose window is
    at least the replay's step) is in a warning of its street and category open at the
    first evaluated moment after it; the warnings' story is told at those moments only."""
    b = backfilled
    s, res = b.settings, b.result
    step = round(s.simulate.backfill_warnings_every_min * 60_000)
    moments = [*range(res.start_ms + step, res.end_ms, step), res.end_ms]
    first, second, stopped_at = b.past
    assert first is not None and second is not None
    assert first.steps == 12 and stopped_at == moments[11]
    assert second.steps == len(moments) - 12 and first.opened + second.opened > 0
    lines = b.said.splitlines()  # what the console shows: a line per quarter, the figures
    quarters = [ln.split("%")[0].split()[-1] for ln in lines if "%:" in ln]
    assert quarters == ["25", "50", "75"], lines
    assert sum("resumed from 3h 0m in" in ln for ln in lines) == 1, lines
    assert f"{second.steps} past moments evaluated: {second.opened} warnings opened" in lines[-1]
    # the stopped one said so, with how far it got (12 moments of the span), not as done
    pct = round((moments[11] - res.start_ms) * 100 / (res.end_ms - res.start_ms))
    cut = [ln for ln in lines if "the next start resumes it" in ln]
    assert cut == [
        f"  warnings  stopped at {pct}% of the backfilled past (12 moments,"
        f" {first.opened} warnings opened); the next start resumes it"
    ], lines
    assert sum("past moments evaluated" in ln for ln in lines) == 1, lines
    w, wa, ev = store.warnings, store.warning_actions, store.incident_events
    warns = store.read_frame(b.engine, select(w))
    acts = store.read_frame(b.engine, select(wa.c.at_ms))
    assert set(acts["at_ms"]) <= set(moments) and set(warns["first_seen_ms"]) <= set(moments)
    reports = store.read_frame(
        b.engine,
        select(ev.c.incident_id, ev.c.ts_ms, ev.c.category, ev.c.severity, ev.c.street_id).where(
            ev.c.step == "reported"
        ),
    )
    checked = 0
    for spec in s.warnings.threshold_rules.split(","):
        cat, count, window_min, _level, *sev = spec.split(":")
        if int(count) != 1 or float(window_min) * 60_000 < step:
            continue
        alone = reports.filter(
            pl.col("category") == cat, pl.col("severity") >= int(sev[0] if sev else 1)
        )
        for incident, ts, _c, _s, street in alone.iter_rows():
            at = next(m for m in moments if m >= ts)
            key = f"threshold:{street}:{cat}"
            holding = [
                r
                for r in warns.iter_rows(named=True)
                if (r["key"] == key or key in orjson.loads(r["aliases"]))
                and r["first_seen_ms"] <= at <= r["last_seen_ms"]
                and incident in orjson.loads(r["evidence"])
            ]
            assert holding, (incident, ts, at, key)
            checked += 1
    assert checked > 0


def test_the_time_machine_counts_online_over_the_tracks_kept(backfilled: Any, city: City) -> None:
    """Inside the backfilled span a worker's track is one point every
    ``backfill_track_every_s``: at a moment there, a worker is online when its latest point
    by then is within that interval and a quarter (not ``live.online_minutes``) — counted
    here from the track points themselves."""
    b = backfilled
    s = b.settings
    at = b.result.start_ms + 4 * HOUR_MS + 7 * 60_000
    tp = store.track_points
    points = store.read_frame(b.engine, select(tp.c.worker_id, tp.c.ts_ms).where(tp.c.ts_ms <= at))
    latest = points.group_by("worker_id").agg(pl.col("ts_ms").max())

    def seen_within(minutes: float) -> int:
        return latest.filter(pl.col("ts_ms") >= at - round(minutes * 60_000)).height

    every_min = s.simulate.backfill_track_every_s / 60
    want = seen_within(math.ceil(every_min * 1.25))
    assert want > 2 * seen_within(s.live.online_minutes)  # not vacuous: far more than 10 min
    past = HistoricState(b.engine, city, s, at, now_ms=b.moment.ms)
    assert past.counts("online", [city.city_id]) == [want]
    # after the span: the live rule again
    later = HistoricState(b.engine, city, s, b.result.end_ms + 60_000, now_ms=b.moment.ms)
    assert later.online_minutes == s.live.online_minutes


def test_live_state_equals_rebuild_from_sql(backfilled: Any, city: City) -> None:
    b = backfilled
    now = b.moment.ms
    rebuild_live(b.settings, city, b.r, b.engine, clock=lambda: now / 1000)
    assert live_state_of(b.r, b.settings.redis.prefix) == b.live


def test_kpis_of_the_past_are_filled(backfilled: Any, city: City) -> None:
    b = backfilled
    s, now = b.settings, b.moment.ms
    state = live_state(b.r, s)
    hours = [(now - k * HOUR_MS) // HOUR_MS for k in range(SPAN_H, 0, -1)]
    trend = state.hourly("r", city.city_id, hours)
    assert sum(1 for n in trend if n > 0) >= SPAN_H - 1, trend
    # the day counters hold every report of the span, by local day
    rep = store.read_frame(
        b.engine,
        select(store.incident_events.c.ts_ms).where(store.incident_events.c.step == "reported"),
    )
    by_day = (
        rep.with_columns(day=pl.col("ts_ms").map_elements(local_day, return_dtype=pl.String))
        .group_by("day")
        .len()
    )
    for day, n in by_day.iter_rows():
        got = b.r.hget(state.keys.day(day, "reports"), city.city_id)
        assert int(got or 0) == n
    assert b.r.hlen(f"{s.redis.prefix}:live:pos") > 0  # workers seen on their last shift


def test_a_database_with_events_is_refused(
    backfilled: Any, city: City, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = backfilled
    # `wangge run`'s later starts: no backfill, not a word about it
    before = b.r.xlen(f"{b.settings.redis.prefix}:{b.settings.streams.reports}")
    rt = Runtime(b.settings, b.r, b.engine)
    assert _backfill_at_start(rt, city, threading.Event(), None) == (None, None)  # type: ignore[arg-type]
    assert capsys.readouterr().out == ""
    why = bf.refusal(b.settings, b.engine, 7, explicit=True)
    assert why is not None and "already holds events" in why and "incident_events" in why
    assert bf.refusal(b.settings, b.engine, 7, explicit=True, force=True) is None
    # the command says so and exits 2, publishing nothing
    s = dataclasses.replace(
        b.settings, geo=dataclasses.replace(b.settings.geo, grids=300, cache_dir=str(tmp_path))
    )
    args = parser().parse_args(["simulate", "--backfill", "6h"])
    assert cmd_simulate(s, args) == 2
    assert b.r.xlen(f"{s.redis.prefix}:{s.streams.reports}") == before


def test_an_imported_city_is_backfilled_only_on_demand(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path, city: City, rclient: redis.Redis
) -> None:
    s = small_settings(redis_url, prefix, db_url, tmp_path)
    imported = dataclasses.replace(s, geo=dataclasses.replace(s.geo, source=str(tmp_path)))
    engine = open_engine(db_url)
    try:
        why = bf.refusal(imported, engine, 7, explicit=False)
        assert why is not None and "imported" in why
        assert bf.refusal(imported, engine, 7, explicit=True) is None  # asked: yes
        assert bf.refusal(s, engine, 7, explicit=False) is None  # the demo city: yes
        # `wangge run`'s start leaves it alone (no simulator handed over, nothing sent)
        rt = Runtime(imported, rclient, engine)
        assert _backfill_at_start(rt, city, threading.Event(), None) == (None, None)  # type: ignore[arg-type]
        assert not list(rclient.scan_iter(match=f"{prefix}:*"))
        # never further back than the pipelines accept
        far = bf.refusal(s, engine, s.streams.max_age_days, explicit=True)
        assert far is not None and "max_age_days" in far
    finally:
        engine.dispose()


def test_the_backfill_chases_a_moving_clock_and_keeps_the_backlog_bounded(city: City) -> None:
    """Pure: no event later than "now" (which moves on while the backfill runs), at most
    ``max_backlog`` unacknowledged, and it ends within a second of now."""
    s = settings_for("redis://unused", "p", ("sqlite://", None), Path("."), simulate=SMALL)
    now = [named("sat-03:00").ms]
    sim = backfill_simulator(city, s.simulate, flows_for(s), now[0], 2 / 24)
    sent: list[tuple[str, int]] = []
    order: list[tuple[str, int]] = []  # (incident, ts) of the reports as published
    acked = [0]
    peak = [0]

    def publish(feed: str, payloads: list[bytes]) -> None:
        peak[0] = max(peak[0], backlog())  # never published onto a full backlog
        incs = []
        for p in payloads:
            ev = orjson.loads(p)
            assert ev["ts"] <= now[0], "an event from the future"
            sent.append((feed, ev["ts"]))
            if feed == "reports":
                order.append((ev["incident_id"], ev["ts"]))
                incs.append(ev["incident_id"])
        # one release of reports: each incident's steps together
        runs = sum(1 for k, i in enumerate(incs) if k == 0 or incs[k - 1] != i)
        assert runs == len(set(incs))
        now[0] += 20_000  # the wall clock moves on while we publish

    def backlog() -> int:
        return len(sent) - acked[0]

    def wait() -> None:
        acked[0] = min(len(sent), acked[0] + 100)

    res = run_backfill(
        sim, publish, backlog, wait, lambda: now[0], max_backlog=500, group_ms=2 * HOUR_MS
    )
    assert res.total == len(sent) and acked[0] == len(sent)
    assert peak[0] <= 500
    # each incident's steps in time order, across releases too
    last: dict[str, int] = {}
    for inc, ts in order:
        assert ts >= last.get(inc, 0)
        last[inc] = ts
    assert len(last) < len(order)  # incidents with several steps
    assert now[0] - sim.clock_ms <= 1_000 + 20_000
    reports = [ts for f, ts in sent if f == "reports"]
    assert reports and max(reports) > now[0] - 2 * HOUR_MS  # it went on past the first "now"


@pytest.mark.parametrize(
    ("text", "days"), [("7d", 7.0), ("36h", 1.5), ("90m", 90 / 1440), ("2.5", 2.5)]
)
def test_parse_span(text: str, days: float) -> None:
    assert parse_span(text) == pytest.approx(days)


@pytest.mark.parametrize("text", ["", "0d", "-1h", "soon", "7w"])
def test_parse_span_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_span(text)


def test_the_cli_accepts_backfill() -> None:
    args = parser().parse_args(["simulate", "--backfill", "7d", "--force"])
    assert isinstance(args, argparse.Namespace) and args.backfill == "7d" and args.force


def test_resume_carries_the_backfilled_city_on_live(city: City) -> None:
    """The backfill's simulator goes live: the phones ping at their live interval at once,
    the incidents open at the end go on through their lifecycles, and the scripted
    anomalies come ``anomaly_start_min`` after the live start (none in the past)."""
    s = settings_for("redis://unused", "p", ("sqlite://", None), Path("."), simulate=SMALL)
    now = named("thu-10:00").ms  # the day shift: nearly every worker on duty
    sim = backfill_simulator(city, s.simulate, flows_for(s), now, 2 / 24)
    past = sim.advance(now)
    assert not sim.anomalies  # a normal past
    reported = {
        orjson.loads(p)["incident_id"] for f, p in past if f == "reports" and b'"reported"' in p
    }
    live = dataclasses.replace(s.simulate, anomaly_start_min=2.0)
    sim.resume(live)
    ahead = sim.advance(now + 3 * 60_000)
    pings = [p for f, p in ahead if f == "locations"]
    # thinned (one per 30 min) 300 workers would send ~30 in 3 minutes; live every 10–30 s
    assert len(pings) > 300 * 0.5 * 180 / 30
    later = [orjson.loads(p) for f, p in ahead if f == "reports"]
    assert any(e["incident_id"] in reported and e["step"] != "reported" for e in later)
    surge = [a for a in sim.anomalies if a["kind"] == "dispute_surge"]
    assert surge and surge[0]["start_ms"] == now + 2 * 60_000


def test_a_video_worker_knows_the_cameras_stored_after_it_started(
    redis_url: str, rclient: redis.Redis, prefix: str, city: City, index: GridIndex, tmp_path: Path
) -> None:
    """`wangge run` starts its workers before a first start's backfill stores the simulated
    cameras: the video worker read an empty registry a moment before the first alerts
    come. It reloads it when the registries were written since it read them, however
    recently that was (its clock stands still here), instead of dead-lettering a first
    start's alerts as ``unknown_camera``."""
    with private_database(tmp_path) as db:
        s = small_settings(redis_url, prefix, db, tmp_path)
        engine = open_engine(db)
        now = named("thu-10:00").ms
        w = make_worker(
            "video", s, city, index, rclient, engine, "video-t", clock=lambda: now / 1000
        )
        assert w.cameras == {}
        sim = backfill_simulator(city, s.simulate, flows_for(s), now, 2 / 24)
        alerts = [p for f, p in sim.advance(now) if f == "video"]
        assert alerts
        xadd_many(rclient, w.consumer.stream, alerts)
        bf.store_registries(engine, rclient, s, sim)
        res = w.step()
        assert (res.applied, res.dead) == (len(alerts), 0)
        assert store.table_count(engine, store.video_alerts) == len(alerts)
        engine.dispose()


def test_a_dead_backfill_worker_stops_the_wait() -> None:
    """Its entries would wait for a consumer that never comes: the backfill fails instead."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)", "reports-bf1"])
    proc.wait()
    with pytest.raises(RuntimeError, match=r"reports-bf1 exited with 3"):
        bf.watching([proc])()


def test_the_publisher_adds_one_entry_per_payload_in_order_and_counts_the_backlog(
    rclient: redis.Redis, prefix: str
) -> None:
    """The backfill's publisher (one script call per chunk, not one XADD per payload):
    every payload one entry with its ``data`` field, in the order given, across chunks;
    the backlog is what the group has not acknowledged, counted from the returned ids."""
    base = settings_for("redis://unused", prefix, ("sqlite://", None), Path("."))
    feed = bf.StreamFeed(rclient, base, chunk=7)
    payloads = [orjson.dumps({"worker_id": f"W{i:06d}", "n": i}) for i in range(30)]
    feed.publish("locations", payloads[:12])
    feed.publish("locations", payloads[12:])
    key = feed.keys[("locations", 0)]
    entries = rclient.xrange(key)
    assert [e[1] for e in entries] == [{b"data": p} for p in payloads]
    # a mark per chunk (7 + 5, then 7 + 7 + 4): the last id of each and the running count
    marks = feed.marks[("locations", 0)]
    ids = [e[0].decode() for e in entries]
    assert [n for _, n in marks] == [7, 12, 19, 26, 30]
    assert [m for m, _ in marks] == [id_key(ids[n - 1]) for _, n in marks]
    assert feed.backlog() == 30
    group = base.streams.group
    got = rclient.xreadgroup(group, "c1", {key: ">"}, count=19)
    assert feed.backlog() == 30  # delivered, not acknowledged: pending
    rclient.xack(key, group, *[e for e, _ in got[0][1]])
    assert feed.backlog() == 11
    assert xadd_many(rclient, key, []) is None
    # what the group acknowledged is trimmed when the next payloads are published (the clock
    # job that trims streams starts only after the backfill); nothing unacknowledged goes
    rest = rclient.xreadgroup(group, "c1", {key: ">"}, count=5)[0][1]  # 5 pending
    feed.publish("locations", [orjson.dumps({"worker_id": "W999999", "n": 30})])
    kept = [e[1][b"data"] for e in rclient.xrange(key)]
    assert kept == [*payloads[19:], orjson.dumps({"worker_id": "W999999", "n": 30})]
    rclient.xack(key, group, *[e for e, _ in rest])
    feed.publish("locations", [orjson.dumps({"worker_id": "W999998", "n": 31})])
    assert rclient.xlen(key) == 6 + 2  # never delivered, and the two new ones


def test_the_publisher_knows_up_to_when_all_is_acknowledged(
    rclient: redis.Redis, prefix: str
) -> None:
    """For a resume: the moment up to which every event is in SQL is, over the feeds, the
    earliest moment of a feed's last publish call acknowledged whole (a call's payloads
    are not in time order: reports go out by incident); a feed that published nothing
    holds it at the start (its events may be held back), acknowledgements out of order
    count only up to the first pending entry."""
    base = settings_for("redis://unused", prefix, ("sqlite://", None), Path("."))
    clock = [1000]
    feed = bf.StreamFeed(rclient, base, chunk=4, through=lambda: clock[0])
    group = base.streams.group

    def pub(f: str, n: int, at: int) -> None:
        clock[0] = at
        feed.publish(f, [orjson.dumps({"worker_id": f"W{i}", "n": i}) for i in range(n)])

    def take(f: str, n: int) -> list[bytes]:
        key = feed.keys[(f, 0)]
        return [e for e, _ in rclient.xreadgroup(group, "c1", {key: ">"}, count=n)[0][1]]

    def ack(f: str, ids: list[bytes]) -> None:
        rclient.xack(feed.keys[(f, 0)], group, *ids)

    pub("locations", 6, 2000)  # two chunks
    pub("video", 3, 2000)
    pub("locations", 9, 3000)  # three chunks
    assert feed.filled_ms() == 1000  # reports: nothing yet
    pub("reports", 5, 2500)
    assert feed.filled_ms() == 1000  # nothing acknowledged
    for f in ("reports", "video"):
        ack(f, take(f, 10))
    loc = take("locations", 15)
    ack("locations", loc[4:])  # the first chunk still pending: nothing counts
    assert feed.filled_ms() == 1000
    ack("locations", loc[:4])
    assert feed.filled_ms() == 2000  # locations all in (3000), reports (2500), video (2000)
    pub("video", 2, 4000)
    assert feed.filled_ms() == 2000
    ack("video", take("video", 10))
    assert feed.filled_ms() == 2500
    pub("reports", 9, 5000)
    ack("reports", take("reports", 5))  # the call's first chunk and a part of its second
    assert feed.filled_ms() == 2500
    ack("reports", take("reports", 10))
    assert feed.filled_ms() == 3000  # locations (3000) now the earliest


class AckedMeanwhile:
    """A client on which a worker acknowledges every pending entry of the stream just
    before the first pending one is asked for (in CI: the count said one pending, the
    first pending id came back as none)."""

    def __init__(self, r: redis.Redis, group: str) -> None:
        self.r, self.group = r, group

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)

    def xpending(self, key: str, group: str) -> Any:
        for p in self.r.xpending_range(key, self.group, min="-", max="+", count=1000):
            self.r.xack(key, self.group, p["message_id"])
        return self.r.xpending(key, group)


def test_what_is_acknowledged_meanwhile_is_read_as_acknowledged(
    rclient: redis.Redis, prefix: str
) -> None:
    """The point up to which all is acknowledged, while the workers go on: entries pending
    at the first read and acknowledged by the next count as acknowledged (not a crash)."""
    base = settings_for("redis://unused", prefix, ("sqlite://", None), Path("."))
    feed = bf.StreamFeed(rclient, base, chunk=4, through=lambda: 2000)
    group = base.streams.group
    feed.publish("video", [orjson.dumps({"alert_id": f"A{i}", "n": i}) for i in range(6)])
    key = feed.keys[("video", 0)]
    got = rclient.xreadgroup(group, "c1", {key: ">"}, count=3)[0][1]
    ids = [e for e, _ in got]
    assert bf._acked_below(rclient, key, group) == id_key(ids[0])  # all three pending
    # the three acknowledged between the reads: everything delivered counts
    ms, seq = id_key(ids[-1])
    assert bf._acked_below(AckedMeanwhile(rclient, group), key, group) == (ms, seq + 1)  # type: ignore[arg-type]
