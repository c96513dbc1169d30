"""Time-sensitive rules at every calendar moment (``tests/clock.py``): the local day and its
midnight, the ISO week and the month, the working time that gates the shift rules and the
online-rate slots, and the track-replay windows. Each test runs once per moment; what it
expects is written from the calendar (``datetime`` in Asia/Shanghai) and the settings, not
taken from the code under test."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import polars as pl
import pytest

from dashboard.pages.panorama import queries as PQ
from dashboard.pages.work import queries as WQ
from pipelines import assessment as S
from pipelines import warnings as W
from pipelines.settings import load_settings
from pipelines.spine import aggregate as agg
from tests.clock import MOMENTS, TZ, Moment, local, on_shift

pytestmark = pytest.mark.clock

TZ_NAME = "Asia/Shanghai"
MIN = 60_000
HOUR = 3_600_000
CFG = W.RuleConfig()
START_H, END_H = CFG.work_start_h, CFG.work_end_h


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def test_the_calendar_covers_nights_weekends_and_boundaries() -> None:
    """The moments every time-sensitive test runs at: a weekday and a weekend day each on
    and off shift, and a moment whose last hour lies in another day, ISO week and month."""
    kinds = {
        (m.local.isoweekday() >= 6, on_shift(m.ms, START_H, END_H), m.local.hour < 6)
        for m in MOMENTS
    }
    assert (False, True, False) in kinds  # a weekday on the day shift
    assert (False, False, True) in kinds  # a weekday night
    assert (True, False, True) in kinds  # a weekend night
    assert (True, True, False) in kinds  # a weekend noon
    crossing = [
        m
        for m in MOMENTS
        if (a := local(m.ms - HOUR)).date() != m.local.date()
        and a.isocalendar()[:2] != m.local.isocalendar()[:2]
        and a.month != m.local.month
    ]
    assert crossing, "a moment just past midnight that starts a new ISO week and month"


def test_today_starts_at_local_midnight(moment: Moment) -> None:
    t = moment.local
    day0 = ms(midnight(t))
    assert PQ.local_day(moment.ms, TZ_NAME) == t.strftime("%Y%m%d")
    assert agg.local_day(moment.ms, TZ_NAME) == t.strftime("%Y%m%d")  # the pipeline's key
    assert WQ.day_start_ms(moment.ms, TZ_NAME) == day0
    assert WQ.local_date(moment.ms, TZ_NAME) == t.date()
    yesterday = (t.date() - timedelta(days=1)).strftime("%Y%m%d")
    assert PQ.local_day(day0 - 1, TZ_NAME) == agg.local_day(day0 - 1, TZ_NAME) == yesterday


@pytest.mark.parametrize("kind", ["day", "week", "month"])
def test_the_current_period_holds_the_moment(moment: Moment, kind: str) -> None:
    t = moment.local
    iso = t.isocalendar()
    first = {
        "day": t.date(),
        "week": t.date() - timedelta(days=iso.weekday - 1),
        "month": t.date().replace(day=1),
    }[kind]
    key = {
        "day": t.date().isoformat(),
        "week": f"{iso.year}-W{iso.week:02d}",
        "month": t.strftime("%Y-%m"),
    }[kind]
    p = S.current_period(kind, moment.ms, TZ_NAME)
    assert (p.key, p.first) == (key, first)
    assert p.start_ms == ms(datetime(first.year, first.month, first.day, tzinfo=TZ))
    assert p.start_ms <= moment.ms < p.end_ms and p.previous().end_ms == p.start_ms
    # an hour earlier is in the previous period exactly when it is on another day / in
    # another ISO week / in another month
    before = local(moment.ms - HOUR)
    other = {
        "day": before.date() != t.date(),
        "week": before.isocalendar()[:2] != iso[:2],
        "month": (before.year, before.month) != (t.year, t.month),
    }[kind]
    earlier = S.current_period(kind, moment.ms - HOUR, TZ_NAME)
    assert earlier == (p.previous() if other else p)


@pytest.mark.parametrize(
    ("at", "key", "year_before"),
    [
        (datetime(2027, 1, 1, 0, 1, tzinfo=TZ), "2026-W53", "2026-W53"),  # a new year, same week
        (datetime(2027, 1, 4, 0, 1, tzinfo=TZ), "2027-W01", "2026-W53"),  # the new ISO year
    ],
)
def test_the_iso_week_across_the_new_year(at: datetime, key: str, year_before: str) -> None:
    p = S.current_period("week", ms(at), TZ_NAME)
    assert p.key == key and p.start_ms <= ms(at) < p.end_ms
    assert S.current_period("week", ms(at) - HOUR, TZ_NAME).key == year_before
    assert S.parse_period(key, TZ_NAME) == p


# ------------------------------------------------------------------ working time


def instants(moment: Moment) -> list[int]:
    """The moment, and its day's edges of working time (a minute either side)."""
    day0 = midnight(moment.local)
    edges = [day0 + timedelta(hours=h, minutes=d) for h in (START_H, END_H) for d in (-1, 0)]
    return [moment.ms, *(ms(e) for e in edges)]


