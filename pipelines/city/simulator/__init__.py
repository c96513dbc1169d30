"""Realistic, deterministic live feeds for demos, tests and load tests.

The package's public face (``from pipelines.city import simulator``):

- ``core``: the :class:`Simulator` (roster, cameras, incidents and their reports, video);
  its scripted anomalies live in ``anomalies``, worker movement and location pings in
  ``movement``, malformed events for the dead-letter paths in ``faults``;
- ``mixes``: the vocabulary, mixes, hourly profiles and pure helpers;
- ``state``: the mutable state (worker arrays, event batches, open incidents);
- ``batch``: batch generation, JSONL files and the live loop.
"""

from pipelines.city.simulator.batch import (
    DEFAULT_MIX,
    generate,
    location_events,
    read_jsonl,
    run_live,
    write_jsonl,
)
from pipelines.city.simulator.core import Simulator
from pipelines.city.simulator.mixes import (
    BAD_KINDS,
    COORD_DECIMALS,
    DAY_MS,
    HOUR_MS,
    HOURLY_INCIDENTS,
    HOURLY_VIDEO,
    LOCAL_OFFSET_H,
    MINUTE_MS,
    OUTSIDE_LAT,
    OUTSIDE_LON,
    WORKER_TYPES,
    Labelled,
    hourly_rate,
    local_hour,
    make_bad,
    plan_lifecycle,
    sample_in_grids,
)

__all__ = [
    "BAD_KINDS",
    "COORD_DECIMALS",
    "DAY_MS",
    "DEFAULT_MIX",
    "HOURLY_INCIDENTS",
    "HOURLY_VIDEO",
    "HOUR_MS",
    "LOCAL_OFFSET_H",
    "MINUTE_MS",
    "OUTSIDE_LAT",
    "OUTSIDE_LON",
    "WORKER_TYPES",
    "Labelled",
    "Simulator",
    "generate",
    "hourly_rate",
    "local_hour",
    "location_events",
    "make_bad",
    "plan_lifecycle",
    "read_jsonl",
    "run_live",
    "sample_in_grids",
    "write_jsonl",
]
