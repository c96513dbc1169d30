"""Column widths of the dark AG Grids (``pages.assessment.components.grid``): wide
enough that no word of a wrapping text is split across lines and a one-line text fits."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

# The grid's 13 px font (``GRID_THEME``): a CJK character's width, an average Latin
# letter's, and a cell's side paddings (9 px each: ``GRID_THEME``) with pixels to spare.
CJK_PX = 13.0
LETTER_PX = 7.5
CELL_PAD_PX = 20
_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]")
# where a line may break: spaces, after a hyphen, anywhere in CJK text
_BREAKS = re.compile(r"[\s\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]+|(?<=-)")


def text_px(text: str) -> float:
    cjk = len(_CJK.findall(text))
    return cjk * CJK_PX + (len(text) - cjk) * LETTER_PX


def fit(wrapping: Iterable[str], floor: int, whole: Iterable[str] = ()) -> int:
    """A column's least width: none of the words of the texts that wrap (a header, a
    wrapping cell: "City management" must not wrap as "City managemen / t") is split,
    each text kept on one line fits (a cell that does not wrap); at least ``floor``."""
    words = (w for text in wrapping for w in _BREAKS.split(text))
    widest = max([0.0, *map(text_px, words), *map(text_px, whole)])
    return max(floor, math.ceil(widest) + CELL_PAD_PX)
