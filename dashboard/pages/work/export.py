"""Track export (CSV of a replayed track): one worker's (the worker's grid in the caller's
scope) or a grid's (the grid in scope; the same in-scope workers, capped, as the page
replays); a window as on the page; people roles only, rate-limited per user (shared in
Redis) and audited. The permission is decided before anything is read (nothing here is
cached: each export reads SQL for its own request)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, Response, make_response, request

from dashboard.auth import allowed, authorize, principal
from dashboard.backend import EXTENSION, Backend
from dashboard.guard import Guard
from dashboard.pages.work import queries as WQ
from pipelines.assessment.exports import neutralise


def track_csv(
    rows: list[tuple[str, int, float, float, str]],
    tz: str,
    names: Mapping[str, str] | None = None,
) -> str:
    """worker_id, UTC time, local time, lon, lat, grid_id, then the worker's and the grid's
    names (from ``names``; empty when unknown) — one line per track point."""
    names = names or {}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        ["worker_id", "time_utc", "time_local", "lon", "lat", "grid_id", "worker_name", "grid_name"]
    )
    zone = ZoneInfo(tz)
    for worker_id, ts, lon, lat, grid in rows:
        utc = datetime.fromtimestamp(ts / 1000, UTC)
        w.writerow(
            [
                worker_id,
                utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                utc.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                f"{lon:.6f}",
                f"{lat:.6f}",
                grid,
                neutralise(names.get(worker_id, "")),
                neutralise(names.get(grid or "", "")),
            ]
        )
    return out.getvalue()


def _window(b: Backend) -> WQ.Window:
    """The request's window: ``?hours=N`` or ``?day=YYYY-MM-DD&from=H&to=H`` (as on the page)."""
    a = request.args
    return WQ.replay_window(
        WQ.DAY if "day" in a else a.get("hours", ""),
        a.get("day"),
        a.get("from"),
        a.get("to"),
        now_ms=b.now_ms(),
        tz=b.settings.live.timezone,
        retention_days=b.settings.privacy.track_retention_days,
    )


def install(server: Flask, guard: Guard) -> None:
    def send(b: Backend, target: str, pick: Callable[[WQ.Window], list[str]]) -> Response:
        """The CSV of the picked workers' tracks in the request's window; rate-limited per
        user and audited (target, window, workers, points)."""
        p = principal()
        assert p is not None  # the route policy requires a session
        if guard.rate_limited(f"export:{p.username}", b.settings.auth.export_rate_per_minute):
            guard.audit("track_export_limited", target=target)
            return make_response({"error": "rate limited"}, 429)
        try:
            win = _window(b)
        except WQ.WindowError as exc:
            return make_response({"error": exc.key}, 400)
        workers = pick(win)
        pts, _ = WQ.tracks(b.engine, workers, win.since_ms, win.until_ms)
        rows = list(pts.select("worker_id", "ts_ms", "lon", "lat", "grid_id").iter_rows())
        detail = {**win.detail(), "workers": workers, "points": len(rows)}
        guard.audit("track_export", target=target, detail=detail)
        names = dict(b.area_names)
        roster = b.roster()  # the route admits people roles only (tracks)
        names.update(zip(roster["worker_id"].to_list(), roster["name"].to_list(), strict=True))
        resp = make_response(track_csv(rows, b.settings.live.timezone, names))
        resp.headers["Content-Type"] = "text/csv; charset=utf-8"
        resp.headers["Content-Disposition"] = f'attachment; filename="track-{target}.csv"'
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @server.route("/export/track/<worker_id>.csv")
    def work_track_csv(worker_id: str) -> Response:
        b: Backend = server.extensions[EXTENSION]
        grid = WQ.worker_grid(b.roster(), worker_id)  # the worker's own grid decides
        if not authorize(grid, "tracks", city=b.city, audited=False).granted:
            return guard.deny("worker outside scope")  # audited, rate-limited
        return send(b, worker_id, lambda _win: [worker_id])

    @server.route("/export/track/grid/<grid_id>.csv")
    def work_grid_track_csv(grid_id: str) -> Response:
        """The workers the page replays for the grid (same choice, same cap)."""
        b: Backend = server.extensions[EXTENSION]
        grant = authorize(grid_id, "tracks", city=b.city, audited=False)
        if b.city.level_of(grid_id) != "grid" or not grant.granted:
            return guard.deny("grid outside scope")  # audited, rate-limited

        def pick(win: WQ.Window) -> list[str]:
            shown, _total = WQ.grid_workers(
                b.engine, b.roster(), grid_id, win, lambda g: allowed(b.city, g)
            )
            return shown

        return send(b, f"grid-{grid_id}", pick)
