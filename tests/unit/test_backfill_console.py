"""The backfill's console line: the time left is wall-clock time from the pace so far,
worked out here from the inputs (never the simulated span left, which read as days)."""

from __future__ import annotations

import io

import pytest

from pipelines.city.simulator.backfill import BackfillProgress
from pipelines.cli.backfill import ProgressBar, time_left

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("fraction", "elapsed_s", "expected"),
    [
        (0.5, 60.0, "~60 s left"),  # half done in a minute: a minute more
        (0.25, 60.0, "~3 min left"),  # a quarter in a minute: three more
        (0.9, 9.0, "~1 s left"),
        (0.1, 30.0, "~4 min left"),  # 270 s
        (0.005, 10.0, "estimating…"),  # too early to tell
        (0.5, 1.0, "estimating…"),
        (1.0, 300.0, "finishing"),  # published; the pipelines drain
    ],
)
def test_time_left(fraction: float, elapsed_s: float, expected: str) -> None:
    assert time_left(fraction, elapsed_s) == expected


def test_the_bar_prints_a_line_per_tenth_off_a_terminal_with_the_time_left() -> None:
    out = io.StringIO()
    bar = ProgressBar(out=out)
    start = 1_800_000_000_000
    for i in range(0, 101, 5):  # 7 days at 1 simulated day per 10 s of wall clock
        sim = start + i * 7 * DAY_MS // 100
        bar(BackfillProgress(start, start + 7 * DAY_MS, sim, i * 1000, 0, i * 0.7))
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 0 %, 10 %, … 100 %
    assert "estimating…" in lines[0] and "finishing" in lines[-1]
    assert "~63 s left" in lines[1]  # 10 % in 7 s: 63 s more
    assert not any("to go" in line or "d " in line.split("·")[0] for line in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_a_stopped_bar_says_how_far_it_got_on_a_line_of_its_own(terminal: bool) -> None:
    out = _Terminal() if terminal else io.StringIO()
    bar = ProgressBar(out=out)
    start = 1_800_000_000_000
    bar(BackfillProgress(start, start + 7 * DAY_MS, start + 7 * DAY_MS * 37 // 100, 500, 0, 3.0))
    bar.stopped()
    last = out.getvalue().split("\r")[-1].splitlines()
    # the redrawn line is ended first: the message is a line of its own
    assert last[-1] == "  backfill  stopped at 37%; the next start resumes it"
    assert "37.0%" in last[0] and len(last) == 2
