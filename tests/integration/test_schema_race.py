"""Several processes starting at once on a fresh database (a service's workers) all create
or upgrade the schema without tripping over each other (SQLite file, or PostgreSQL when
``DATABASE_URL`` names one)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from sqlalchemy import inspect

from pipelines.spine import store
from tests.conftest import private_database

pytestmark = pytest.mark.integration

N = 6
# A race shows on some starts only: make test runs one round, the system tier two more.
ROUNDS = [0, *(pytest.param(i, marks=pytest.mark.system) for i in (1, 2))]


def _create(url: str, schema: str | None, start: object, out: object) -> None:
    try:
        engine = store.make_engine(url, schema=schema)
        start.wait(30)  # type: ignore[attr-defined]
        store.create_schema(engine)
        engine.dispose()
        out.put("ok")  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, which shows it
        out.put(f"{type(exc).__name__}: {exc}"[:500])  # type: ignore[attr-defined]


@pytest.mark.parametrize("round_", ROUNDS)
def test_workers_starting_at_once_all_create_the_schema(tmp_path: Path, round_: int) -> None:
    ctx = mp.get_context("spawn")
    with private_database(tmp_path) as (url, schema):
        start, out = ctx.Barrier(N), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(url, schema, start, out)) for _ in range(N)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        assert results == ["ok"] * N, results
        engine = store.make_engine(url, schema=schema)
        assert {"incidents", "incident_events", "units"} <= set(
            inspect(engine).get_table_names(schema=schema)
        )
        engine.dispose()
