"""Assessment periods: a day, an ISO week, a month or a custom range, in the city's time zone
(``2026-10-05``, ``2026-W44``, ``2026-10``, ``2026-10-01..2026-10-15``), and the period
arithmetic the metrics need (elapsed days, shift slots begun by an as-of time)."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000


DAY_MS = 86_400_000


@dataclass(frozen=True)
class Period:
    """A half-open local-time interval ``[start, end)``, stored as UTC milliseconds."""

    key: str  # 2026-10 · 2026-W44 · 2026-10-05 · 2026-10-01..2026-10-15
    kind: str  # month / week / day / range
    first: date  # first local day
    last: date  # last local day (inclusive)
    tz: str = "Asia/Shanghai"

    @property
    def start_ms(self) -> int:
        return _local_ms(self.first, self.tz)

    @property
    def end_ms(self) -> int:
        return _local_ms(self.last + timedelta(days=1), self.tz)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def label(self, lang: str = "zh-CN") -> str:
        f, la = self.first, self.last
        if self.kind == "month":
            return f"{f.year}年{f.month}月" if lang != "en" else f"{f:%B %Y}"
        if self.kind == "week":
            y, w, _ = f.isocalendar()
            span = f"{f:%m-%d}–{la:%m-%d}"
            return f"{y}年第{w}周（{span}）" if lang != "en" else f"Week {w}, {y} ({span})"
        if self.kind == "day":
            return f"{f.year}年{f.month:02d}月{f.day:02d}日" if lang != "en" else f.isoformat()
        return f"{f.isoformat()} 至 {la.isoformat()}" if lang != "en" else f"{f} to {la}"

    def shift(self, n: int) -> Period:
        """The period ``n`` steps later (negative: earlier), of the same kind and length."""
        if self.kind == "month":
            m = self.first.year * 12 + self.first.month - 1 + n
            return month_period(m // 12, m % 12 + 1, self.tz)
        step = {"week": 7, "day": 1}.get(self.kind, self.days) * n
        first, last = self.first + timedelta(days=step), self.last + timedelta(days=step)
        if self.kind == "week":
            y, w, _ = first.isocalendar()
            return Period(f"{y}-W{w:02d}", "week", first, last, self.tz)
        if self.kind == "day":
            return Period(first.isoformat(), "day", first, first, self.tz)
        return Period(f"{first}..{last}", "range", first, last, self.tz)

    def previous(self) -> Period:
        return self.shift(-1)

    def recent(self, n: int) -> list[Period]:
        """The ``n`` periods ending with this one, oldest first."""
        return [self.shift(i) for i in range(-(n - 1), 1)]


def _local_ms(d: date, tz: str) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def month_period(year: int, month: int, tz: str = "Asia/Shanghai") -> Period:
    last = calendar.monthrange(year, month)[1]
    return Period(f"{year}-{month:02d}", "month", date(year, month, 1), date(year, month, last), tz)


class PeriodError(ValueError):
    pass


def parse_period(text: str, tz: str = "Asia/Shanghai") -> Period:
    """``2026-10`` (month), ``2026-W44`` (ISO week), ``2026-10-05`` (day),
    ``2026-10-01..2026-10-15`` (custom range, both days included)."""
    s = (text or "").strip()
    try:
        if m := re.fullmatch(r"(\d{4})-(\d{2})", s):
            return month_period(int(m[1]), int(m[2]), tz)
        if m := re.fullmatch(r"(\d{4})-W(\d{1,2})", s, flags=re.IGNORECASE):
            first = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            return Period(f"{m[1]}-W{int(m[2]):02d}", "week", first, first + timedelta(6), tz)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            d = date.fromisoformat(s)
            return Period(d.isoformat(), "day", d, d, tz)
        if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", s):
            a, b = date.fromisoformat(m[1]), date.fromisoformat(m[2])
            if b < a:
                raise PeriodError(f"range ends before it starts: {s}")
            if (b - a).days > 366:
                raise PeriodError(f"range longer than a year: {s}")
            return Period(f"{a}..{b}", "range", a, b, tz)
    except ValueError as exc:
        if isinstance(exc, PeriodError):
            raise
        raise PeriodError(f"not a valid period: {s!r} ({exc})") from None
    raise PeriodError(
        f"not a period: {s!r} (use 2026-10, 2026-W44, 2026-10-05 or 2026-10-01..2026-10-15)"
    )


def current_period(kind: str, now_ms: int, tz: str = "Asia/Shanghai") -> Period:
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).date()
    if kind == "month":
        return month_period(today.year, today.month, tz)
    if kind == "week":
        y, w, _ = today.isocalendar()
        return parse_period(f"{y}-W{w:02d}", tz)
    return parse_period(today.isoformat(), tz)


def tz_offset_ms(period: Period) -> int:
    off = datetime.fromtimestamp(period.start_ms / 1000, ZoneInfo(period.tz)).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def local_day(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def elapsed_days(period: Period, as_of_ms: int, since_ms: int | None = None) -> int:
    """Local days of the period that have begun by ``as_of`` — from the day of ``since_ms``
    (when positions began to arrive) if that is later: days before any position came in
    cannot have been patrolled on the record."""
    if as_of_ms <= period.start_ms:
        return 0
    first = period.first
    if since_ms is not None:
        first = max(first, local_day(since_ms, period.tz))
    last = min(period.last, local_day(as_of_ms - 1, period.tz))
    return max(0, (last - first).days + 1)


def shift_slots(
    period: Period,
    as_of_ms: int,
    start_h: int,
    end_h: int,
    slot_min: int,
    since_ms: int | None = None,
) -> int:
    """Shift slots of the period that have begun by ``as_of`` (per worker) and have not
    ended before ``since_ms`` (when positions began to arrive)."""
    slot = slot_min * 60_000
    per_day = [(h0, h0 + slot) for h0 in range(start_h * HOUR_MS, end_h * HOUR_MS, slot)]
    after = since_ms if since_ms is not None else period.start_ms
    n = 0
    for d in range(period.days):
        day0 = _local_ms(period.first + timedelta(days=d), period.tz)
        n += sum(1 for a, b in per_day if day0 + a < as_of_ms and day0 + b > after)
    return n
