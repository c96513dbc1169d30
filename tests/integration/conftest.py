"""Fixtures most integration modules share: the small demo city (300 grids) and its grid
index. The city is built once per test process (a frozen value: areas and geometries in
immutable frames); a module that needs another city defines its own ``city``, and
``index`` follows it."""

from __future__ import annotations

import pytest

from pipelines.city.geography import City, GridIndex, demo_city


@pytest.fixture(scope="session")
def city() -> City:
    return demo_city(2026, n_grids=300)


@pytest.fixture(scope="module")
def index(city: City) -> GridIndex:
    return GridIndex(city)
