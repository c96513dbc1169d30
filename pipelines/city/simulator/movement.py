"""Worker movement: patrol legs, online/offline toggles and the location pings."""

from __future__ import annotations

import numpy as np
import polars as pl
import shapely

from pipelines.city.simulator.mixes import (
    COORD_DECIMALS,
    DAY_MS,
    HOUR_MS,
    M_PER_DEG_LAT,
    MINUTE_MS,
    POOL_K,
    STRAY_SHARE,
    _ndjson_lines,
    local_hour,
)
from pipelines.city.simulator.state import _SimState


class _Movement(_SimState):
    def _speeds(self, n: int) -> np.ndarray:
        linger = self.rng.random(n) < 0.2
        return np.where(linger, self.rng.uniform(0.0, 0.2, n), self.rng.uniform(0.4, 1.8, n))

    def _episode_ms(self, online: np.ndarray, n: int) -> np.ndarray:
        """Length of the next online / offline episode (offline mean 30 min)."""
        off = float(np.clip(self.cfg.offline_share, 1e-6, 0.99))
        mean_off = 30 * MINUTE_MS
        mean_on = mean_off * (1 - off) / off
        mean = np.where(online, mean_on, mean_off)
        return (self.rng.exponential(1.0, n) * mean).astype(np.int64) + 1000

    def _location_keep(self) -> float:
        """Share of pings kept so total events/s stay under ``cfg.rate`` (0 = all)."""
        cfg = self.cfg
        if cfg.rate <= 0:
            return 1.0
        other = (cfg.incidents_per_day * 6.5 + cfg.video_alerts_per_day) / 86_400
        natural = len(self.worker_grid) * 2.0 / (cfg.ping_min_s + cfg.ping_max_s)
        return float(np.clip((cfg.rate - other) / max(natural, 1e-9), 1e-4, 1.0))

    def _locations(self, t1: int) -> tuple[np.ndarray, list[bytes]]:
        """Emit every due ping up to t1 (vectorised over workers, a few rounds)."""
        w, cfg, rng = self._w, self.cfg, self.rng
        idx_parts: list[np.ndarray] = []
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("ts", "lon", "lat", "acc", "spd", "bat")
        }
        lo_ms, hi_ms = cfg.ping_min_s * 1000, cfg.ping_max_s * 1000
        for _ in range(1000):
            due = np.flatnonzero(w.next_ping <= t1)
            if len(due) == 0:
                break
            t = w.next_ping[due]
            self._toggle_online(due, t)
            h = local_hour(t)
            since = (h - w.shift_start[due]) % 24.0
            on_duty = since < w.shift_len[due]
            gap = (w.street[due] == self.gap_street) & self._in_window("patrol_gap", t)
            emit = on_duty & w.online[due] & ~gap
            k = len(due)
            interval = rng.uniform(lo_ms, hi_ms, k)
            if self._keep < 1.0:
                interval = interval * rng.geometric(self._keep, k)
            nxt = t + interval.astype(np.int64) + 1
            # Skip ahead while not transmitting: shift start, phone back on, gap end.
            to_shift = ((w.shift_start[due] - h) % 24.0) * HOUR_MS
            nxt = np.where(~on_duty, t + to_shift.astype(np.int64) + interval.astype(np.int64), nxt)
            off_phone = on_duty & ~w.online[due]
            nxt = np.where(off_phone, np.maximum(nxt, w.next_switch[due] + 1), nxt)
            gap_end = t - (t - self.anomaly_origin_ms) % DAY_MS + 5 * HOUR_MS
            nxt = np.where(gap & on_duty & w.online[due], np.maximum(nxt, gap_end + 1), nxt)
            w.next_ping[due] = nxt
            e = due[emit]
            if len(e) == 0:
                continue
            te = t[emit]
            self._move(e, te)
            w.last_ping[e] = te
            m = len(e)
            idx_parts.append(e)
            cols["ts"].append(te)
            cols["lon"].append(w.x[e])
            cols["lat"].append(w.y[e])
            cols["acc"].append(np.clip(np.exp(rng.normal(np.log(8.0), 0.6, m)), 3.0, 50.0))
            cols["spd"].append(np.clip(w.v[e] + rng.normal(0, 0.15, m), 0.0, 2.0))
            bat = w.battery0[e] - w.drain[e] * since[emit]
            cols["bat"].append(np.clip(bat, 5.0, 100.0))
        if not idx_parts:
            return np.zeros(0, np.int64), []
        idx = np.concatenate(idx_parts)
        ts = np.concatenate(cols["ts"])
        order = np.argsort(ts, kind="stable")
        df = pl.DataFrame(
            {
                "worker_id": self._wid_series.gather(idx[order]),
                "ts": ts[order],
                "lon": np.concatenate(cols["lon"])[order],  # already rounded
                "lat": np.concatenate(cols["lat"])[order],
                "accuracy": np.round(np.concatenate(cols["acc"])[order], 1),
                "speed": np.round(np.concatenate(cols["spd"])[order], 2),
                "battery": np.round(np.concatenate(cols["bat"])[order], 0),
            }
        )
        return ts[order], _ndjson_lines(df)

    def _toggle_online(self, due: np.ndarray, t: np.ndarray) -> None:
        w = self._w
        for _ in range(3):
            sw = due[w.next_switch[due] <= t]
            if len(sw) == 0:
                return
            w.online[sw] = ~w.online[sw]
            w.next_switch[sw] += self._episode_ms(w.online[sw], len(sw))
        # Long silences (thinning, nights): draw the state afresh.
        sw_mask = w.next_switch[due] <= t
        sw = due[sw_mask]
        if len(sw):
            w.online[sw] = self.rng.random(len(sw)) >= self.cfg.offline_share
            w.next_switch[sw] = t[sw_mask] + self._episode_ms(w.online[sw], len(sw))

    def _move(self, e: np.ndarray, t: np.ndarray) -> None:
        """Walk workers ``e`` towards their waypoints for the time since their last ping."""
        w, rng = self._w, self.rng
        dt = (t - w.last_ping[e]) / 1000.0
        dx = (w.tx[e] - w.x[e]) * self.m_per_deg_lon
        dy = (w.ty[e] - w.y[e]) * M_PER_DEG_LAT
        dist = np.hypot(dx, dy)
        step = w.v[e] * dt
        arrive = step >= dist
        frac = np.where(arrive, 1.0, step / np.maximum(dist, 1e-9))
        old_x, old_y = w.x[e].copy(), w.y[e].copy()
        nx = np.round(old_x + (w.tx[e] - old_x) * frac, COORD_DECIMALS)
        ny = np.round(old_y + (w.ty[e] - old_y) * frac, COORD_DECIMALS)
        # Never leave the city: stray legs cross grid edges, and rounding a point on the
        # city's outer edge to the published precision can push it just outside.
        outside = np.asarray(self.index.assign(nx, ny)) < 0
        nx[outside], ny[outside] = old_x[outside], old_y[outside]
        arrive[outside] = True
        w.x[e], w.y[e] = nx, ny
        a = e[arrive]
        if len(a):
            home = w.grid[a]
            nb = self.neighbour[home]
            go = (~w.away[a]) & (nb >= 0) & (rng.random(len(a)) < STRAY_SHARE)
            tg = np.where(go, nb, home)
            k = rng.integers(0, POOL_K, len(a))
            tx, ty = self.pool_x[tg, k], self.pool_y[tg, k]
            stray_leg = go | w.away[a]
            # Legs inside the home grid must stay inside it (grids need not be convex).
            for attempt in range(4):
                bad = ~stray_leg & ~self._leg_inside(home, w.x[a], w.y[a], tx, ty)
                if not bad.any():
                    break
                if attempt == 3:  # stay put; the next ping tries again
                    tx[bad], ty[bad] = w.x[a][bad], w.y[a][bad]
                    break
                k2 = rng.integers(0, POOL_K, int(bad.sum()))
                tx[bad], ty[bad] = self.pool_x[home[bad], k2], self.pool_y[home[bad], k2]
            w.leg_stray[a] = stray_leg
            w.away[a] = go
            w.tx[a], w.ty[a] = tx, ty
            w.v[a] = self._speeds(len(a))

    def _leg_inside(
        self,
        g: np.ndarray,
        x0: np.ndarray,
        y0: np.ndarray,
        x1: np.ndarray,
        y1: np.ndarray,
    ) -> np.ndarray:
        """Whether each straight leg (x0, y0) → (x1, y1) lies inside grid ``g``."""
        same = (x0 == x1) & (y0 == y1)
        out = np.ones(len(g), dtype=bool)
        m = ~same
        if m.any():
            start = np.column_stack([x0[m], y0[m]])
            end = np.column_stack([x1[m], y1[m]])
            lines = shapely.linestrings(np.stack([start, end], axis=1))
            out[m] = shapely.covers(self.geoms[g[m]], lines)
        return out

    # ------------------------------------------------------------ malformed events
