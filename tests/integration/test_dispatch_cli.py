"""`wangge units` and `wangge flows`, as an operator runs them (a real process, SQLite in
the test's own folder): errors by line and nothing written; a broken flow file stops a
start before anything runs."""

from __future__ import annotations

from pathlib import Path

from pipelines.city.geography import demo_city
from tests.integration.test_cli import cli_env, wangge

HEADER = "unit_id,name,type,level,area_id\n"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = cli_env(tmp, DATABASE_URL="", **extra)  # SQLite under the test's own var dir
    env.pop("DATABASE_URL")
    return env


def test_units_import_all_or_nothing_then_list(tmp_path: Path) -> None:
    env = _env(tmp_path)
    city = demo_city(2026, n_grids=300)  # the city WANGGE_GEO_GRIDS=300 configures
    d, s = city.ids("district")[0], city.ids("street")[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + f"p1,公安分局,police,district,{d}\nx,消防,fire,province,{d}\n", "utf-8")
    out = wangge("units", "import", str(bad), env=env)
    assert out.returncode == 1
    assert f"{bad}: line 3: level:" in out.stderr and "nothing imported" in out.stderr
    listed = wangge("units", "list", env=env)
    assert listed.returncode == 0 and listed.stdout == ""  # the good line 2 was not written
    good = tmp_path / "good.csv"
    good.write_text(HEADER + f"p1,公安分局,公安,district,{d}\ne1,执法队,enforcement,street,{s}\n")
    out = wangge("units", "import", str(good), "--replace", env=env)
    assert out.returncode == 0, out.stderr
    assert "imported 2 units (list replaced)" in out.stdout
    listed = wangge("units", "list", "--area", s, env=env)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["e1"]
    assert "综合执法 (enforcement)" in listed.stdout


def test_flows_check_lists_the_shipped_flows_and_refuses_a_broken_file(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = wangge("flows", "check", env=env)
    assert out.returncode == 0, out.stderr
    ids = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "fire" in ids and "fire_serious" in ids and "every category covered" in out.stderr
    broken = tmp_path / "flows.toml"
    broken.write_text('[[flow]]\nid = "x"\ncategory = "aliens"\n', encoding="utf-8")
    out = wangge("flows", "check", str(broken), env=env)
    assert out.returncode == 1
    assert "category 'aliens' is not one of" in out.stderr
    assert "category 'fire' has no flow from severity 1" in out.stderr


def test_a_broken_flow_file_stops_the_start(tmp_path: Path) -> None:
    broken = tmp_path / "flows.toml"
    broken.write_text("[[flow]]\nid = 'x'\n", encoding="utf-8")
    env = _env(tmp_path, WANGGE_DISPATCH_FLOWS=str(broken))
    for command in ("run", "pipelines"):
        out = wangge(command, env=env, timeout=60)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "[dispatch] flows" in out.stderr and "the flow file is invalid" in out.stderr
        assert "starting" not in out.stdout  # nothing started
