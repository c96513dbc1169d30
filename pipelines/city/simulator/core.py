"""The feed simulator: one deterministic simulation of the three feeds for one city.

A :class:`Simulator` owns a roster of grid workers, a camera registry and a simulated
clock. ``advance(until_ms)`` returns every event with ``ts`` in (clock, until_ms] as
``(feed, payload)`` pairs sorted by time; nothing here talks to Redis or SQL.

Determinism: all randomness comes from one ``numpy.random.Generator`` seeded from the
settings, and the simulation runs internally in fixed one-minute chunks aligned on
``start_ms``. The same seed and start therefore give identical bytes, whatever the
sequence of ``advance`` calls.

Local time is Asia/Shanghai (UTC+8, no daylight saving), used for working hours and the
daily rhythm of incidents and video alerts.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Any

import numpy as np
import orjson
import polars as pl
import shapely

from pipelines.city import geography as geo
from pipelines.city.simulator.anomalies import _Anomalies
from pipelines.city.simulator.faults import _Faults
from pipelines.city.simulator.mixes import (
    CATEGORY_P,
    CHUNK_MS,
    DAY_MS,
    DESC_TAIL,
    DESCRIPTIONS,
    GIVEN,
    HOURLY_INCIDENTS,
    HOURLY_VIDEO,
    LABEL_P,
    M_PER_DEG_LON_EQ,
    NIGHT_SHIFT_P,
    NO_LOCATION_SHARE,
    POOL_K,
    SEVERITY_P,
    SOURCE_P,
    SURNAMES,
    WORKER_TYPE_P,
    WORKER_TYPES,
    Labelled,
    _csr,
    _pick,
    hourly_rate,
    plan_lifecycle,
    sample_in_grids,
)
from pipelines.city.simulator.movement import _Movement
from pipelines.city.simulator.state import _Batch, _Incident, _Workers
from pipelines.dispatch.flows import Flows
from pipelines.settings import SimulateSettings


class Simulator(_Anomalies, _Movement, _Faults):
    """Deterministic simulation of the three feeds for one city.

    ``location_keep`` (keyword, optional) overrides the share of location pings kept
    (the ``rate`` cap computes it otherwise); ``generate`` uses it.

    ``command`` (keyword): a simulated command centre takes part (``command.CommandCentre``).
    Then ``cfg.command_share`` of the new incidents whose grid has a roster worker are only
    reported here: they are queued in ``commanded`` as (report ms, incident) and the centre
    and the worker's phone write their later steps. Which incidents is drawn from a random
    stream of its own, so everything else the simulator emits stays the same.
    """

    def __init__(
        self,
        city: geo.City,
        cfg: SimulateSettings,
        flows: Flows,
        start_ms: int,
        *,
        location_keep: float | None = None,
        command: bool = False,
    ) -> None:
        self.city = city
        self.cfg = cfg
        self.flows = flows
        self.start_ms = int(start_ms)
        self.rng = np.random.default_rng([int(cfg.seed), self.start_ms])
        self._id_prefix = f"{int(cfg.seed) & 0xFFFF:x}{self.start_ms // 1000:x}"
        self._clock = self.start_ms
        self._gen_ms = self.start_ms
        self._buffer: deque[_Batch] = deque()
        self._heap: list[tuple[int, int, str, str, _Incident]] = []
        self._video_heap: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = 0
        self._n_event = 0
        self._n_incident = 0
        self._n_alert = 0
        self._bad_counter = 0
        self._recent: deque[tuple[str, bytes]] = deque(maxlen=5000)  # report/video payloads
        self._closed: deque[tuple[int, dict[str, Any]]] = deque(maxlen=5000)
        self.injected: deque[tuple[str, bytes, str]] = deque(maxlen=10_000)
        self.anomalies: list[dict[str, Any]] = []
        # the scripted anomalies' days start here (moved by ``resume`` after a backfill)
        self.anomaly_origin_ms = self.start_ms
        self._anomaly_days = 0
        self._command_share = float(np.clip(cfg.command_share, 0.0, 1.0)) if command else 0.0
        self._command_rng = np.random.default_rng([int(cfg.seed), self.start_ms, 31])
        self.commanded: deque[tuple[int, _Incident]] = deque()

        self._setup_geography()
        self.roster = self._build_roster()
        self.cameras = self._build_cameras()
        self._w = self._init_workers()
        self._keep = self._location_keep() if location_keep is None else float(location_keep)
        self._choose_anomaly_streets()

    # ------------------------------------------------------------ setup

    def _setup_geography(self) -> None:
        grids = self.city.grids
        self.n_grids = grids.height
        self.grid_ids = grids["grid_id"].to_numpy().astype(object)
        self.grid_names = grids["name"].to_list() if "name" in grids.columns else None
        streets = grids["street_id"].to_numpy().astype(str)
        self.street_ids, self.grid_street = np.unique(streets, return_inverse=True)
        districts = grids["district_id"].to_numpy().astype(str)
        self.district_ids, self.grid_district = np.unique(districts, return_inverse=True)
        self.geoms = np.asarray(self.city.grid_geoms)
        self.bounds = shapely.bounds(self.geoms)
        self.index = geo.GridIndex(self.city)
        area = np.maximum(grids["area_km2"].to_numpy().astype(np.float64), 1e-3)
        dens = (1.0 / area) ** 0.8
        self.density = dens / dens.sum()
        lat0 = float(np.mean(grids["lat"].to_numpy()))
        self.m_per_deg_lon = M_PER_DEG_LON_EQ * np.cos(np.radians(lat0))
        # Patrol waypoints: POOL_K interior points per grid.
        idx = np.repeat(np.arange(self.n_grids), POOL_K)
        px, py = sample_in_grids(self.geoms, self.bounds, idx, self.rng)
        self.pool_x = px.reshape(self.n_grids, POOL_K)
        self.pool_y = py.reshape(self.n_grids, POOL_K)
        self.neighbour = self._neighbours()

    def _neighbours(self) -> np.ndarray:
        """One neighbouring grid per grid (or -1), found by probing past its edge."""
        cx = self.pool_x[:, 0]
        cy = self.pool_y[:, 0]
        w = self.bounds[:, 2] - self.bounds[:, 0]
        h = self.bounds[:, 3] - self.bounds[:, 1]
        nb = np.full(self.n_grids, -1, dtype=np.int64)
        for _ in range(6):
            todo = np.flatnonzero(nb < 0)
            if len(todo) == 0:
                break
            ang = self.rng.random(len(todo)) * 2 * np.pi
            px = cx[todo] + np.cos(ang) * w[todo] * 0.8
            py = cy[todo] + np.sin(ang) * h[todo] * 0.8
            got = np.asarray(self.index.assign(px, py), dtype=np.int64)
            ok = (got >= 0) & (got != todo)
            nb[todo[ok]] = got[ok]
        return nb

    def _build_roster(self) -> pl.DataFrame:
        n, rng = int(self.cfg.workers), self.rng
        if n >= self.n_grids:
            extra = rng.choice(self.n_grids, n - self.n_grids, p=self.density)
            grid = np.concatenate([np.arange(self.n_grids), extra])
        else:
            grid = rng.choice(self.n_grids, n, replace=False, p=self.density)
        grid = np.sort(grid)
        self.worker_grid = grid
        surname = rng.integers(0, len(SURNAMES), n)
        g1 = rng.integers(0, len(GIVEN), n)
        g2 = rng.integers(-len(GIVEN) // 2, len(GIVEN), n)  # negative → one-character name
        names = [
            SURNAMES[s] + GIVEN[a] + (GIVEN[b] if b >= 0 else "")
            for s, a, b in zip(surname.tolist(), g1.tolist(), g2.tolist(), strict=True)
        ]
        wtype = rng.choice(len(WORKER_TYPES), n, p=WORKER_TYPE_P)
        self.worker_type = wtype
        prefix = rng.choice(np.array(["138", "139", "137", "150", "151", "158", "188", "189"]), n)
        tail = rng.integers(0, 10_000, n)
        self.worker_ids = np.array([f"W{i + 1:06d}" for i in range(n)], dtype=object)
        self._wid_series = pl.Series("worker_id", self.worker_ids.tolist(), dtype=pl.String)
        return pl.DataFrame(
            {
                "worker_id": self.worker_ids.tolist(),
                "name": names,
                "type": [WORKER_TYPES[t] for t in wtype.tolist()],
                "grid_id": self.grid_ids[grid].tolist(),
                "phone_masked": [
                    f"{p}****{t:04d}" for p, t in zip(prefix.tolist(), tail.tolist(), strict=True)
                ],
            },
            schema={
                "worker_id": pl.String,
                "name": pl.String,
                "type": pl.String,
                "grid_id": pl.String,
                "phone_masked": pl.String,
            },
        )

    def _build_cameras(self) -> pl.DataFrame:
        n, rng = int(self.cfg.cameras), self.rng
        p = self.density**1.2
        grid = np.sort(rng.choice(self.n_grids, n, p=p / p.sum()))
        x, y = sample_in_grids(self.geoms, self.bounds, grid, rng)
        self.camera_grid = grid
        self.camera_x = np.round(x, 6)
        self.camera_y = np.round(y, 6)
        self.camera_ids = np.array([f"C{i + 1:05d}" for i in range(n)], dtype=object)
        self._cam_order, self._cam_off = _csr(grid, self.n_grids)
        self._wrk_order, self._wrk_off = _csr(self.worker_grid, self.n_grids)
        return pl.DataFrame(
            {
                "camera_id": self.camera_ids.tolist(),
                "lon": self.camera_x,
                "lat": self.camera_y,
                "grid_id": self.grid_ids[grid].tolist(),
            },
            schema={
                "camera_id": pl.String,
                "lon": pl.Float64,
                "lat": pl.Float64,
                "grid_id": pl.String,
            },
        )

    def _init_workers(self) -> _Workers:
        n, rng, cfg = len(self.worker_grid), self.rng, self.cfg
        g = self.worker_grid
        k = rng.integers(0, POOL_K, n)
        night = rng.random(n) < np.asarray(NIGHT_SHIFT_P)[self.worker_type]
        shift_start = np.where(night, 19.0 + rng.uniform(-1, 0.5, n), 8.0 + rng.uniform(-1, 0.5, n))
        off = float(np.clip(cfg.offline_share, 0.0, 0.99))
        online = rng.random(n) >= off
        mean_interval = (cfg.ping_min_s + cfg.ping_max_s) / 2 * 1000
        return _Workers(
            grid=g,
            street=self.grid_street[g],
            x=self.pool_x[g, k].copy(),
            y=self.pool_y[g, k].copy(),
            tx=self.pool_x[g, k].copy(),  # first ping picks a checked leg
            ty=self.pool_y[g, k].copy(),
            leg_stray=np.zeros(n, dtype=bool),
            away=np.zeros(n, dtype=bool),
            v=self._speeds(n),
            next_ping=self.start_ms + (rng.random(n) * mean_interval).astype(np.int64) + 1,
            last_ping=np.full(n, self.start_ms, dtype=np.int64),
            online=online,
            next_switch=self.start_ms + self._episode_ms(online, n),
            shift_start=shift_start,
            shift_len=np.where(night, 12.0, 10.0),
            battery0=rng.uniform(75, 100, n),
            drain=rng.uniform(4.0, 8.0, n),
        )

    def _next_event_id(self) -> str:
        self._n_event += 1
        return f"E{self._id_prefix}{self._n_event:09d}"

    def _next_incident_id(self) -> str:
        self._n_incident += 1
        return f"I{self._id_prefix}{self._n_incident:08d}"

    def _next_alert_id(self) -> str:
        self._n_alert += 1
        return f"V{self._id_prefix}{self._n_alert:08d}"

    def _push(self, ts: int, step: str, level: str, inc: _Incident) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, step, level, inc))

    # ------------------------------------------------------------ public API

    @property
    def clock_ms(self) -> int:
        return self._clock

    def resume(self, cfg: SimulateSettings, *, command: bool = False) -> None:
        """Carry on from the current clock with other settings: a backfilled history
        (thinned pings, no anomalies, no command centre) going live.

        The incidents in progress keep their planned steps; the location keep share and
        the command share follow ``cfg``; every phone pings again within its normal
        interval (not after the backfill's sparse one); the scripted anomalies' days
        start now, so they come ``anomaly_start_min`` after the live start.
        """
        self.cfg = cfg
        self._keep = self._location_keep()
        self._command_share = float(np.clip(cfg.command_share, 0.0, 1.0)) if command else 0.0
        now = max(self._clock, self._gen_ms)  # pings are generated up to _gen_ms already
        w = self._w
        mean_interval = (cfg.ping_min_s + cfg.ping_max_s) / 2 * 1000
        due = w.next_ping > now
        w.next_ping[due] = np.minimum(
            w.next_ping[due],
            now + (self.rng.random(int(due.sum())) * mean_interval).astype(np.int64) + 1,
        )
        self.anomaly_origin_ms = self._clock
        self._anomaly_days = 0

    def advance(self, until_ms: int) -> list[tuple[str, bytes]]:
        """All events with ts in (clock, until_ms], sorted by ts; moves the clock."""
        part = self._advance(until_ms)
        return list(zip(part.feeds, part.payloads, strict=True))

    def advance_labelled(self, until_ms: int) -> list[Labelled]:
        """Like :meth:`advance`, with each event's expected dead-letter reason (or None)."""
        part = self._advance(until_ms)
        return list(zip(part.feeds, part.payloads, part.labels, strict=True))

    def _advance(self, until_ms: int) -> _Batch:
        until_ms = int(until_ms)
        while self._gen_ms < until_ms:
            t0, t1 = self._gen_ms, self._gen_ms + CHUNK_MS
            self._buffer.append(self._chunk(t0, t1))
            self._gen_ms = t1
        out = _Batch([], [], [], [])
        while self._buffer:
            head = self._buffer[0]
            if not head.ts:  # a quiet minute: nothing to hand out, never block the rest
                self._buffer.popleft()
                continue
            if head.ts[-1] <= until_ms:
                out.extend(self._buffer.popleft())
                continue
            cut = bisect.bisect_right(head.ts, until_ms)
            out.extend(head.slice(0, cut))
            self._buffer[0] = head.slice(cut, len(head.ts))
            break
        self._clock = max(self._clock, until_ms)
        return out

    # ------------------------------------------------------------ one chunk

    def _chunk(self, t0: int, t1: int) -> _Batch:
        self._schedule_anomalies(t1)
        self._incident_arrivals(t0, t1)
        rep_ts, rep_pl = self._due_reports(t1)
        vid_ts, vid_pl = self._video(t0, t1)
        loc_ts, loc_pl = self._locations(t1)
        ts = np.concatenate([np.asarray(rep_ts, np.int64), np.asarray(vid_ts, np.int64), loc_ts])
        feeds = ["reports"] * len(rep_pl) + ["video"] * len(vid_pl) + ["locations"] * len(loc_pl)
        payloads = rep_pl + vid_pl + loc_pl
        n = len(payloads)
        if n == 0:
            return _Batch([], [], [], [])
        if len(rep_pl) + len(vid_pl):
            order = np.argsort(ts, kind="stable")
            ts = ts[order]
            pick = order.tolist()
            feeds = [feeds[i] for i in pick]
            payloads = [payloads[i] for i in pick]
        batch = _Batch(ts.tolist(), feeds, payloads, [None] * n)
        share = float(self.cfg.malformed_share)
        if share > 0:
            shift = 0  # bad events already inserted before position j
            for j in np.flatnonzero(self.rng.random(n) < share).tolist():
                k = j + shift
                extra = self._live_bad(batch.ts[k], batch.feeds[k], batch.payloads[k])
                if extra is not None:
                    self.injected.append(extra)
                    batch.insert(k + 1, batch.ts[k], *extra)
                    shift += 1
        # Only now: a duplicate must copy an event that was emitted before it.
        self._recent.extend(zip(["reports"] * len(rep_pl), rep_pl, strict=True))
        self._recent.extend(zip(["video"] * len(vid_pl), vid_pl, strict=True))
        return batch

    # ------------------------------------------------------------ anomalies

    def _grid_handler(self, g: int) -> str:
        a, b = self._wrk_off[g], self._wrk_off[g + 1]
        if b > a:
            return str(self.worker_ids[self._wrk_order[a + int(self.rng.integers(0, b - a))]])
        return f"H-{self.street_ids[self.grid_street[g]]}"

    def _incident_arrivals(self, t0: int, t1: int) -> None:
        rng, cfg = self.rng, self.cfg
        mid = (t0 + t1) // 2
        lam = (
            cfg.incidents_per_day / (DAY_MS / CHUNK_MS) * float(hourly_rate(HOURLY_INCIDENTS, mid))
        )
        n = int(rng.poisson(lam)) if lam > 0 else 0
        grids = rng.choice(self.n_grids, n, p=self.density) if n else np.zeros(0, np.int64)
        cats = _pick(rng, CATEGORY_P, n)
        if self._in_window("dispute_surge", np.array([mid]))[0] and len(self._surge_grids):
            base = lam * CATEGORY_P["dispute"] * self._street_share[self.surge_street]
            extra = int(rng.poisson(max(7 * base, 20 / 60)))
            grids = np.concatenate([grids, rng.choice(self._surge_grids, extra, p=self._surge_p)])
            cats = np.concatenate([cats, np.full(extra, "dispute")])
            n += extra
        if n == 0:
            return
        ts = np.sort(t0 + 1 + rng.integers(0, CHUNK_MS, n))
        x, y = sample_in_grids(self.geoms, self.bounds, grids, rng)
        sources = _pick(rng, SOURCE_P, n)
        sev = rng.choice(4, n, p=SEVERITY_P) + 1
        desc_i = rng.integers(0, 1000, n)
        tail_i = rng.integers(0, len(DESC_TAIL), n)
        for i in range(n):
            g, cat, src = int(grids[i]), str(cats[i]), str(sources[i])
            reporter, src = self._reporter(g, src)
            phrases = DESCRIPTIONS[cat]
            severity = int(sev[i]) if cat != "fire" else max(2, int(sev[i]))
            inc = _Incident(
                incident_id=self._next_incident_id(),
                category=cat,
                severity=severity,
                source=src,
                reporter_id=reporter,
                grid=g,
                lon=round(float(x[i]), 6),
                lat=round(float(y[i]), 6),
                description=phrases[int(desc_i[i]) % len(phrases)] + DESC_TAIL[int(tail_i[i])],
                handler_id=reporter if src == "worker" else self._grid_handler(g),
            )
            self._plan(inc, int(ts[i]))

    def _reporter(self, g: int, source: str) -> tuple[str, str]:
        rng = self.rng
        if source == "worker":
            a, b = self._wrk_off[g], self._wrk_off[g + 1]
            if b > a:
                return str(
                    self.worker_ids[self._wrk_order[a + int(rng.integers(0, b - a))]]
                ), source
            source = "resident"
        if source == "camera":
            a, b = self._cam_off[g], self._cam_off[g + 1]
            if b > a:
                return str(
                    self.camera_ids[self._cam_order[a + int(rng.integers(0, b - a))]]
                ), source
            source = "hotline"
        if source == "hotline":
            return f"12345-{int(rng.integers(0, 10**6)):06d}", source
        return f"R{int(rng.integers(0, 10**8)):08d}", source

    def _plan(self, inc: _Incident, t_report: int) -> None:
        plan = plan_lifecycle(self.rng, self.flows.select(inc.category, inc.severity), inc.source)
        draw = self._command_rng.random() if self._command_share > 0 else 1.0
        has_worker = self._wrk_off[inc.grid + 1] > self._wrk_off[inc.grid]  # one to send
        if draw < self._command_share and has_worker:
            self._push(t_report, "reported", "grid", inc)
            self.commanded.append((t_report, inc))
            return
        for off, step, level in plan:
            self._push(t_report + off, step, level, inc)

    def _due_reports(self, t1: int) -> tuple[list[int], list[bytes]]:
        ts_out: list[int] = []
        out: list[bytes] = []
        while self._heap and self._heap[0][0] <= t1:
            ts, _, step, level, inc = heapq.heappop(self._heap)
            if level == "grid":
                handler = inc.handler_id
            elif level in ("community", "street"):
                handler = f"H-{self.street_ids[self.grid_street[inc.grid]]}-{level}"
            else:
                handler = f"H-{self.district_ids[self.grid_district[inc.grid]]}"
            ev = {
                "event_id": self._next_event_id(),
                "incident_id": inc.incident_id,
                "ts": ts,
                "step": step,
                "category": inc.category,
                "severity": inc.severity,
                "source": inc.source,
                "reporter_id": inc.reporter_id,
                "handler_id": handler,
                "lon": inc.lon,
                "lat": inc.lat,
                "description": inc.description,
                "level": level,
            }
            if step == "closed":
                self._closed.append((ts, ev))
            ts_out.append(ts)
            out.append(orjson.dumps(ev))
        return ts_out, out

    # ------------------------------------------------------------ video

    def _alert(self, cam: int, label: str, score: float, ts: int, located: bool) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "alert_id": self._next_alert_id(),
            "camera_id": str(self.camera_ids[cam]),
            "label": label,
            "score": round(score, 3),
            "ts": int(ts),
        }
        if located:
            ev["lon"] = float(self.camera_x[cam])
            ev["lat"] = float(self.camera_y[cam])
        return ev

    def _video(self, t0: int, t1: int) -> tuple[list[int], list[bytes]]:
        rng = self.rng
        n_cam = len(self.camera_ids)
        lam = self.cfg.video_alerts_per_day / (DAY_MS / CHUNK_MS)
        lam *= float(hourly_rate(HOURLY_VIDEO, (t0 + t1) // 2))
        n = int(rng.poisson(lam)) if lam > 0 and n_cam else 0
        cams = rng.integers(0, max(n_cam, 1), n)
        labels = _pick(rng, LABEL_P, n)
        scores = 0.5 + 0.49 * rng.beta(2.0, 1.5, n)
        located = rng.random(n) >= NO_LOCATION_SHARE
        ts = np.sort(t0 + 1 + rng.integers(0, CHUNK_MS, n))
        items = [
            (
                int(ts[i]),
                self._alert(
                    int(cams[i]), str(labels[i]), float(scores[i]), int(ts[i]), bool(located[i])
                ),
            )
            for i in range(n)
        ]
        while self._video_heap and self._video_heap[0][0] <= t1:
            ts_s, _, ev = heapq.heappop(self._video_heap)
            items.append((ts_s, ev))
        items.sort(key=lambda it: it[0])
        return [t for t, _ in items], [orjson.dumps(ev) for _, ev in items]

    # ------------------------------------------------------------ locations
