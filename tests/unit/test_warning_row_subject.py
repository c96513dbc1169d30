"""Two warning rows of one rule and one street say what differs: the label or category
each watches, the rule's window, and when each was first and last seen (local time)."""

from __future__ import annotations

from datetime import datetime

import pytest

from dashboard.pages.warnings.components import row_subject, time_span
from pipelines.spine.events import VIDEO_LABELS
from tests.clock import TZ, named

pytestmark = pytest.mark.clock


def _video(label: str) -> dict[str, object]:
    return {"label": label, "cameras": 3, "n": 4, "window_min": 15}


def test_every_label_gives_its_own_subject() -> None:
    subjects = {row_subject(_video(lb), "zh-CN") for lb in VIDEO_LABELS}
    assert len(subjects) == len(VIDEO_LABELS)
    assert row_subject(_video("illegal_parking"), "zh-CN") == "违章停车 · 15 分钟内"
    assert row_subject(_video("smoke_fire"), "en") == "Smoke / fire · within 15 min"


def test_category_window_days_feed_and_fused_parts() -> None:
    assert row_subject({"category": "fire", "n": 2, "window_min": 30}, "en").endswith(
        "within 30 min"
    )
    assert row_subject({"category": "sanitation", "days": 7}, "zh-CN") == "环境卫生 · 7 天内"
    assert row_subject({"feed": "reports", "reasons": ["lag"]}, "en") == "Reports"
    fused = {
        "parts": {
            "threshold:s1:fire": {"category": "fire", "window_min": 30},
            "video_cluster:s1:smoke_fire": {"label": "smoke_fire", "window_min": 15},
        },
        "rules": ["threshold", "video_cluster"],
    }
    assert row_subject(fused, "en") == "Fire · Smoke / fire · within 30 min"
    assert row_subject({"n_workers": 3}, "en") == ""


def test_time_span_in_local_time() -> None:
    at3 = named("sat-03:00").ms  # 2026-12-05 03:00 Asia/Shanghai
    tz = str(TZ)
    assert time_span(at3 - 9 * 60_000, at3 + 4 * 60_000, tz) == "12-05 02:51–03:04"
    assert time_span(at3, at3, tz) == "12-05 03:00"
    assert time_span(None, at3, tz) == "12-05 03:00"
    day_before = int(datetime(2026, 12, 4, 23, 50, tzinfo=TZ).timestamp() * 1000)
    assert time_span(day_before, at3, tz) == "12-04 23:50–12-05 03:00"
    assert time_span(None, None, tz) == "—"
