"""Named moments of the calendar, and clocks to pass in.

Whatever depends on the time of day, the shift (``warnings.work_start_h..work_end_h``), the
weekday, the local day or the ISO week is tested at these moments (Asia/Shanghai), never at
whatever the machine's clock says. A test asks for the ``moment`` fixture
(``tests/conftest.py``) and runs once per moment; it passes a :class:`Clock` set to that
moment into everything that reads the time (``create_app(clock=…)``, ``Backend.clock``,
``make_worker(clock=…)``, ``ClockJob``, the simulator's ``start_ms``) and derives what it
expects from the rules for that moment.

``.ci/run`` also runs the tests marked ``clock`` under ``faketime`` at a weekend night and
across midnight, which catches a test or a code path that still reads the wall clock.
Only those: libfaketime fakes the monotonic clock too, and a timed wait on it
(``threading.Event.wait(t)``, as the lifeline watch and the backfill's threads do) never
returns there (``FAKETIME_DONT_FAKE_MONOTONIC=1`` instead breaks ``time.sleep``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Moment:
    """A named instant; ``local`` is its wall time in Asia/Shanghai."""

    name: str
    local: datetime
    why: str

    @property
    def ms(self) -> int:
        return int(self.local.timestamp() * 1000)

    def __str__(self) -> str:
        return self.name


def _at(y: int, mo: int, d: int, h: int, mi: int) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TZ)


MOMENTS: tuple[Moment, ...] = (
    Moment("thu-10:00", _at(2026, 12, 3, 10, 0), "a weekday on the day shift"),
    Moment("fri-03:00", _at(2026, 12, 4, 3, 0), "a weekday night: only night shifts"),
    Moment("sat-03:00", _at(2026, 12, 5, 3, 0), "a weekend night"),
    Moment("sat-12:00", _at(2026, 12, 5, 12, 0), "a weekend noon"),
    # 2027-02-01 is a Monday: the minute after local midnight starts a new day, ISO week
    # and month at once, so whatever happened in the hour before belongs to yesterday,
    # last week and last month.
    Moment("mon-00:01", _at(2027, 2, 1, 0, 1), "just past midnight, a new ISO week and month"),
)
BY_NAME = {m.name: m for m in MOMENTS}


def named(name: str) -> Moment:
    """A moment by name (``KeyError`` lists the known ones)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown moment {name!r}; known: {', '.join(BY_NAME)}") from None


class Clock:
    """A clock to pass in (``clock()`` → epoch seconds, like ``time.time``).

    Frozen at ``ms`` until moved with :meth:`set` / :meth:`advance`; with ``running=True``
    it starts at ``ms`` and then runs at the machine's pace (for a live server whose
    refresh ticks must pass), but still from the chosen moment, not from the wall clock.
    """

    def __init__(self, ms: int, *, running: bool = False) -> None:
        self._ms = int(ms)
        self._t0 = time.monotonic() if running else None

    def __call__(self) -> float:
        return self.now_ms / 1000

    @property
    def now_ms(self) -> int:
        if self._t0 is None:
            return self._ms
        return self._ms + int((time.monotonic() - self._t0) * 1000)

    def set(self, ms: int) -> None:
        self._ms = int(ms)
        if self._t0 is not None:
            self._t0 = time.monotonic()

    def advance(self, ms: int) -> None:
        self.set(self.now_ms + int(ms))

    def local(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, TZ)


def local(ms: int) -> datetime:
    """Epoch milliseconds as Asia/Shanghai wall time."""
    return datetime.fromtimestamp(ms / 1000, TZ)


def on_shift(ms: int, start_h: int, end_h: int) -> bool:
    """Whether ``ms`` falls in the working time ``[start_h, end_h)`` of its local day (the
    rule written out independently of the code under test)."""
    t = local(ms)
    since_midnight = t - t.replace(hour=0, minute=0, second=0, microsecond=0)
    return timedelta(hours=start_h) <= since_midnight < timedelta(hours=end_h)


def clear_of_midnight(now_ms: int, hours: float = 3.0) -> int:
    """``now_ms``, or the minute before the local midnight when fewer than ``hours`` hours
    of the local day have passed: a test whose events lie up to ``hours`` before the
    instant it returns has them all on that instant's local day, at any hour it runs (and
    still in the recent past, which the pipelines' age checks against the real clock want).
    """
    t = local(now_ms)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if t - midnight >= timedelta(hours=hours):
        return now_ms
    return int(midnight.timestamp() * 1000) - 60_000
