"""The `wangge` command as a user runs it: run + Ctrl-C, simulate to/from JSONL, status,
rebuild-live; and the poison-entry path."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import Engine

from pipelines.city.geography import GridIndex, demo_city
from pipelines.settings import child_environ
from pipelines.spine import store
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import ensure_group, publish
from tests.conftest import settings_for

pytestmark = pytest.mark.integration


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A small city under ``tmp``; no first-start backfill unless ``extra`` asks for one."""
    return child_environ(
        **{
            "WANGGE_RUN_VAR_DIR": str(tmp / "var"),
            "WANGGE_REDIS_EMBEDDED_DIR": str(tmp / "redis"),
            "WANGGE_GEO_GRIDS": "300",
            "WANGGE_GEO_CACHE_DIR": str(tmp / "geo"),
            "WANGGE_SIMULATE_BACKFILL_DAYS": "0",
            **extra,
        }
    )


def wangge(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_until(
    env: dict[str, str], args: list[str], pattern: str, timeout_s: float
) -> tuple[subprocess.Popen[str], list[str], str]:
    """Start ``wangge run`` and read its console until ``pattern`` matches a line: the
    process, the lines so far and the pattern's first group (asserted found)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found = None
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline and found is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(pattern, line):
            found = m.group(1)
    assert found, "".join(lines)
    return proc, lines, found


@pytest.mark.system
def test_run_prints_the_url_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        REDIS_URL="",
        DATABASE_URL="",
        WANGGE_PIPELINES_TICK_S="1",
        WANGGE_SIMULATE_WORKERS="300",
        WANGGE_SIMULATE_CAMERAS="30",
    )
    env.pop("REDIS_URL")
    env.pop("DATABASE_URL")
    proc, _lines, url = run_until(env, ["--port", "0"], r"Dashboard: (http://\S+)", 120)
    me = psutil.Process(proc.pid)
    time.sleep(4)  # workers, simulator and the clock job are running
    family = me.children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in family)
    assert "redis-server" in names and names.count("pipelines.cli worker") == 3
    import requests

    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(url + "healthz", timeout=10).json() == {"redis": True}
    # the live-push server is one more supervised child, ready on the run's Redis
    assert "dashboard.push" in names
    push = next(
        m.group(1) for line in _lines if (m := re.search(r"push\s+(http://\S+/)push/", line))
    )
    assert requests.get(push + "push/readyz", timeout=10).status_code == 200
    page = requests.get(url + "login", timeout=10)
    assert "connect-src 'self' http://127.0.0.1:" in page.headers["Content-Security-Policy"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped." in out
    _gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    assert (tmp_path / "var" / "wangge.db").exists()


def test_simulate_jsonl_replay_status_and_rebuild(
    redis_url: str, prefix: str, db_url: Any, tmp_path: Path
) -> None:
    url, schema = db_url
    env = cli_env(
        tmp_path,
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_DATABASE_SCHEMA=schema or "",
    )
    jsonl = tmp_path / "feed.jsonl"
    res = wangge("simulate", "--out", str(jsonl), "--events", "3000", "--seed", "3", env=env)
    assert res.returncode == 0, res.stderr
    m = re.search(r"wrote (\d+) events", res.stdout)
    assert m, res.stdout
    written = int(m.group(1))
    assert 2500 <= written <= 3000 and len(jsonl.read_text().splitlines()) == written
    res = wangge("simulate", "--replay", str(jsonl), env=env)
    assert res.returncode == 0 and f"replayed {written} events" in res.stdout, res.stderr
    r = redis.Redis.from_url(redis_url)
    total = sum(r.xlen(f"{prefix}:{f}") for f in ("reports", "locations", "video"))
    assert total == written
    res = wangge("status", env=env)
    assert res.returncode == 0 and "reports" in res.stdout, res.stderr
    res = wangge("geo", "info", env=env)
    assert re.search(r"grid\s+300 areas", res.stdout), res.stdout
    res = wangge("rebuild-live", env=env)
    assert res.returncode == 0 and "rebuilt live state" in res.stdout, res.stderr
    res = wangge("backfill-summaries", env=env)  # nothing to do: no incidents persisted
    assert res.returncode == 0 and "summarised 0 incidents" in res.stdout, res.stderr
    r.close()


def test_geo_import_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"properties": {"adcode": 320102, "name": "玄武区"}, "geometry": '
        '{"type": "Polygon", "coordinates": [[[0,0],[1,1],[1,0],[0,1],[0,0]]]}}]}'
    )
    res = wangge("geo", "import", str(bad), "--out", str(tmp_path / "out"), env=cli_env(tmp_path))
    assert res.returncode == 2
    assert "import failed" in res.stderr and "feature #0" in res.stderr
    assert not (tmp_path / "out" / "city.parquet").exists()


def test_poison_entry_is_dead_lettered(
    redis_url: str, prefix: str, db_url: Any, engine: Engine, tmp_path: Path
) -> None:
    settings = settings_for(
        redis_url, prefix, db_url, tmp_path, streams={"max_deliveries": 2, "claim_idle_ms": 0}
    )
    city = demo_city(2026, n_grids=150)
    r = redis.Redis.from_url(redis_url)
    key = f"{prefix}:locations"
    ensure_group(r, key, "pipelines")
    publish(r, key, [b'{"worker_id": "W1"}'])
    r.xreadgroup("pipelines", "crashy", {key: ">"}, count=10)  # delivered, never acked
    for _ in range(2):  # redelivered to consumers that keep dying
        r.xautoclaim(key, "pipelines", "crashy", min_idle_time=0, start_id="0-0")
    w = make_worker("locations", settings, city, GridIndex(city), r, engine, "survivor")
    res = w.step()
    assert res.reasons == {"max_deliveries": 1} and res.acked == 1
    dl = r.xrange(f"{prefix}:deadletter")
    assert [f[b"reason"] for _, f in dl] == [b"max_deliveries"]
    assert r.xpending(key, "pipelines")["pending"] == 0
    assert store.table_count(engine, store.dead_letters) == 1
    r.close()
