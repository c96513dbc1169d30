"""The lighter first load (``dashboard/static.py``): the basic Plotly bundle draws every
chart the dashboard makes, and the encoding chosen for a client.

The basic bundle holds the ``bar``, ``pie`` and ``scatter`` trace modules (its package's
README); every figure the dashboard builds must use only those, and the bundle must be
the plotly.js version the installed ``plotly`` package ships.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs_version

from dashboard import vendor
from dashboard.components.charts import empty_figure
from dashboard.components.panels import category_figure, label_figure, trend_figure
from dashboard.i18n import t
from dashboard.responses import choose_encoding
from dashboard.static import BASIC_BUNDLE
from pipelines.spine.events import CATEGORIES

ROOT = Path(__file__).resolve().parents[2]
BASIC_TRACES = {"bar", "pie", "scatter"}


def test_every_figure_uses_only_the_basic_bundles_traces() -> None:
    hours = [494_000 + i for i in range(3)]  # hours since the epoch
    figures = [
        trend_figure({"hours": hours, "reports": [1, 2, 3], "video": [0, 1, 0]}, "en", "UTC"),
        category_figure({"dispute": 3}, "zh-CN"),
        label_figure({"smoke_fire": 2}, "en"),
        empty_figure("en"),
    ]
    types = {trace["type"] for fig in figures for trace in fig["data"]}
    assert types == BASIC_TRACES  # each builder drew, with a basic trace type


def test_no_other_module_builds_a_figure() -> None:
    """Figures come from the builders above only (no plotly.graph_objects/express, no
    other trace dicts), so the test above covers every chart, map pages included."""
    builders = {"panels.py", "charts.py"}
    offenders = []
    for path in (ROOT / "dashboard").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"plotly\.(graph_objects|express)", text):
            offenders.append(path.name)
        if path.name not in builders and re.search(r'"type":\s*"(scatter|bar|pie)\w*"', text):
            offenders.append(path.name)
    assert not offenders


def test_the_pinned_bundle_is_the_packaged_version() -> None:
    assert vendor.PLOTLY_BASIC.version == get_plotlyjs_version()
    bundle = ROOT / "assets" / BASIC_BUNDLE
    if not bundle.is_file():
        pytest.skip("the basic bundle was not fetched (an install without network)")
    head = bundle.read_text(encoding="utf-8")[:200]
    assert f"plotly.js (basic - minified) v{get_plotlyjs_version()}" in head


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_fetched_package_is_written_only_when_it_is_the_pinned_one(tmp_path: Path) -> None:
    data = _tarball({"package/a.js": b"console.log(1)", "package/LICENSE": b"MIT"})
    pin = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    pkg = vendor.Package("x", "1.0.0", pin, {"package/a.js": "a.js", "package/LICENSE": "a.txt"})
    vendor.extract(pkg, data, tmp_path / "ok")
    assert (tmp_path / "ok" / "a.js").read_bytes() == b"console.log(1)"
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(vendor.IntegrityError):
        vendor.extract(pkg, tampered, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_encoding_follows_what_the_client_accepts() -> None:
    assert choose_encoding("gzip, deflate, br", 10_000) == "br"
    assert choose_encoding("gzip, deflate", 10_000) == "gzip"
    assert choose_encoding("br;q=0, gzip", 10_000) == "gzip"
    assert choose_encoding("identity", 10_000) == ""
    assert choose_encoding("", 10_000) == ""
    assert choose_encoding("gzip, br", 100) == ""  # too small to be worth it


def test_every_category_reads_its_count_grouped_like_the_tiles_zeros_included() -> None:
    """Each category's count is written exactly once, grouped (1,226), a 0 too: Plotly
    writes no text on a bar of no width, so the figure must write it elsewhere."""
    counts = {"dispute": 1226, "fire": 5, "other": 1_000_000}  # the other categories: 0
    fig = category_figure(counts, "en")
    written: dict[str, list[str]] = {}
    for trace in fig["data"]:
        for name, text, x in zip(trace["y"], trace["text"], trace["x"], strict=True):
            drawn = trace["type"] != "bar" or x > 0  # (seen in a headless render)
            if text and drawn:
                written.setdefault(name, []).append(text)
    expected = {t(f"cat.{c}", "en"): [f"{counts.get(c, 0):,}"] for c in CATEGORIES}
    assert written == expected
    assert len(expected) > len(counts)  # some categories are 0
