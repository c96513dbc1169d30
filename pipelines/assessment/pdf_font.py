"""The CJK font the PDF export embeds.

reportlab embeds (a subset of) a TrueType font — a ``.ttf`` or a ``.ttc`` collection with
TrueType outlines; it cannot embed CFF/OpenType-PS fonts (e.g. Noto Sans CJK ``.otf``/
``.ttc``). The font comes from ``assessment.pdf_font`` (a path, ``path#index`` for a member
of a collection) or, when that is empty, the first of :data:`SYSTEM_FONTS` present — on
Debian/Ubuntu ``apt-get install fonts-wqy-microhei`` (WenQuanYi Micro Hei, Apache-2.0 /
GPLv3 with font exception). No font is a clear error, never a PDF of blank boxes."""

from __future__ import annotations

import zlib
from pathlib import Path

FONT_NAME = "WanggeCJK"

# (path, member of a collection) — TrueType outlines with the CJK and the symbols we print
SYSTEM_FONTS: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/share/fonts/wqy-microhei/wqy-microhei.ttc", 0),  # Fedora / RHEL
    ("/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc", 0),  # Arch
    ("C:/Windows/Fonts/msyh.ttc", 0),
    ("C:/Windows/Fonts/simhei.ttf", 0),
)

# characters the export always prints besides the text itself: each must have a glyph
REQUIRED = "网格考核排名第页共·−—：（）"


class PdfFontError(RuntimeError):
    """No usable CJK TrueType font: what to install or configure."""


def parse(spec: str) -> tuple[Path, int]:
    """``/path/font.ttc#1`` → (path, 1); a plain path is member 0."""
    path, _, index = spec.partition("#")
    return Path(path), int(index or 0)


def locate(configured: str) -> tuple[Path, int]:
    """The font file to embed: the configured one, else the first system font present."""
    if configured:
        path, index = parse(configured)
        if not path.is_file():
            raise PdfFontError(f"assessment.pdf_font: no such file: {path}")
        return path, index
    for name, member in SYSTEM_FONTS:
        if Path(name).is_file():
            return Path(name), member
    raise PdfFontError(
        "no CJK TrueType font for the PDF export: install one (Debian/Ubuntu: "
        "apt-get install fonts-wqy-microhei) or set assessment.pdf_font to a .ttf/.ttc "
        "with TrueType outlines"
    )


def register(configured: str) -> str:
    """Register the font with reportlab (once per file) and return its name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    path, index = locate(configured)
    name = f"{FONT_NAME}-{zlib.crc32(f'{path}#{index}'.encode()):08x}"
    if name in pdfmetrics.getRegisteredFontNames():
        return name
    try:
        font = TTFont(name, str(path), subfontIndex=index)
    except TTFError as e:  # CFF outlines, a broken file, a bad member index
        raise PdfFontError(f"cannot embed {path}#{index}: {e}") from e
    missing = [c for c in REQUIRED if ord(c) not in font.face.charToGlyph]
    if missing:
        raise PdfFontError(f"{path}#{index} has no glyph for {''.join(missing)!r}")
    pdfmetrics.registerFont(font)
    return name
