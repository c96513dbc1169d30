"""The CI's faketime runs are what they claim to be: ``.ci/run``'s clock settings are a
weekend night and the last minute before a new day and ISO week in Asia/Shanghai, faketime
reaches Python, the embedded redis-server child and SQLite alike, and a test that once
failed at night passes at a faked weekend night."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.settings import load_settings
from tests.clock import MOMENTS, TZ, on_shift

pytestmark = [pytest.mark.integration, pytest.mark.clock]

ROOT = Path(__file__).resolve().parents[2]
CI_RUN = ROOT / ".ci" / "run"
FAKETIME = shutil.which("faketime")
needs_faketime = pytest.mark.skipif(
    not FAKETIME, reason="faketime not installed: apt-get install faketime"
)


def specs() -> dict[str, str]:
    """``FAKE_*='@YYYY-MM-DD HH:MM:SS'`` settings of ``.ci/run`` (read as UTC there)."""
    return dict(re.findall(r"^(FAKE_\w+)='(@[\d-]+ [\d:]+)'", CI_RUN.read_text(), re.M))


def shanghai(spec: str) -> datetime:
    return datetime.fromisoformat(spec.lstrip("@")).replace(tzinfo=UTC).astimezone(TZ)


def faked_env() -> dict[str, str]:
    """As .ci/run runs faketime: its settings read as UTC."""
    return {**os.environ, "TZ": "UTC", "PYTHONPATH": str(ROOT)}


def test_the_ci_fakes_a_weekend_night_and_the_minute_before_a_new_week() -> None:
    w = load_settings(environ={}).warnings
    s = specs()
    night = shanghai(s["FAKE_WEEKEND_NIGHT"])
    assert night.isoweekday() >= 6 and night.hour < 6
    assert not on_shift(int(night.timestamp() * 1000), w.work_start_h, w.work_end_h)
    late = shanghai(s["FAKE_ACROSS_MIDNIGHT"])
    next_day = (late + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    assert timedelta(0) < next_day - late <= timedelta(minutes=2)  # the run crosses it
    assert next_day.isocalendar()[:2] != late.isocalendar()[:2]  # into a new ISO week
    text = CI_RUN.read_text()
    assert 'TZ=UTC faketime -f "$spec"' in text and "-m clock" in text
    assert "apt-get install -y -qq faketime" in text


PROBE = """
import json, sqlite3, sys, tempfile, time
from pathlib import Path
import redis
from pipelines.embedded import EmbeddedRedis
d = Path(tempfile.mkdtemp())
server = EmbeddedRedis(d).start()
try:
    seconds, _ = redis.Redis.from_url(server.url).time()
    (lite,) = sqlite3.connect(d / "x.db").execute(
        "select cast(strftime('%s', 'now') as integer)").fetchone()
    print(json.dumps({"python": time.time(), "redis": seconds, "sqlite": lite}))
finally:
    server.stop()
"""


@needs_faketime
def test_faketime_reaches_the_redis_child_and_sqlite() -> None:
    spec = specs()["FAKE_WEEKEND_NIGHT"]
    out = subprocess.run(
        [str(FAKETIME), "-f", spec, sys.executable, "-c", PROBE],
        env=faked_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    target = shanghai(spec).timestamp()
    for part, t in seen.items():
        assert 0 <= float(t) - target < 120, (part, t, target)


@needs_faketime
@pytest.mark.system  # a child pytest under faketime: the system tier (make test-system)
def test_the_refresh_test_passes_at_a_faked_weekend_night() -> None:
    """The panorama refresh test (it once found no worker markers at night) at its weekday
    daytime moment, in a child pytest whose every clock says Saturday 03:00 in Asia/Shanghai:
    with the clock passed in, what the machine's clock says changes nothing."""
    spec = specs()["FAKE_WEEKEND_NIGHT"]
    test = (
        "tests/integration/test_dashboard.py::test_refresh_callback_as_a_plain_function"
        f"[{MOMENTS[0].name}]"
    )
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    out = subprocess.run(
        [str(FAKETIME), "-f", spec, sys.executable, *pytest_args],
        env=faked_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\b1 passed\b", out.stdout), out.stdout[-1000:]
