"""A lighter first load: the smaller Plotly bundle, and static files compressed once.

* **Plotly.** Every chart of the dashboard is a ``scatter``, ``bar`` or ``pie`` trace (the
  maps are Leaflet, not Plotly), so the page loads plotly.js's *basic* partial bundle,
  fetched at install time to ``assets/vendor/plotly-basic.min.js`` (``dashboard/vendor.py``:
  the same plotly.js version as the ``plotly`` package, pinned by its npm hash; MIT, its
  licence beside it) instead of the full 4.6 MB
  ``plotly.min.js`` Dash would load eagerly: :func:`use_basic_plotly` drops that one
  from dcc's scripts, and dcc.Graph uses the ``window.Plotly`` the asset defines. A
  figure with another trace type would need the full bundle back
  (``tests/unit/test_static.py`` checks the trace types).
* **dash_ag_grid** (1.3 MB; only the assessment page has a grid) is loaded by the first
  grid rendered (:func:`defer_ag_grid`, ``assets/wangge_lazy_grid.js``), not by every page.
* **dash-leaflet's GeoJSON layer** (31 KB) is a chunk the library loads on first use,
  showing React's English "Loading..." in the map until it comes; every map here draws
  GeoJSON at once, so the chunk is a script of the page (:func:`ship_geojson_layer`).
* **Precompressed.** Dash's component scripts and ``/assets`` go out brotli- or
  gzip-encoded, compressed once per file, not on every request (:class:`StaticCompressor`,
  an ``after_request`` hook that runs before Flask-Compress, which then leaves them be).
  gzip (level 9) and a quick brotli (quality 5) are made on the first request; the best
  brotli (quality 11, seconds for the Plotly bundle) is made in the background, kept on
  disk under ``<var_dir>/cache/static`` by content hash (shared by every worker and
  restart) and served from then on.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import brotli
from dash import dcc
from flask import Flask, Response, request

from dashboard.responses import choose_encoding

log = logging.getLogger("wangge.dashboard")

EXTENSION = "wangge.static"
PREFIXES = ("/_dash-component-suites/", "/assets/")
TYPES = frozenset({"application/javascript", "text/javascript", "text/css", "application/json"})
PLOTLY_FULL = "package_data/plotly.min.js"
BASIC_BUNDLE = "vendor/plotly-basic.min.js"  # under assets/
GEOJSON_CHUNK = "async-GeoJSON.js"  # dash-leaflet's


def defer_ag_grid() -> None:
    """dash_ag_grid's bundle (only the assessment page shows a grid) is not a script of
    every page: Dash still serves it, ``assets/wangge_lazy_grid.js`` loads it with the
    first grid."""
    import dash_ag_grid

    for r in dash_ag_grid._js_dist:
        if r.get("relative_package_path") == "dash_ag_grid.min.js":
            r["dynamic"] = True


def ship_geojson_layer() -> None:
    """dash-leaflet's GeoJSON chunk goes out with the page's scripts (after the library's
    bundle, which takes it in when it runs), not on the first map's request."""
    import dash_leaflet

    for r in dash_leaflet._js_dist:
        if r.get("relative_package_path") == GEOJSON_CHUNK:
            r.pop("async", None)


def use_basic_plotly(assets: Path) -> None:
    """Serve the basic partial bundle (an asset) instead of Dash's full plotly.min.js."""
    if not (assets / BASIC_BUNDLE).is_file():
        log.warning("%s missing: the full plotly.js stays", assets / BASIC_BUNDLE)
        return
    dist = dcc._js_dist  # Dash appends the full bundle here
    dist[:] = [r for r in dist if r.get("relative_package_path") != PLOTLY_FULL]


@dataclass
class Compressed:
    digest: str
    encoded: dict[str, bytes] = field(default_factory=dict)


@dataclass
class StaticCompressor:
    """Static responses compressed once per URL (in memory) and once per content (disk)."""

    cache_dir: Path
    entries: dict[str, Compressed] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    compressed: int = 0  # files compressed by this process (the instrumented count)

    def install(self, server: Flask) -> None:
        server.extensions[EXTENSION] = self
        server.after_request(self.after)

    def after(self, resp: Response) -> Response:
        if (
            request.method != "GET"
            or resp.status_code != 200
            or not request.path.startswith(PREFIXES)
            or resp.mimetype not in TYPES
            or "Content-Encoding" in resp.headers
        ):
            return resp
        key = request.full_path
        with self.lock:
            entry = self.entries.get(key)
        if entry is None:
            resp.direct_passthrough = False
            entry = self._compress(resp.get_data())
            with self.lock:
                self.entries[key] = entry
        enc = choose_encoding(request.headers.get("Accept-Encoding", ""), 10_000)
        body = entry.encoded.get(enc) if enc else None
        vary = resp.headers.get("Vary", "")
        if "accept-encoding" not in vary.lower():
            resp.headers["Vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
        if body is None:
            return resp
        resp.direct_passthrough = False
        resp.set_data(body)
        resp.headers["Content-Encoding"] = enc
        etag, weak = resp.get_etag()
        if etag and not weak:
            resp.set_etag(f"{etag}:{enc}")
        return resp

    def _compress(self, raw: bytes) -> Compressed:
        digest = hashlib.sha256(raw).hexdigest()[:32]
        entry = Compressed(digest)
        if len(raw) < 500:
            return entry
        best = self.cache_dir / f"{digest}.br"
        gz = self.cache_dir / f"{digest}.gz"
        if best.is_file() and gz.is_file():
            entry.encoded = {"br": best.read_bytes(), "gzip": gz.read_bytes()}
            return entry
        entry.encoded = {
            "gzip": gzip.compress(raw, compresslevel=9, mtime=0),
            "br": brotli.compress(raw, quality=5),
        }
        self.compressed += 1
        threading.Thread(
            target=self._best, args=(raw, entry), name="static-br", daemon=True
        ).start()
        return entry

    def _best(self, raw: bytes, entry: Compressed) -> None:
        """Brotli at its best, on disk for every worker, then served by this one."""
        try:
            br = brotli.compress(raw, quality=11)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for suffix, data in ((".gz", entry.encoded["gzip"]), (".br", br)):
                tmp = self.cache_dir / f"{entry.digest}{suffix}.{os.getpid()}.tmp"
                tmp.write_bytes(data)
                tmp.replace(self.cache_dir / f"{entry.digest}{suffix}")
            entry.encoded = {**entry.encoded, "br": br}
        except OSError:  # a read-only disk: the quick encodings stay
            log.debug("static precompress not kept", exc_info=True)
