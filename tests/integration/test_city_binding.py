"""A database (and a Redis prefix) serves one city (pipelines.city.binding).

Reproduces what broke when a second city was started on the first one's database:
demo accounts kept the old scopes, both cities' rows mixed, the wall was blank. Now the
second start is refused with both cities named and the ways out; ``wangge geo rebind``
moves the database explicitly; the wall shows a message for any area it cannot show.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select

from dashboard.app import create_app, page_module
from pipelines.access import accounts, audit, demo
from pipelines.city import binding, boundaries
from pipelines.city.geography import City
from pipelines.settings import GeoSettings, Settings
from pipelines.spine import store
from tests.conftest import signed_in, stop_processes
from tests.integration.test_cli import cli_env, wangge

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000  # a fixed clock: nothing here depends on the time of day


def _datav(code: int, districts: list[tuple[int, str]], x0: float) -> dict[str, Any]:
    s = 0.1
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "adcode": d,
                    "name": n,
                    "level": "district",
                    "parent": {"adcode": code},
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [x0 + k * s, 30.0],
                            [x0 + (k + 1) * s, 30.0],
                            [x0 + (k + 1) * s, 30.1],
                            [x0 + k * s, 30.1],
                            [x0 + k * s, 30.0],
                        ]
                    ],
                },
            }
            for k, (d, n) in enumerate(districts)
        ],
    }


HANGZHOU = (330100, "杭州市", [(330102, "上城区"), (330105, "拱墅区")], 120.1)
WUXI = (320200, "无锡市", [(320205, "锡山区"), (320206, "惠山区")], 120.3)


def _files(tmp: Path) -> dict[str, Path]:
    out = {}
    for code, name, districts, x0 in (HANGZHOU, WUXI):
        path = tmp / f"{code}_full.json"
        path.write_bytes(orjson.dumps(_datav(code, districts, x0)))
        out[name] = path
    return out


def _city(tmp: Path, which: tuple[Any, ...], grids: int = 30) -> City:
    code, name, districts, x0 = which
    src = tmp / f"{code}_full.json"
    src.write_bytes(orjson.dumps(_datav(code, districts, x0)))
    out = tmp / f"city-{code}-{grids}"
    return boundaries.import_geojson(src, GeoSettings(), out, n_grids=grids, name=name).city


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, City]:
    tmp = tmp_path_factory.mktemp("cities")
    return {
        "hz": _city(tmp, HANGZHOU),
        "hz2": _city(tmp, HANGZHOU, grids=40),
        "wx": _city(tmp, WUXI),
    }


# ------------------------------------------------------------------ the checks


def test_a_fresh_database_is_bound_at_first_start(engine: Engine, cities: dict[str, City]) -> None:
    hz = cities["hz"]
    assert binding.bound_stamp(engine) is None
    stamp = binding.check_database(engine, hz, NOW)
    assert (stamp.city_id, stamp.name, stamp.areas) == ("330100", "杭州市", hz.areas.height)
    assert binding.bound_stamp(engine) == stamp
    assert binding.check_database(engine, hz, NOW + 1) == stamp  # the same city: fine


def test_another_city_is_refused_naming_both_and_the_ways_out(
    engine: Engine, cities: dict[str, City]
) -> None:
    binding.check_database(engine, cities["hz"], NOW)
    with pytest.raises(binding.CityMismatch) as err:
        binding.check_database(engine, cities["wx"], NOW)
    text = str(err.value)
    assert "This database belongs to 杭州市 (330100" in text
    assert "the configured city (geo.source) is 无锡市 (320200" in text
    assert "DATABASE_URL" in text and "wangge geo rebind --discard-data" in text
    assert binding.bound_stamp(engine).name == "杭州市"  # nothing changed


def test_other_areas_of_the_same_city_are_refused(engine: Engine, cities: dict[str, City]) -> None:
    binding.check_database(engine, cities["hz"], NOW)
    with pytest.raises(binding.CityMismatch, match="has other areas") as err:
        binding.check_database(engine, cities["hz2"], NOW)
    assert "wangge geo rebind --keep-data" in str(err.value)


def test_a_database_from_before_the_binding_is_judged_by_its_areas(
    engine: Engine, cities: dict[str, City]
) -> None:
    """No binding row, but an areas table of Hangzhou (what older versions left)."""
    cols = [c.name for c in store.areas.columns]
    store.replace_table(engine, store.areas, cities["hz"].areas.select(cols).to_dicts())
    with pytest.raises(binding.CityMismatch, match="belongs to 杭州市"):
        binding.check_database(engine, cities["wx"], NOW)
    assert binding.check_database(engine, cities["hz"], NOW).name == "杭州市"


def test_a_redis_prefix_is_stamped_and_checked(
    rclient: redis.Redis, prefix: str, cities: dict[str, City]
) -> None:
    binding.check_redis(rclient, prefix, cities["hz"])
    assert orjson.loads(rclient.get(f"{prefix}:city"))["name"] == "杭州市"
    with pytest.raises(binding.CityMismatch) as err:
        binding.check_redis(rclient, prefix, cities["wx"])
    assert f"Redis (prefix {prefix!r}) belongs to 杭州市" in str(err.value)
    assert "WANGGE_REDIS_PREFIX" in str(err.value)


def _all_table_names() -> list[str]:
    """Every table any module of the product defines (imports every module first)."""
    import importlib
    import pkgutil

    import pipelines

    for mod in pkgutil.walk_packages(pipelines.__path__, "pipelines."):
        if not mod.name.endswith(".__main__"):  # a command's entry point runs on import
            importlib.import_module(mod.name)
    return sorted(t.name for t in store.metadata.sorted_tables)


def test_every_table_is_classified() -> None:
    """A new table must say whether it holds a city's data (rebind deletes it) or not."""
    classified = [*binding.CITY_TABLES, *binding.KEPT_TABLES]
    assert _all_table_names() == sorted(classified)
    assert len(set(classified)) == len(classified)


