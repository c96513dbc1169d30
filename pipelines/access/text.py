"""Text that reaches a screen: ids are refused, free text is neutralised.

Bidirectional controls (U+202A–202E embeddings and overrides, U+2066–2069 isolates) make
a screen show characters in another order than they are stored: ``INC-\\u202egpj.exe``
is displayed as ``INC-exe.jpg``. Control characters break lines and logs. So:

* **ids** (area, grid, worker, incident, event, warning, camera, alert ids), wherever they
  enter (URLs, callback inputs, the command line, a roster import, a stream), are refused
  when they carry a control character (Unicode category Cc: C0, DEL, C1), a format
  character (Cf: every bidirectional control, zero-width characters, the BOM), a line or
  paragraph separator (Zl, Zp) or a lone surrogate (Cs) — :func:`check_id`,
  :func:`is_clean_id`, and :data:`ID_REGEX` / :func:`id_checks` for Polars columns;
* **free text** (notes, descriptions) loses its bidirectional embeddings, overrides and
  isolates and its control characters except tab and newline (CR LF becomes LF); a lone
  surrogate becomes U+FFFD — :func:`clean_text`;
* **names** (roster names, display names) are free text on one line — :func:`clean_name`.

Pure functions, no I/O: the same rule everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

# Categories an id never contains.
ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# The same rule for a Polars (Rust regex) column; strings there are valid UTF-8 (no Cs).
ID_REGEX = r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]"
# Embeddings, overrides (U+202A–202E) and isolates (U+2066–2069): removed from free text.
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
_KEPT_CONTROLS = frozenset("\t\n")
# The Cc characters of ASCII (C0 and DEL): an ASCII string has no Cf, Cs, Zl or Zp.
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadText(ValueError):
    """An id carrying a character that is never part of an id."""


def bad_id_chars(value: str) -> list[str]:
    """The characters of ``value`` that no id may contain (in order, repeats kept)."""
    return [ch for ch in value if unicodedata.category(ch) in ID_CATEGORIES]


def is_clean_id(value: Any) -> bool:
    """True for a string without control, format, separator or surrogate characters."""
    if not isinstance(value, str):
        return False
    if value.isascii():  # the usual case, checked fast: ASCII's only such category is Cc
        return _ASCII_CONTROL.search(value) is None
    return not bad_id_chars(value)


def describe(chars: Iterable[str]) -> str:
    """``U+202E, U+000A`` — how a refusal names the characters (never the raw ones)."""
    seen = dict.fromkeys(chars)
    return ", ".join(f"U+{ord(ch):04X}" for ch in seen)


def visible(value: str) -> str:
    """``value`` with every character an id may not carry shown as an escape (``\\u202e``):
    how a refused or suspicious value is recorded and displayed (audit log, errors)."""
    if not bad_id_chars(value):
        return value
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ID_CATEGORIES
        else ch
        for ch in value
    )


def check_id(value: str, what: str = "id") -> str:
    """``value`` unchanged, or :class:`BadText` naming the offending characters."""
    bad = bad_id_chars(value)
    if bad:
        raise BadText(
            f"{what} {value!a} contains control or bidirectional characters "
            f"({describe(bad)}); ids may not"
        )
    return value


def clean_text(value: str) -> str:
    """Free text made safe to show: no bidi embeddings/overrides/isolates, no control
    characters but tab and newline, lone surrogates replaced by U+FFFD."""
    value = value.replace("\r\n", "\n")
    out = []
    for ch in value:
        if ch in BIDI_CONTROLS:
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in _KEPT_CONTROLS:
            continue
        if cat in ("Zl", "Zp"):
            out.append("\n")
        elif cat == "Cs":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def clean_name(value: str) -> str:
    """A name on one line: :func:`clean_text`, then tabs and newlines become spaces."""
    return " ".join(clean_text(value).replace("\t", " ").split("\n")).strip()


def id_checks(columns: Iterable[str]) -> list[tuple[Any, str, str]]:
    """Validation checks for id columns of a stream batch: ``(condition, reason,
    detail)`` as :mod:`pipelines.spine.events` lists them; such an entry is a dead letter
    with reason ``bad_type``."""
    import polars as pl

    return [
        (pl.col(c).str.contains(ID_REGEX), "bad_type", f"{c} has a control or bidi character")
        for c in columns
    ]
