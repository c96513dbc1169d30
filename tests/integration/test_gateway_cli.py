"""The gateway as an operator runs it: `wangge gateway credentials add|list|revoke`, and
`wangge run` starting the gateway (and an embedded MQTT broker) beside the dashboard,
printing its address, the simulator driving it, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from pipelines.city.geography import load_city
from pipelines.settings import GeoSettings
from pipelines.spine import store
from tests.integration.test_cli import cli_env, run_until, wangge

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_credentials_add_list_revoke(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}", REDIS_URL="")
    city = load_city(GeoSettings(grids=300, cache_dir=str(tmp_path / "geo")))
    engine = store.make_engine(env["DATABASE_URL"])
    store.create_schema(engine)
    g = city.grids["grid_id"][0]
    store.replace_table(
        engine,
        store.workers,
        [{"worker_id": "W1", "name": "王伟", "type": "full_time", "grid_id": g}],
    )
    engine.dispose()
    res = wangge(
        "gateway",
        "credentials",
        "add",
        "phone",
        "--name",
        "王伟的手机",
        "--worker",
        "W1",
        "--device-id",
        "48241179",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    key = re.search(r"key \(shown only once\): (wgk_\S+)", res.stdout)
    assert (
        key and f"?key={key.group(1)}" in res.stdout and "Device identifier 48241179" in res.stdout
    )
    cid = re.search(r"created (gc_\w+)", res.stdout).group(1)  # type: ignore[union-attr]
    res = wangge(
        "gateway",
        "credentials",
        "add",
        "phone",
        "--name",
        "x",
        "--worker",
        "W404",
        "--device-id",
        "1",
        env=env,
    )
    assert res.returncode == 2 and "not in the roster" in res.stderr
    res = wangge("gateway", "credentials", "add", "hotline", "--name", "12345", env=env)
    assert res.returncode == 0 and "/open311/v2/" in res.stdout
    listed = wangge("gateway", "credentials", "list", env=env).stdout
    assert cid in listed and "active" in listed and key.group(1) not in listed
    assert wangge("gateway", "credentials", "revoke", cid, env=env).returncode == 0
    assert wangge("gateway", "credentials", "revoke", cid, env=env).returncode == 2
    active = wangge("gateway", "credentials", "list", "--active", env=env).stdout
    assert cid not in active and "1 credentials" in active


@pytest.mark.system
def test_run_starts_the_gateway_and_stops_it(tmp_path: Path) -> None:
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
    args = ["--port", "0", "--gateway-port", "0"]
    # the live simulator starts after the URLs are printed (after a first start's backfill)
    proc, lines, _ = run_until(env, args, r"simulator .*(through the gateway)", 180)
    found = re.search(r"Gateway:\s+(http://\S+)", "".join(lines))
    assert found, "".join(lines)
    gw = found.group(1)
    try:
        assert requests.get(gw + "readyz", timeout=10).status_code == 200
        assert requests.get(gw + "openapi.json", timeout=10).json()["openapi"].startswith("3.1")
        me = psutil.Process(proc.pid)
        family = me.children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in family)
        assert "pipelines.cli gateway" in names
        assert "mosquitto" in names or "pipelines.gateway.broker" in names
        # the simulator's phones, hotline and cameras come in through the gateway
        db = tmp_path / "var" / "wangge.db"

        def counts() -> tuple[int, ...]:
            e = store.make_engine(f"sqlite:///{db}")
            try:
                return tuple(
                    store.table_count(e, t)
                    for t in (store.track_points, store.incident_events, store.video_alerts)
                )
            finally:
                e.dispose()

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(counts()):
            time.sleep(1)
        assert all(counts()), counts()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    _gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