def test_the_schema_knows_every_table_without_importing_their_modules() -> None:
    """``create_schema`` (and rebind) load every module that registers a table, so a
    process that never imported, say, the gateway still creates and clears its tables."""
    code = (
        "from pipelines.spine import store; store.load_table_modules(); "
        "print(','.join(sorted(t.name for t in store.metadata.sorted_tables)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().split(",") == _all_table_names()


def test_the_dashboard_refuses_another_citys_database(
    live_settings: Settings, engine: Engine, rclient: redis.Redis, cities: dict[str, City]
) -> None:
    binding.check_database(engine, cities["hz"], NOW)
    with pytest.raises(binding.CityMismatch, match="无锡市"):
        create_app(live_settings, city=cities["wx"], r=rclient)


# ------------------------------------------------------------------ rebind


def _seed_city_data(engine: Engine, city: City) -> None:
    cols = [c.name for c in store.areas.columns]
    store.replace_table(engine, store.areas, city.areas.select(cols).to_dicts())
    grid = city.grids["grid_id"][0]
    store.replace_table(
        engine, store.cameras, [{"camera_id": "C1", "lon": 0, "lat": 0, "grid_id": grid}]
    )
    store.replace_table(
        engine,
        store.workers,
        [{"worker_id": "W1", "name": "甲", "type": "full", "grid_id": grid, "phone_masked": None}],
    )


def test_rebind_discard_deletes_the_old_city_and_moves_city_wide_accounts(
    engine: Engine, rclient: redis.Redis, prefix: str, cities: dict[str, City]
) -> None:
    hz, wx = cities["hz"], cities["wx"]
    binding.check(engine, rclient, prefix, hz, NOW)
    _seed_city_data(engine, hz)
    accounts.create_user(engine, hz, "boss", "city_leader", "330100", "pw-boss-123456", now_ms=NOW)
    accounts.create_user(
        engine, hz, "cmd", "district_commander", "330102", "pw-cmd-1234567", now_ms=NOW
    )
    rclient.set(f"{prefix}:live:x", 1)
    alike = f"{prefix}x:mine-too"  # another prefix that starts alike: kept
    rclient.set(alike, 1)
    try:
        report = binding.rebind(engine, rclient, prefix, wx, "discard", now_ms=NOW, actor="t")
        assert rclient.get(alike) == b"1"
    finally:
        rclient.delete(alike)
    assert report.previous is not None and report.previous.name == "杭州市"
    assert report.deleted["workers"] == 1 and report.deleted["cameras"] == 1
    assert report.redis_keys_deleted >= 2  # live:x and the old stamp
    assert store.table_count(engine, store.workers) == 0
    assert store.table_count(engine, store.areas) == wx.areas.height
    assert binding.check_database(engine, wx, NOW).name == "无锡市"
    assert binding.check_redis(rclient, prefix, wx).name == "无锡市"
    assert accounts.get_user(engine, "boss").scope_area_id == "320200"
    assert report.moved == ["boss"]
    assert report.unplaced == [("cmd", "district_commander", "330102")]
    assert any("cmd" in line and "set-role" in line for line in report.lines())
    t = store.audit_log
    with engine.connect() as conn:
        actions = [r[0] for r in conn.execute(select(t.c.action).order_by(t.c.seq))]
    assert actions[-1] == "city_rebind"
    assert audit.verify(engine).ok


def test_rebind_keep_data_is_only_for_the_same_city(
    engine: Engine, cities: dict[str, City]
) -> None:
    binding.check_database(engine, cities["hz"], NOW)
    _seed_city_data(engine, cities["hz"])
    with pytest.raises(binding.RebindError, match="only for the same city"):
        binding.rebind(engine, None, "unused", cities["wx"], "keep", now_ms=NOW, actor="t")
    report = binding.rebind(engine, None, "unused", cities["hz2"], "keep", now_ms=NOW, actor="t")
    assert report.deleted == {} and store.table_count(engine, store.workers) == 1
    assert binding.check_database(engine, cities["hz2"], NOW).areas == cities["hz2"].areas.height


def test_demo_accounts_follow_the_configured_city(engine: Engine, cities: dict[str, City]) -> None:
    hz, wx = cities["hz"], cities["wx"]
    demo.demo_accounts(engine, hz, NOW)
    binding.rebind(engine, None, "unused", wx, "discard", now_ms=NOW, actor="t")
    rows = demo.demo_accounts(engine, wx, NOW + 1)
    for username, _role, scope, _secret in rows:
        assert wx.level_of(scope) is not None, (username, scope)
        assert wx.level_of(accounts.get_user(engine, username).scope_area_id) is not None


# ------------------------------------------------------------------ the wall


@pytest.fixture
def wall_app(
    live_settings: Settings, engine: Engine, rclient: redis.Redis, cities: dict[str, City]
) -> Iterator[Any]:
    yield create_app(live_settings, city=cities["hz"], r=rclient)


@pytest.mark.parametrize(
    ("area", "scope", "text"),
    [
        ("330199", "330100", "区域编号 “330199” 不存在"),  # unknown area
        ("330105", "330102", "该区域不在您的权限范围内"),  # outside the screen's scope
        (None, "320200", "此大屏账号的区域 “320200” 不属于杭州市"),  # the screen's own scope
        ("330102", "320200", "此大屏账号的区域 “320200” 不属于杭州市"),
    ],
)
def test_the_wall_shows_a_message_for_an_area_it_cannot_show(
    wall_app: Any, area: str | None, scope: str, text: str
) -> None:
    layout = page_module("wall", "layout").layout
    with signed_in(wall_app, role="wall", scope=scope, username="screen"):
        page = layout(area_id=area)
    assert page.id == "wall-root" and "wall-message" in page.className
    assert text in str(page) and "/wall" in str(page)


def test_the_wall_shows_an_area_in_scope(wall_app: Any) -> None:
    layout = page_module("wall", "layout").layout
    with signed_in(wall_app, role="wall", scope="330100", username="screen"):
        page = layout(area_id="330105")
    assert "wall" in page.className.split() and "拱墅区" in str(page)


# ------------------------------------------------------------------ as a user runs it


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str], str | None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--port", "0", "--no-simulate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"Dashboard: (http://\S+)", line):
            return proc, lines, m.group(1)
    return proc, lines, None


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_processes([proc])
    return out


