"""Text that reaches screens: control and bidirectional characters refused in ids (every
entry: the rule, stream ingest, the roster import) and neutralised in free text."""

from __future__ import annotations

import orjson
import polars as pl
import pytest

from pipelines.access import text
from pipelines.gridwork import tracks
from pipelines.spine import events

OVERRIDES = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b"]
OTHER = ["\u200b", "\u200e", "\u200f", "\u061c", "\ufeff", "\u2028", "\u2029", "\ud800"]


@pytest.mark.parametrize("ch", OVERRIDES + CONTROLS + OTHER, ids=lambda c: f"U+{ord(c):04X}")
def test_ids_with_control_or_bidi_characters_are_refused(ch: str) -> None:
    value = f"INC-{ch}gpj.exe"
    assert not text.is_clean_id(value)
    with pytest.raises(text.BadText) as err:
        text.check_id(value, "incident id")
    assert f"U+{ord(ch):04X}" in str(err.value) and ch not in str(err.value)


@pytest.mark.parametrize("value", ["320102-001", "INC-20260101-0001", "w_1.a", "网格-甲", "é ü"])
def test_ordinary_ids_pass(value: str) -> None:
    assert text.is_clean_id(value) and text.check_id(value) == value


def test_non_strings_are_not_clean_ids() -> None:
    assert not text.is_clean_id(None) and not text.is_clean_id(320102)


def test_free_text_is_neutralised() -> None:
    assert text.clean_text("INC-\u202egpj.exe") == "INC-gpj.exe"
    assert text.clean_text("a\u2066b\u2069c\u202ad") == "abcd"
    assert text.clean_text("line 1\r\nline 2\tx\x1b[31m") == "line 1\nline 2\tx[31m"
    assert text.clean_text("a\u2028b") == "a\nb"
    assert text.clean_text("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert text.clean_text("阿拉伯 \u200f ok") == "阿拉伯 \u200f ok"  # a plain RLM mark stays
    for ch in OVERRIDES:
        assert ch not in text.clean_text(f"x{ch}y")


def test_names_are_one_line() -> None:
    assert text.clean_name("  张\u202e三\n\t李 ") == "张三  李"


def test_visible_shows_escapes() -> None:
    assert text.visible("INC-\u202egpj\r\n") == "INC-\\u202egpj\\r\\n"
    assert text.visible("plain") == "plain"


def test_the_polars_rule_is_the_python_rule() -> None:
    values = [f"a{ch}b" for ch in OVERRIDES + CONTROLS + OTHER[:-1]] + ["320102", "网格"]
    got = pl.Series(values).str.contains(text.ID_REGEX).to_list()
    assert got == [not text.is_clean_id(v) for v in values]


def _batch(feed: str, event: dict[str, object]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return events.decode_batch(
        feed,
        [("1-0", orjson.dumps(event))],
        now_ms=1_767_225_600_000,
        future_skew_ms=300_000,
        max_age_ms=30 * 86_400_000,
        max_payload_bytes=16384,
    )


REPORT = {
    "event_id": "E1", "incident_id": "INC-1", "ts": 1_767_225_500_000, "step": "reported",
    "category": "fire", "severity": 2, "source": "worker", "lon": 118.8, "lat": 32.0,
}  # fmt: skip


@pytest.mark.parametrize("field", ["incident_id", "event_id", "reporter_id", "handler_id"])
def test_stream_ids_with_bidi_characters_are_dead_letters(field: str) -> None:
    good, dead = _batch("reports", {**REPORT, field: "INC-\u202egpj.exe"})
    assert good.height == 0
    assert dead["reason"].to_list() == ["bad_type"] and field in dead["detail"][0]
    good, dead = _batch("reports", REPORT)  # the same event with a clean id is fine
    assert good.height == 1 and dead.height == 0


def test_location_and_video_ids_too() -> None:
    loc = {"worker_id": "W\u20661", "ts": 1_767_225_500_000, "lon": 118.8, "lat": 32.0}
    assert _batch("locations", loc)[1]["reason"].to_list() == ["bad_type"]
    video = {"alert_id": "A1", "camera_id": "C\r\n1", "label": "smoke_fire", "score": 0.9}
    video |= {"ts": 1_767_225_500_000}
    assert _batch("video", video)[1]["reason"].to_list() == ["bad_type"]


def test_roster_names_are_neutralised_and_bad_ids_refused() -> None:
    csv = (
        "worker_id,name,type,grid_id\n"
        "W1,张\u202e三,full_time,G1\n"
        "W\u202e2,李四,full_time,G1\n"
        'W3,"王\n五",full_time,G1\n'
    )
    rows, errors = tracks.parse_roster_csv(csv, {"G1"})
    assert [r["name"] for r in rows] == ["张三", "王 五"]
    assert [(e.line, e.column) for e in errors] == [(3, "worker_id")]


def test_every_ascii_character_follows_the_id_rule() -> None:
    """ASCII ids take a fast path: each of the 128 characters is refused exactly when its
    Unicode category is one no id contains (Cc, Cf, Cs, Zl, Zp)."""
    import unicodedata

    from pipelines.access.text import is_clean_id

    for code in range(128):
        ch = chr(code)
        refused = unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"}
        assert is_clean_id(f"INC-{ch}-1") is not refused, hex(code)
