"""`wangge geo import` as a user runs it: the city's name, repairs and every problem of a
file on the terminal, and a grid count that must be positive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_cli import cli_env, wangge

pytestmark = pytest.mark.integration

S, X0, Y0 = 0.1, 118.6, 31.9


def _feature(code: int, name: str, ring: list[list[float]]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {
            "adcode": code,
            "name": name,
            "level": "district",
            "parent": {"adcode": 330100},
        },
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }


def _square(k: int) -> list[list[float]]:
    x = X0 + k * S
    return [[x, Y0], [x + S, Y0], [x + S, Y0 + S], [x, Y0 + S]]


def _looped(e: float) -> list[list[float]]:
    """Square 0 whose west edge crosses itself over a loop of half-width ``e``."""
    x, ym = X0, Y0 + S / 2
    return [*_square(0), [x, ym + e], [x - e, ym - e], [x - e, ym + e], [x, ym - e]]


def _file(tmp_path: Path, features: list[dict[str, Any]]) -> Path:
    path = tmp_path / "330100_full.json"
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.mark.parametrize("grids", ["0", "-3", "many"])
def test_non_positive_grid_counts_are_refused(tmp_path: Path, grids: str) -> None:
    src = _file(tmp_path, [_feature(330102, "上城区", _square(0))])
    res = wangge(
        "geo", "import", str(src), "--grids", grids, "--name", "杭州市", env=cli_env(tmp_path)
    )
    assert res.returncode == 2
    assert "--grids" in res.stderr and grids in res.stderr, res.stderr
    assert not list(tmp_path.rglob("city.parquet"))


def test_import_names_the_city_and_reports_repairs(tmp_path: Path) -> None:
    features = [
        _feature(330102, "上城区", _looped(0.0005)),
        _feature(330105, "拱墅区", _square(1)),
    ]
    out = tmp_path / "out"
    args = ("geo", "import", str(_file(tmp_path, features)), "--out", str(out), "--grids", "40")
    res = wangge(*args, env=cli_env(tmp_path))
    assert res.returncode == 2 and "does not name its city" in res.stderr and "--name" in res.stderr
    res = wangge(*args, "--name", "杭州市", env=cli_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (
        "repaired: feature #0 (adcode=330102, name=上城区): repaired an invalid polygon"
        in res.stdout
    )
    assert "imported 杭州市 (330100): 2 districts" in res.stdout
    assert "(1 polygons repaired)" in res.stdout
    assert (out / "city.parquet").exists()


def test_import_lists_every_problem(tmp_path: Path) -> None:
    bowtie = [[X0 + S, Y0], [X0 + 2 * S, Y0 + S], [X0 + 2 * S, Y0], [X0 + S, Y0 + S]]
    features = [
        _feature(330102, "上城区", [[x + 200, y] for x, y in _square(0)]),
        _feature(330105, "拱墅区", bowtie),
        _feature(330105, "西湖区", _square(2)),
    ]
    out = tmp_path / "out"
    res = wangge(
        "geo",
        "import",
        str(_file(tmp_path, features)),
        "--out",
        str(out),
        "--name",
        "杭州市",
        env=cli_env(tmp_path),
    )
    assert res.returncode == 2
    assert "import failed: 3 problem(s)" in res.stderr
    assert "feature #0 (adcode=330102, name=上城区): lon/lat out of range" in res.stderr
    assert "feature #1 (adcode=330105, name=拱墅区): invalid polygon" in res.stderr
    assert "feature #2 (adcode=330105, name=西湖区): duplicate district id '330105'" in res.stderr
    assert "nothing was written" in res.stderr and not out.exists()