def _workers(now: int, seen_min: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"worker_id": ["w1"], "grid_id": ["g1"], "street_id": ["s1"]}
        | {"last_seen_ms": [now - seen_min * MIN]},
        schema=W.WORKERS_SCHEMA,
    )


AREAS = W.Areas(
    grids=pl.DataFrame(
        {"grid_id": ["g1"], "street_id": ["s1"], "district_id": ["d1"], "city_id": ["c"]}
    ),
    parent={"g1": "s1", "s1": "d1", "d1": "c", "c": None},
)


def test_the_shift_rules_run_in_working_time_only(moment: Moment) -> None:
    """patrol_gap (a grid unvisited for patrol_gap_hours of working time; all of a street
    offline), left_grid and idle (online workers) flag only in working time, at any moment
    and on any weekday."""
    for now in instants(moment):
        on = on_shift(now, START_H, END_H)
        t = local(now)
        worked_h = (t - midnight(t)) / timedelta(hours=1) - START_H
        never_visited = pl.DataFrame(
            {"grid_id": ["g1"], "last_ms": [now - 30 * HOUR]}, schema=W.VISITS_SCHEMA
        )
        online = W.RuleInputs(areas=AREAS, workers=_workers(now, 1), visits=never_visited)
        offline = W.RuleInputs(areas=AREAS, workers=_workers(now, 60), visits=never_visited)
        gap = on and worked_h >= CFG.patrol_gap_hours
        got = {f.key: f.level for f in W.rule_patrol_gap(online, CFG, now)}
        assert got == ({"patrol_gap:s1": "blue"} if gap else {}), t
        got = {f.key: f.level for f in W.rule_patrol_gap(offline, CFG, now)}
        assert got == ({"patrol_gap:s1": "yellow"} if on else {}), t
        away = pl.DataFrame(
            {"worker_id": ["w1"], "n_points": [30], "n_own": [0]}
            | {"first_ms": [now - CFG.left_grid_minutes * MIN], "last_ms": [now - MIN]},
            schema=W.AWAY_SCHEMA,
        )
        got = W.rule_left_grid(
            W.RuleInputs(areas=AREAS, workers=_workers(now, 1), away=away), CFG, now
        )
        assert [f.key for f in got] == (["left_grid:s1"] if on else []), t
        still = pl.DataFrame(
            {"worker_id": ["w1"], "n_points": [60]}
            | {"first_ms": [now - CFG.idle_minutes * MIN], "last_ms": [now]}
            | {"lon_min": [118.8], "lon_max": [118.8], "lat_min": [32.0], "lat_max": [32.0]},
            schema=W.SPREAD_SCHEMA,
        )
        got = W.rule_idle(
            W.RuleInputs(areas=AREAS, workers=_workers(now, 1), spread=still), CFG, now
        )
        assert [f.key for f in got] == (["idle:s1"] if on else []), t


@pytest.mark.parametrize("kind", ["day", "week"])
def test_online_slots_are_the_working_time_begun(moment: Moment, kind: str) -> None:
    """The online-rate metric's denominator: shift slots of the period begun by now."""
    slot = load_settings(environ={}).assessment.online_slot_minutes
    per_day = (END_H - START_H) * 60 // slot
    for now in instants(moment):
        t = local(now)
        minutes = (t - midnight(t)) / timedelta(minutes=1)
        today = math.ceil(max(0.0, min(minutes, END_H * 60) - START_H * 60) / slot)
        p = S.current_period(kind, now, TZ_NAME)
        days_before = (t.date() - p.first).days
        expected = days_before * per_day + today
        assert S.shift_slots(p, now, START_H, END_H, slot) == expected, t


# ------------------------------------------------------------------ replay windows


def test_replay_windows_at_the_moment(moment: Moment) -> None:
    now, t = moment.ms, moment.local
    retention = load_settings(environ={}).privacy.track_retention_days
    win = dict(now_ms=now, tz=TZ_NAME, retention_days=retention)
    assert WQ.replay_window(2, **win).since_ms == now - 2 * HOUR
    assert WQ.replay_window(2, **win).until_ms == now
    today, h = t.date(), t.hour
    # today from midnight to the coming hour: cut at now
    w = WQ.replay_window(WQ.DAY, today.isoformat(), 0, h + 1, **win)
    assert (w.since_ms, w.until_ms) == (ms(midnight(t)), now)
    # yesterday's last two hours, whole (the end is exclusive)
    y = today - timedelta(days=1)
    w = WQ.replay_window(WQ.DAY, y.isoformat(), 22, 24, **win)
    assert w.since_ms == ms(midnight(t) - timedelta(hours=2))
    assert w.until_ms == ms(midnight(t)) - 1
    # an hour that has not begun yet (when today has one left), and past the retention
    if h + 2 <= 24:
        with pytest.raises(WQ.WindowError) as err:
            WQ.replay_window(WQ.DAY, today.isoformat(), h + 1, h + 2, **win)
        assert err.value.key == "work.replay.err.future"
    old = today - timedelta(days=retention + 1)
    with pytest.raises(WQ.WindowError) as err:
        WQ.replay_window(WQ.DAY, old.isoformat(), 8, 12, **win)
    assert err.value.key == "work.replay.err.retention"
