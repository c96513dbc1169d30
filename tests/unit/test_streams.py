"""Parsing raw stream replies: (entry id, data) in order, deleted entries dropped."""

from __future__ import annotations

from pipelines.spine.streams import _entries, _stream_entries


def test_entries_take_the_data_field() -> None:
    raw = [
        [b"1-0", [b"data", b"{}"]],
        [b"1-1", None],  # deleted while pending
        [b"2-0", [b"other", b"x", b"data", b"{1}"]],
        ["3-0", [b"other", b"x"]],
    ]
    assert _entries(raw) == [("1-0", b"{}"), ("2-0", b"{1}"), ("3-0", b"")]


def test_stream_entries_of_resp2_and_resp3_replies() -> None:
    entries = [[b"1-0", [b"data", b"{}"]]]
    assert _stream_entries(None) == [] and _stream_entries({}) == [] and _stream_entries([]) == []
    assert _stream_entries([[b"s", entries]]) == entries
    assert _stream_entries({b"s": entries}) == entries
