"""The simulator's mutable state: worker arrays, event batches, open incidents."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipelines.city import geography as geo
from pipelines.settings import SimulateSettings

# ---------------------------------------------------------------- simulator state


@dataclass
class _Workers:
    """Mutable per-worker arrays (index = roster row)."""

    grid: np.ndarray  # home grid index
    street: np.ndarray  # street index of the home grid
    x: np.ndarray
    y: np.ndarray
    tx: np.ndarray  # current waypoint
    ty: np.ndarray
    leg_stray: np.ndarray  # current leg crosses into / out of a neighbour grid
    away: np.ndarray  # waypoint lies in a neighbour grid
    v: np.ndarray  # walking speed, m/s
    next_ping: np.ndarray  # int64 ms
    last_ping: np.ndarray  # int64 ms
    online: np.ndarray  # phone on (when on duty)
    next_switch: np.ndarray  # int64 ms: next online/offline toggle
    shift_start: np.ndarray  # local hour
    shift_len: np.ndarray  # hours
    battery0: np.ndarray
    drain: np.ndarray  # % per hour on shift


@dataclass
class _Batch:
    """Time-ordered events as parallel lists (cheap to slice, extend and zip)."""

    ts: list[int]
    feeds: list[str]
    payloads: list[bytes]
    labels: list[str | None]

    def extend(self, other: _Batch) -> None:
        self.ts.extend(other.ts)
        self.feeds.extend(other.feeds)
        self.payloads.extend(other.payloads)
        self.labels.extend(other.labels)

    def slice(self, a: int, b: int) -> _Batch:
        return _Batch(self.ts[a:b], self.feeds[a:b], self.payloads[a:b], self.labels[a:b])

    def insert(self, i: int, ts: int, feed: str, payload: bytes, label: str | None) -> None:
        self.ts.insert(i, ts)
        self.feeds.insert(i, feed)
        self.payloads.insert(i, payload)
        self.labels.insert(i, label)


@dataclass
class _Incident:
    incident_id: str
    category: str
    severity: int
    source: str
    reporter_id: str
    grid: int
    lon: float
    lat: float
    description: str
    handler_id: str


class _SimState:
    """What the simulator's parts (``anomalies``, ``movement``, ``faults``) read and call on
    the one :class:`~pipelines.city.simulator.core.Simulator` they are mixed into: declared
    here so each part type-checks on its own."""

    cfg: SimulateSettings
    rng: np.random.Generator
    start_ms: int
    anomaly_origin_ms: int
    anomalies: list[dict[str, Any]]
    gap_street: int
    _anomaly_days: int
    _bad_counter: int
    _seq: int
    _keep: float
    _w: _Workers
    _wid_series: pl.Series
    _closed: deque[tuple[int, dict[str, Any]]]
    _recent: deque[tuple[str, bytes]]
    _video_heap: list[tuple[int, int, dict[str, Any]]]
    street_ids: np.ndarray
    grid_street: np.ndarray
    geoms: np.ndarray
    index: geo.GridIndex
    density: np.ndarray
    m_per_deg_lon: float
    neighbour: np.ndarray
    pool_x: np.ndarray
    pool_y: np.ndarray
    worker_grid: np.ndarray
    camera_grid: np.ndarray
    camera_ids: np.ndarray
    camera_x: np.ndarray
    camera_y: np.ndarray

    # Methods other parts define (declared as attributes: the Simulator supplies them).
    _alert: Callable[[int, str, float, int, bool], dict[str, Any]]
    _grid_handler: Callable[[int], str]
    _in_window: Callable[[str, np.ndarray], np.ndarray]
    _next_alert_id: Callable[[], str]
    _next_event_id: Callable[[], str]
    _next_incident_id: Callable[[], str]
    _plan: Callable[[_Incident, int], None]
