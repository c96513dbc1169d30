"""The scripted anomalies of the simulator: which streets, when, and the fire scenario."""

from __future__ import annotations

import heapq

import numpy as np

from pipelines.city.simulator.mixes import DAY_MS, MINUTE_MS
from pipelines.city.simulator.state import _Incident, _SimState


class _Anomalies(_SimState):
    def _choose_anomaly_streets(self) -> None:
        ns = len(self.street_ids)
        cams = np.bincount(self.grid_street[self.camera_grid], minlength=ns)
        wrk = np.bincount(self.grid_street[self.worker_grid], minlength=ns)
        self.fire_street = int(np.argmax(cams))
        cand = [s for s in np.argsort(-wrk, kind="stable")[:6].tolist() if s != self.fire_street]
        self.surge_street = int(cand[int(self.rng.integers(0, min(5, len(cand))))]) if cand else 0
        focus = np.flatnonzero(self.street_ids == self.cfg.focus_street)
        if len(focus) and int(focus[0]) != self.fire_street:
            self.surge_street = int(focus[0])  # the demo operator's street
        rest = [
            s
            for s in np.argsort(-wrk, kind="stable").tolist()
            if s not in (self.fire_street, self.surge_street) and wrk[s] >= 2
        ]
        self.gap_street = int(rest[int(self.rng.integers(0, min(8, len(rest))))]) if rest else -1
        sg = np.flatnonzero(self.grid_street == self.surge_street)
        p = self.density[sg]
        self._surge_grids, self._surge_p = sg, p / p.sum()
        self._street_share = np.bincount(self.grid_street, weights=self.density, minlength=ns)

    # ------------------------------------------------------------ ids

    def _schedule_anomalies(self, until_ms: int) -> None:
        """Script each simulated day's anomalies once the clock reaches that day."""
        if not self.cfg.anomalies:
            return
        while self.anomaly_origin_ms + self._anomaly_days * DAY_MS < until_ms:
            day0 = self.anomaly_origin_ms + self._anomaly_days * DAY_MS
            self._anomaly_days += 1
            w = {k: day0 + int(lo * MINUTE_MS) for k, (lo, _) in self._windows_min().items()}
            ends = {k: day0 + int(hi * MINUTE_MS) for k, (_, hi) in self._windows_min().items()}
            self.anomalies.append(
                {
                    "kind": "dispute_surge",
                    "area_id": str(self.street_ids[self.surge_street]),
                    "start_ms": w["dispute_surge"],
                    "end_ms": ends["dispute_surge"],
                    "factor": 8,
                }
            )
            self._schedule_fire(w["fire_cluster"])
            if self.gap_street >= 0:
                self.anomalies.append(
                    {
                        "kind": "patrol_gap",
                        "area_id": str(self.street_ids[self.gap_street]),
                        "start_ms": w["patrol_gap"],
                        "end_ms": ends["patrol_gap"],
                        "workers": int(np.sum(self._w.street == self.gap_street)),
                    }
                )

    def _schedule_fire(self, t0: int) -> None:
        rng = self.rng
        cams = np.flatnonzero(self.grid_street[self.camera_grid] == self.fire_street)
        if len(cams) == 0:
            return
        chosen = np.sort(rng.choice(cams, min(len(cams), 6), replace=False))
        for c in chosen.tolist():
            for _ in range(int(rng.integers(1, 3))):
                ts = t0 + int(rng.integers(0, 9 * MINUTE_MS))
                ev = self._alert(c, "smoke_fire", float(rng.uniform(0.8, 0.99)), ts, True)
                self._seq += 1
                heapq.heappush(self._video_heap, (ts, self._seq, ev))
        c0 = int(chosen[0])
        inc = _Incident(
            incident_id=self._next_incident_id(),
            category="fire",
            severity=3,
            source="camera",
            reporter_id=str(self.camera_ids[c0]),
            grid=int(self.camera_grid[c0]),
            lon=float(self.camera_x[c0]),
            lat=float(self.camera_y[c0]),
            description="多个摄像头发现浓烟，疑似火情",
            handler_id=self._grid_handler(int(self.camera_grid[c0])),
        )
        self._plan(inc, t0 + 3 * MINUTE_MS)
        self.anomalies.append(
            {
                "kind": "fire_cluster",
                "area_id": str(self.street_ids[self.fire_street]),
                "start_ms": t0,
                "end_ms": t0 + 10 * MINUTE_MS,
                "cameras": [str(self.camera_ids[c]) for c in chosen.tolist()],
                "incident_id": inc.incident_id,
            }
        )

    def _in_window(self, kind: str, t: np.ndarray) -> np.ndarray:
        """Whether times fall in the daily window of a scripted anomaly."""
        if not self.cfg.anomalies:
            return np.zeros(np.shape(t), dtype=bool)
        lo, hi = self._windows_min()[kind]
        rel = (np.asarray(t, np.int64) - self.anomaly_origin_ms) % DAY_MS
        return (rel >= lo * MINUTE_MS) & (rel < hi * MINUTE_MS)

    def _windows_min(self) -> dict[str, tuple[float, float]]:
        """Each scripted anomaly's window in minutes after the start of a simulated day
        (``anomaly_start_min`` = 60: the surge 60–120, the fire 90–100, the gap 120–300)."""
        a = float(self.cfg.anomaly_start_min)
        return {
            "dispute_surge": (a, a + 60),
            "fire_cluster": (a + 30, a + 40),
            "patrol_gap": (a + 60, a + 240),
        }

    # ------------------------------------------------------------ incidents
