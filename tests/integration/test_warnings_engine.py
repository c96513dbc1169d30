"""The early-warning engine on a real Redis and SQL, fed by the simulator's scripted
anomalies through the real pipeline code (simulated clock)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import redis
from sqlalchemy import Engine, select

from pipelines import warnings as W
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish

pytestmark = [pytest.mark.integration, pytest.mark.clock]  # runs on a clock passed in

MIN = 60_000
START = int(datetime(2026, 3, 2, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 08:00 local
TICK_MS = 10 * MIN


def test_scripted_anomalies_are_flagged(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
) -> None:
    # Feed workers poll with a 1 ms block: the simulated clock never waits for real time.
    settings = dataclasses.replace(
        live_settings, streams=dataclasses.replace(live_settings.streams, block_ms=1)
    )
    now = [START]
    clock = lambda: now[0] / 1000  # noqa: E731
    cfg = dataclasses.replace(
        settings.simulate,
        workers=400,
        cameras=80,
        malformed_share=0.0,
        incidents_per_day=3000,
        video_alerts_per_day=2000,
    )
    sim = simulate.Simulator(city, cfg, flows_for(settings), start_ms=START)
    store.replace_table(
        engine, store.cameras, sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    index = GridIndex(city)
    feeds = {
        f: make_worker(f, settings, city, index, rclient, engine, f"{f}-w", clock=clock)
        for f in ("reports", "locations", "video")
    }
    job = ClockJob(settings, city, live_state(rclient, settings), rclient, clock=clock)
    eng = W.WarningEngine(settings, city, rclient, engine, clock=clock)

    def run_until(t: int) -> None:
        events = sim.advance(t)
        now[0] = t
        for f, w in feeds.items():
            publish(rclient, w.consumer.stream, [p for g, p in events if g == f])
            while w.step().acked:
                pass
        job.tick()

    opened: dict[str, int] = {}  # key (and alias) → tick time first open
    gap_by_tick: dict[int, dict[str, dict[str, Any]]] = {}  # tick → street → gap summary
    ticks: list[dict[str, Any]] = []

    def evaluate_until(t_end: int) -> None:
        while now[0] + TICK_MS <= t_end:
            t = now[0] + TICK_MS
            run_until(t)
            ticks.append(eng.tick())
            for w in W.warnings_from_frame(W.open_warnings(engine)):
                for k in (w.key, *w.aliases):
                    opened.setdefault(k, t)
                if w.rule == "patrol_gap":
                    gap_by_tick.setdefault(t, {})[w.area_id] = dict(w.summary)

    evaluate_until(START + 120 * MIN)
    fire = next(a for a in sim.anomalies if a["kind"] == "fire_cluster")
    surge = next(a for a in sim.anomalies if a["kind"] == "dispute_surge")

    def first_flag(street: str, subjects: tuple[str, ...]) -> int | None:
        times = [
            t
            for k, t in opened.items()
            if k.split(":")[1] == street and k.split(":")[-1] in subjects
        ]
        return min(times) if times else None

    t_fire = first_flag(fire["area_id"], ("fire", "smoke_fire"))
    assert t_fire is not None, opened
    assert t_fire <= fire["start_ms"] + 2 * TICK_MS
    t_surge = first_flag(surge["area_id"], ("dispute",))
    assert t_surge is not None, opened
    assert t_surge <= surge["start_ms"] + 2 * TICK_MS

    # The fire is one situation: the report and the camera alerts are linked, not doubled.
    ws = W.open_warnings(engine)
    fire_ws = ws.filter((pl.col("area_id") == fire["area_id"]) & pl.col("key").str.contains("fire"))
    assert fire_ws.height == 1, fire_ws
    (fw,) = W.warnings_from_frame(fire_ws)
    assert fw.rule == "fusion" and fw.level == "red"
    assert fire["incident_id"] in fw.evidence
    assert any(a.startswith("V") for a in fw.evidence)

    # Live counts: at the street, its district and the city.
    district = city.area(fire["area_id"])["district_id"]  # type: ignore[index]
    live = f"{settings.redis.prefix}:live"
    counts = {k.decode(): int(v) for k, v in rclient.hgetall(f"{live}:warn_count").items()}
    levels = {k.decode(): int(v) for k, v in rclient.hgetall(f"{live}:warn_level").items()}
    for area in (fire["area_id"], district, city.city_id):
        assert counts.get(f"{area}|red", 0) >= 1, area
        assert levels[area] == 4
    sdist = city.area(surge["area_id"])["district_id"]  # type: ignore[index]
    for area in (surge["area_id"], sdist, city.city_id):
        assert sum(n for k, n in counts.items() if k.startswith(f"{area}|")) >= 1, area
    # city counts are the sum over every open warning
    assert sum(n for k, n in counts.items() if k.startswith(f"{city.city_id}|")) == ws.height

    # Acknowledging stops escalation and is audited.
    assert W.act(engine, fw.warning_id, "acknowledge", "tester", now[0])
    assert not W.act(engine, fw.warning_id, "acknowledge", "tester", now[0])
    with pytest.raises(W.ActionError):
        W.act(engine, fw.warning_id, "dispatch", "tester", now[0])  # to whom?
    assert W.act(engine, fw.warning_id, "dispatch", "tester", now[0], assignee="消防站", note="去")
    with pytest.raises(W.ActionError):
        W.act(engine, fw.warning_id, "dismiss", "tester", now[0])  # why?
    assert W.act(engine, fw.warning_id, "dismiss", "tester", now[0], note="drill")
    assert not W.act(engine, fw.warning_id, "resolve", "tester", now[0])  # already closed
    acts = store.read_frame(
        engine, select(store.warning_actions).order_by(store.warning_actions.c.id)
    )
    mine = acts.filter(pl.col("warning_id") == fw.warning_id)["action"].to_list()
    assert mine[:1] == ["open"] and mine[-3:] == ["acknowledge", "dispatch", "dismiss"]
    audit = store.read_frame(engine, select(store.audit_log).order_by(store.audit_log.c.seq))
    assert audit.filter(pl.col("target") == fw.warning_id)["action"].to_list() == [
        "warning_acknowledge",
        "warning_dispatch",
        "warning_dismiss",
    ]
    row = W.warning_detail(engine, fw.warning_id)
    assert row is not None and row["status"] == "dismissed" and row["assigned_to"] == "消防站"
    # A dismissed warning does not bounce back while its condition persists.
    evaluate_until(now[0] + TICK_MS)
    reopened = W.open_warnings(engine).filter(pl.col("key") == fw.key)
    assert reopened.is_empty()

    # The patrol gap: the street's workers go silent at gap["start_ms"]; the grid gap is
    # detectable patrol_gap_hours later and must be flagged within two evaluations.
    gap = next(a for a in sim.anomalies if a["kind"] == "patrol_gap")
    detectable = gap["start_ms"] + int(settings.warnings.patrol_gap_hours * 60 * MIN)
    evaluate_until(detectable + 2 * TICK_MS)
    # The grids the gap empties: those whose own workers were on patrol that morning,
    # less any a patrol of a neighbouring street strayed into since (a visit is a visit).
    tp = store.read_frame(
        engine,
        select(
            store.track_points.c.worker_id, store.track_points.c.grid_id, store.track_points.c.ts_ms
        ),
    )
    on_duty = set(tp.filter(pl.col("ts_ms") < gap["start_ms"])["worker_id"])
    strayed = set(tp.filter(pl.col("ts_ms") > gap["start_ms"])["grid_id"])
    roster = sim.roster.join(city.grids.select("grid_id", "street_id"), on="grid_id")
    staffed = set(
        roster.filter((pl.col("street_id") == gap["area_id"]) & pl.col("worker_id").is_in(on_duty))[
            "grid_id"
        ]
    )
    emptied = staffed - strayed
    assert emptied, (staffed, strayed)

    def n_gap(t: int) -> int:
        return int(gap_by_tick.get(t, {}).get(gap["area_id"], {}).get("n_gap", 0))

    flagged = [t for t in sorted(gap_by_tick) if n_gap(t) >= len(emptied)]
    assert flagged, {(t - START) // MIN: n_gap(t) for t in sorted(gap_by_tick)}
    assert detectable - TICK_MS < flagged[0] <= detectable + 2 * TICK_MS, (
        flagged[0] - gap["start_ms"]
    ) / MIN
    # ... and it is the gap that is flagged: until then the street's grids were patrolled.
    assert all(n_gap(t) < len(emptied) for t in gap_by_tick if t < detectable)
    assert opened[f"patrol_gap:{gap['area_id']}"] <= detectable + 2 * TICK_MS

    # False warnings: over 4+ hours of a normal morning, streets without a scripted anomaly
    # raise no surge, no camera cluster and no report threshold other than a (real) fire.
    anomalous = {a["area_id"] for a in sim.anomalies}
    noise = sorted(
        k
        for k in opened
        if k.split(":")[0] in ("surge", "video_cluster", "threshold")
        and k.split(":")[1] not in anomalous
        and not (k.startswith("threshold:") and k.endswith(":fire"))
    )
    assert not noise, noise
    print({k: round(v, 4) for k, v in ticks[-1]["timings"].items()})


def test_incremental_inputs_match_a_full_read(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis
) -> None:
    """The runner's cached report, open-incident and visit frames equal a fresh engine's
    full read, late arrivals within the short windows included; rows later than that wait
    for the next full read (hourly)."""
    now = [START + 3 * 60 * MIN]
    clock = lambda: now[0] / 1000  # noqa: E731
    grids = city.grids.select("grid_id", "street_id", "district_id", "lon", "lat").rows()
    n = [0]
    reported: dict[int, dict[str, Any]] = {}  # incident number → its "reported" event

    def report(ts: int, track_ts: int | None = None) -> None:
        """A report at ts and a worker's ping at track_ts (default ts) in the same grid."""
        g, st, d, lon, lat = grids[n[0] % len(grids)]
        tts = ts if track_ts is None else track_ts
        n[0] += 1
        row = {
            "event_id": f"E{n[0]}",
            "incident_id": f"I{n[0]}",
            "step": "reported",
            "ts_ms": ts,
            "category": "sanitation",
            "severity": 2,
            "grid_id": g,
            "street_id": st,
            "district_id": d,
            "lon": lon,
            "lat": lat,
            "entry_id": f"{ts}-0",
        }
        track = {"worker_id": f"W{n[0]}", "slot": tts // MIN, "ts_ms": tts, "lon": lon}
        reported[n[0]] = row
        incident = {k: row[k] for k in ("incident_id", "category", "severity", "grid_id")}
        incident |= {"street_id": st, "status": "reported", "reported_ms": ts, "last_ms": ts}
        with engine.begin() as c:
            c.execute(store.incident_events.insert(), [row])
            c.execute(store.incidents.insert(), [incident | {"n_events": 1}])
            c.execute(store.track_points.insert(), [track | {"lat": lat, "grid_id": g}])

    def advance(i: int, step: str, ts: int) -> None:
        """Incident I<i> moves on to ``step`` at ts (its row as the report worker writes it)."""
        inc, ev = store.incidents, store.incident_events
        with engine.begin() as c:
            event = {"event_id": f"E{i}-{step}", "step": step, "ts_ms": ts, "entry_id": f"{ts}-1"}
            c.execute(ev.insert(), [reported[i] | event])
            c.execute(
                inc.update()
                .where(inc.c.incident_id == f"I{i}")
                .values(status=step, last_ms=ts, n_events=inc.c.n_events + 1)
            )

    def frames(e: W.WarningEngine) -> tuple[pl.DataFrame, ...]:
        got = e.read_inputs(now[0])
        return (
            got.reports.sort("event_id"),
            got.visits.sort("grid_id"),
            got.incidents.sort("incident_id"),
        )

    def same(a: tuple[pl.DataFrame, ...], b: tuple[pl.DataFrame, ...]) -> bool:
        return all(x.equals(y) for x, y in zip(a, b, strict=True))

    eng = W.WarningEngine(live_settings, city, rclient, engine, clock=clock)
    for k in range(40):  # two days back … now
        report(now[0] - k * 72 * MIN)
    for step in range(6):
        now[0] += 2 * MIN
        report(now[0] - MIN)  # on time
        # late, but within the short windows (reports) and the visits' overlap (pings)
        report(now[0] - 25 * MIN, track_ts=now[0] - 8 * MIN)
        # incidents move on: one is accepted, one closed on time, one closed a little late
        advance(1 + 3 * step, "accepted", now[0] - MIN)
        advance(2 + 3 * step, "closed", now[0] - MIN)
        advance(3 + 3 * step, "closed", now[0] - 8 * MIN)
        mine, full = frames(eng), frames(W.WarningEngine(live_settings, city, rclient, engine))
        assert same(mine, full), step
    open_ids = mine[2]["incident_id"].to_list()
    assert "I1" in open_ids and "I2" not in open_ids and "I3" not in open_ids
    assert "accepted" in mine[2]["status"].to_list()
    report(now[0] - 3 * 60 * MIN)  # later than every short window: recurrence only
    advance(30, "closed", now[0] - 60 * MIN)  # a close later than the overlap
    now[0] += 2 * MIN
    mine, full = frames(eng), frames(W.WarningEngine(live_settings, city, rclient, engine))
    assert mine[0].height == full[0].height - 1
    assert "I30" in mine[2]["incident_id"].to_list()
    assert "I30" not in full[2]["incident_id"].to_list()
    now[0] += W.FULL_READ_EVERY_MS
    mine, full = frames(eng), frames(W.WarningEngine(live_settings, city, rclient, engine))
    assert same(mine, full)


def test_slow_rules_carry_their_findings_between_evaluations(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """recurrence (a condition over days) runs every ``recurrence_every_s``; in between its
    last findings carry over, so its warning stays open instead of clearing and flapping."""
    street = str(city.grids["street_id"][0])
    calls: list[int] = []

    def recurring(inputs: W.RuleInputs, cfg: W.RuleConfig, now_ms: int) -> list[W.Finding]:
        calls.append(now_ms)
        key = f"recurrence:{street}:dispute"
        return [W.Finding("recurrence", street, "yellow", key, ("I1",), {"category": "dispute"})]

    monkeypatch.setitem(W.RULES, "recurrence", recurring)
    now = [START]
    eng = W.WarningEngine(live_settings, city, rclient, engine, clock=lambda: now[0] / 1000)
    every = live_settings.warnings.recurrence_every_s * 1000
    assert every > 20_000
    seen = []
    for dt in (0, 10_000, 20_000, every - 1, every, every + 10_000):
        now[0] = START + dt
        res = eng.tick()
        seen.append(("recurrence" in res["timings"], res["cleared"]))
        (w,) = W.warnings_from_frame(
            W.open_warnings(engine).filter(pl.col("key") == f"recurrence:{street}:dispute")
        )
        assert w.last_seen_ms == now[0], dt  # seen this tick, evaluated or carried
    assert seen == [(True, 0), (False, 0), (False, 0), (False, 0), (True, 0), (False, 0)]
    assert calls == [START, START + every]
    assert "recurrence" in eng.tick(every_rule=True)["timings"]  # on demand: every rule
    assert len(calls) == 3
