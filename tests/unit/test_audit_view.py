"""The audit page's pure parts: day range in the city's zone, details in words, rows in
local time, the chain check as a sentence (both languages)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dashboard import i18n
from dashboard.pages.audit import queries as Q
from pipelines.access.audit import VerifyResult

TZ = "Asia/Shanghai"


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_day_range_is_local_days_both_included() -> None:
    since, until = Q.time_range("2026-12-05", "2026-12-06", TZ)
    assert since == utc_ms(2026, 12, 4, 16)  # 2026-12-05 00:00 in Shanghai (UTC+8)
    assert until == utc_ms(2026, 12, 6, 16)  # the end of 2026-12-06 there
    assert Q.time_range("2026-12-06", "2026-12-05", TZ) == (since, until)  # swapped
    assert Q.time_range(None, None, TZ) == (None, None)
    assert Q.time_range("not a date", "2026-12-06T00:00:00", TZ) == (None, until)


def test_default_range_is_the_last_week_in_local_days() -> None:
    now = utc_ms(2026, 12, 4, 17)  # already 12-05 01:00 in Shanghai
    assert Q.default_range(now, TZ) == ("2026-11-29", "2026-12-05")


def test_local_time_is_iso_and_in_the_city_zone() -> None:
    assert Q.local_time(utc_ms(2026, 12, 4, 16, 30), TZ) == "2026-12-05 00:30:00"


def test_details_are_words_not_json() -> None:
    detail = json.dumps(
        {"role": "district_commander", "scope": "320102", "ip": "10.0.0.7", "x": {"y": [1, 2]}}
    )
    names = {"320102": "玄武区"}
    assert Q.detail_lines(detail, "zh-CN", names, TZ) == [
        ("角色", i18n.t("role.district_commander", "zh-CN")),
        ("范围", "玄武区"),
        ("IP 地址", "10.0.0.7"),
        ("x.y", "1, 2"),
    ]
    assert Q.detail_lines(detail, "en", names, TZ)[2] == ("IP address", "10.0.0.7")
    ms = utc_ms(2026, 12, 4, 16)
    assert Q.detail_lines(json.dumps({"expires_ms": ms}), "zh-CN", {}, TZ) == [
        ("有效期至", "2026-12-05 00:00:00")
    ]
    assert Q.detail_lines("plain \x1b[31mtext", "zh-CN", {}, TZ)[0][0] == ""
    assert "\x1b" not in Q.detail_lines("plain \x1b[31mtext", "zh-CN", {}, TZ)[0][1]
    assert Q.detail_lines(None) == [] and Q.detail_lines("") == []


def test_rows_in_words() -> None:
    row = {
        "seq": 7,
        "at_ms": utc_ms(2026, 12, 4, 16),
        "actor": "cmd",
        "role": "district_commander",
        "scope": "320102",
        "action": "denied",
        "target": "/geo/area/320104.json",
        "detail": json.dumps({"why": "out of scope"}),
    }
    (zh,) = Q.view_rows([row], TZ, "zh-CN", {"320102": "玄武区"})
    assert zh["at"] == "2026-12-05 00:00:00" and zh["scope"] == "玄武区"
    assert zh["scope_id"] == "320102" and zh["action"] == "越权访问被拒绝"
    assert zh["detail"] == [("原因", "out of scope")]
    (en,) = Q.view_rows([{**row, "action": "some_new_action"}], TZ, "en", {})
    assert en["action"] == "some_new_action" and en["scope"] == "320102"  # unknown: as is


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_chain_check_in_words(lang: str) -> None:
    ok, intact = Q.verify_text(VerifyResult(True, 5, 1, 5), lang)
    assert intact and "5" in ok and "audit log OK" not in ok
    bad, intact = Q.verify_text(VerifyResult(False, 5, bad_seq=3, reason="hash mismatch"), lang)
    assert not intact and "3" in bad and "hash mismatch" in bad
    empty, _ = Q.verify_text(VerifyResult(True, 0), lang)
    assert empty == i18n.t("audit.ok_empty", lang)


def test_every_audited_action_has_words_in_both_languages() -> None:
    """Every action the code audits (found in the source) is in the catalog."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for path in [
        *root.joinpath("dashboard").rglob("*.py"),
        *root.joinpath("pipelines").rglob("*.py"),
    ]:
        src = path.read_text(encoding="utf-8")
        found |= set(re.findall(r"\.audit\(\s*\"([a-z_]+)\"", src))
        found |= set(re.findall(r"action=\"([a-z_]+)\"", src))
    found -= {"store_true", "store_false", "store", "append", "count"}  # argparse's
    assert "login" in found and "export" in found
    missing = sorted(a for a in found if f"audit.action.{a}" not in i18n.CATALOG)
    assert missing == []