@pytest.mark.system  # starts `wangge run` three times, as a user does (make test-system)
def test_switching_cities_on_one_database_is_refused_until_rebound(tmp_path: Path) -> None:
    files = _files(tmp_path)
    base = cli_env(tmp_path, REDIS_URL="", DATABASE_URL="")
    for name, path in files.items():
        res = wangge(
            "geo",
            "import",
            str(path),
            "--out",
            str(tmp_path / name),
            "--grids",
            "40",
            "--name",
            name,
            env=base,
        )
        assert res.returncode == 0, res.stderr
    hz = {**base, "WANGGE_GEO_SOURCE": str(tmp_path / "杭州市")}
    wx = {**base, "WANGGE_GEO_SOURCE": str(tmp_path / "无锡市")}
    proc, lines, url = _start(hz)
    out = "".join(lines) + _stop(proc)
    assert url, out
    assert re.search(r"city_leader\s+330100\s+leader /", out), out

    proc, lines, url = _start(wx)
    out = "".join(lines) + (_stop(proc) if url else proc.communicate(timeout=60)[0])
    assert url is None and proc.returncode == 2, out
    assert "This database belongs to 杭州市 (330100" in out and "无锡市 (320200" in out
    assert "wangge geo rebind --discard-data" in out

    # commands that write the configured city's ids are refused the same way
    res = wangge("users", "add", "x", "--role", "city_leader", "--scope", "320200", env=wx)
    assert res.returncode == 2 and "This database belongs to 杭州市" in res.stderr, res.stderr

    res = wangge("geo", "rebind", env=wx)
    assert res.returncode == 1 and "database holds:  杭州市" in res.stdout
    res = wangge("geo", "rebind", "--discard-data", env=wx)
    assert res.returncode == 0, res.stderr
    assert "bound to 无锡市 (320200" in res.stdout and "was 杭州市" in res.stdout

    proc, lines, url = _start(wx)
    out = "".join(lines) + _stop(proc)
    assert url, out
    for role, scope in re.findall(r"^\s+(\w+)\s+(\d{6}\S*)\s", out, flags=re.M):
        assert scope.startswith("3202"), (role, scope, out)
    assert re.search(r"city_leader\s+320200\s+leader /", out), out
