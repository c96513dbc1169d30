"""Track export (CSV of one worker's replayed track): people roles only, the worker's grid
in the caller's scope, rate-limited per user (shared in Redis) and audited."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, Response, make_response, request

from dashboard import workq as WQ
from dashboard.auth import Guard, allowed, principal
from dashboard.backend import EXTENSION, Backend


def track_csv(rows: list[tuple[int, float, float, str]], worker_id: str, tz: str) -> str:
    """worker_id, UTC time, local time, lon, lat, grid_id — one line per track point."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["worker_id", "time_utc", "time_local", "lon", "lat", "grid_id"])
    zone = ZoneInfo(tz)
    for ts, lon, lat, grid in rows:
        utc = datetime.fromtimestamp(ts / 1000, UTC)
        w.writerow(
            [
                worker_id,
                utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                utc.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                f"{lon:.6f}",
                f"{lat:.6f}",
                grid,
            ]
        )
    return out.getvalue()


def install(server: Flask, guard: Guard) -> None:
    @server.route("/export/track/<worker_id>.csv")
    def work_track_csv(worker_id: str) -> Response:
        b: Backend = server.extensions[EXTENSION]
        p = principal()
        assert p is not None  # the route policy requires a session
        grid = WQ.worker_grid(b.roster(), worker_id)
        if grid is None or not allowed(b.city, grid):
            return guard.deny("worker outside scope")
        if guard.rate_limited(f"export:{p.username}", b.settings.auth.export_rate_per_minute):
            guard.audit("track_export_limited", target=worker_id)
            return make_response({"error": "rate limited"}, 429)
        try:
            hours = int(request.args.get("hours", "2"))
        except ValueError:
            hours = 2
        hours = hours if hours in WQ.WINDOWS_H else WQ.WINDOWS_H[1]
        now = b.now_ms()
        pts, _ = WQ.track(b.engine, worker_id, now - hours * 3_600_000, now)
        rows = list(pts.select("ts_ms", "lon", "lat", "grid_id").iter_rows())
        guard.audit("track_export", target=worker_id, detail={"hours": hours, "points": len(rows)})
        resp = make_response(track_csv(rows, worker_id, b.settings.live.timezone))
        resp.headers["Content-Type"] = "text/csv; charset=utf-8"
        resp.headers["Content-Disposition"] = f'attachment; filename="track-{worker_id}.csv"'
        resp.headers["Cache-Control"] = "no-store"
        return resp
