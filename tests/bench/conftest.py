"""Bench helpers: BENCH lines, medians, the full demo city, fresh databases per run.

Every figure is printed as ``BENCH {json}`` with ``name``, ``value``, ``unit`` and, for
repeated measurements, ``runs`` (the value is their median). Nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import statistics
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from pipelines.access import audit
from pipelines.city.geography import City, GridIndex, load_city
from pipelines.settings import GeoSettings
from pipelines.spine import store
from tests.conftest import TEST_AUDIT_KEY

RUNS = int(os.environ.get("WANGGE_BENCH_RUNS", "3"))


def bench(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    """Print one ``BENCH {json}`` line and return the object."""
    obj: dict[str, Any] = {"name": name, "value": _round(value), "unit": unit}
    for k, v in extra.items():
        obj[k] = [_round(x) for x in v] if isinstance(v, list | tuple) else _round(v)
    print("BENCH " + json.dumps(obj, ensure_ascii=False, sort_keys=False), flush=True)
    return obj


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3) if abs(v) < 100 else round(v, 1)
    return v


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def with_baseline(
    name: str,
    unit: str,
    runs: Sequence[float],
    baseline_runs: Sequence[float],
    **extra: Any,
) -> dict[str, Any]:
    """A throughput figure with its same-run baseline: ratio = median / median(baseline)."""
    value, base = median(runs), median(baseline_runs)
    return bench(
        name,
        value,
        unit,
        runs=list(runs),
        baseline=base,
        baseline_runs=list(baseline_runs),
        ratio=round(value / base, 3) if base else None,
        **extra,
    )


@pytest.fixture(scope="session")
def geo_settings() -> GeoSettings:
    """The FULL demo city (12,545 grids), cached under var/geo like `make run` does."""
    return GeoSettings()


@pytest.fixture(scope="session")
def city(geo_settings: GeoSettings) -> City:
    c = load_city(geo_settings)
    assert c.grids.height == geo_settings.grids
    return c


@pytest.fixture(scope="session")
def index(city: City) -> GridIndex:
    idx = GridIndex(city)
    idx.assign(city.grids["lon"].to_numpy()[:10], city.grids["lat"].to_numpy()[:10])  # build
    return idx


def _pg_url(url: str) -> str:
    scheme = url.split("://", 1)[0]
    return url if "+" in scheme else "postgresql+psycopg://" + url.split("://", 1)[1]


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, str | None, Engine]]]:
    """``fresh_db(dialect)`` → (url, schema, engine) with an empty schema created.

    ``"sqlite"``: a new file in tmp. ``"postgresql"``: a new private schema at
    ``DATABASE_URL`` (dropped afterwards). Each run of a bench gets its own, so every
    run does the same inserts (no run finds the previous run's rows).
    """
    made: list[tuple[Engine, str | None]] = []
    pg = os.environ.get("DATABASE_URL", "")
    admin = create_engine(_pg_url(pg), isolation_level="AUTOCOMMIT") if pg else None

    def make(dialect: str) -> tuple[str, str | None, Engine]:
        tag = uuid.uuid4().hex[:10]
        if dialect == "sqlite":
            url, schema = f"sqlite:///{tmp_path / f'bench-{tag}.db'}", None
        else:
            assert admin is not None, "postgresql needs DATABASE_URL"
            url, schema = pg, f"wgbench_{tag}"
            with admin.connect() as c:
                c.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng = audit.keyed(store.make_engine(url, schema=schema), TEST_AUDIT_KEY)  # audited writes
        store.create_schema(eng)
        made.append((eng, schema))
        return url, schema, eng

    yield make
    for eng, schema in made:
        eng.dispose()
        if schema and admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    if admin is not None:
        admin.dispose()


def dialects() -> list[str]:
    """SQLite always; PostgreSQL too when DATABASE_URL points at one."""
    out = ["sqlite"]
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        out.append("postgresql")
    return out
