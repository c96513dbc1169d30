"""The PDF export embeds a CJK TrueType font, and the text read back is the text written
("·", "−", "—" and Chinese included): no "�", nothing lost, no font left un-embedded."""

from __future__ import annotations

import io
from typing import Any

import pypdf
import pytest

from pipelines.assessment import pdf_font
from pipelines.assessment.exports import Column, ExportTable, to_pdf

WRITTEN = {
    "title": "玄武区 · 街道考核排名",
    "period": "2026年12月05日 – 2026年12月11日",
    "scope": "玄武区",
    "generated": "2026-12-05 09:30:00",
    "names": ["梅园新村街道", "新街口街道", "孝陵卫街道"],
    "defs": [
        ("按时受理率", "%", "10", "上报后在受理时限 1 小时内首次处理的事件占比；得分率 1 − 比率。"),
        ("Score", "—", "5", "Goodness is 1 − rate · scored per period; ≥ 0."),
    ],
    "score": "综合得分 = 100 × Σ(权重 × 指标得分率) / Σ(权重)；时长类 max(0, 1 − 时长 / 48 小时)",
}


def table(lang: str = "zh") -> ExportTable:
    w = WRITTEN
    return ExportTable(
        title=str(w["title"]),
        period=str(w["period"]),
        scope=str(w["scope"]),
        generated=str(w["generated"]),
        lang=lang,
        columns=[
            Column("rank", "排名", "int"),
            Column("name", "街道", "text"),
            Column("score", "综合得分", "num1"),
            Column("change", "环比", "signed1"),
        ],
        rows=[[i + 1, n, 90.0 - 7 * i, -1.5 + i] for i, n in enumerate(w["names"])],
        definitions=list(w["defs"]),  # type: ignore[arg-type]
        score_definition=str(w["score"]),
        chart=[(n, 90.0 - 7 * i) for i, n in enumerate(w["names"])],
        generated_ms=1_780_000_000_000,
    )


@pytest.fixture(scope="module")
def pdf() -> pypdf.PdfReader:
    return pypdf.PdfReader(io.BytesIO(to_pdf(table())))


def extracted(reader: pypdf.PdfReader) -> str:
    return "\n".join(p.extract_text() for p in reader.pages)


def lines_written() -> list[str]:
    """Every line the writer puts on the page, as it writes it."""
    w = WRITTEN
    out = [
        str(w["title"]),
        f"统计期：{w['period']}",
        f"范围：{w['scope']} · 生成时间：{w['generated']}",
    ]
    out += [f"{n}（{u}，权重 {wt}）：{d}" for n, u, wt, d in w["defs"]]  # type: ignore[misc]
    out.append(f"综合得分：{w['score']}")
    out += list(w["names"])  # type: ignore[arg-type]
    out.append(f"{w['title']} · {w['period']}")  # the footer
    return out


def test_text_read_back_is_the_text_written(pdf: pypdf.PdfReader) -> None:
    text = extracted(pdf)
    lines = {ln.strip() for ln in text.splitlines()}
    assert "\ufffd" not in text
    for line in lines_written():
        assert line in lines, (line, sorted(lines))


def test_signed_numbers_and_page_numbers(pdf: pypdf.PdfReader) -> None:
    text = extracted(pdf)
    assert "-1.5" in text and "+0.5" in text
    n = len(pdf.pages)
    assert f"第 {n} 页 / 共 {n} 页" in text


def fonts_of(reader: pypdf.PdfReader) -> list[dict[str, Any]]:
    out = []
    for page in reader.pages:
        fonts = page["/Resources"]["/Font"]
        out += [fonts[k].get_object() for k in fonts]
    return out


def descriptor(font: Any) -> Any:
    if "/DescendantFonts" in font:
        font = font["/DescendantFonts"][0].get_object()
    d = font.get("/FontDescriptor")
    return d.get_object() if d is not None else None


def test_every_font_is_embedded_truetype(pdf: pypdf.PdfReader) -> None:
    fonts = fonts_of(pdf)
    assert fonts
    for f in fonts:
        d = descriptor(f)
        assert d is not None and "/FontFile2" in d, f  # TrueType program inside the file


def test_english_export_too() -> None:
    reader = pypdf.PdfReader(io.BytesIO(to_pdf(table("en"))))
    text = extracted(reader)
    assert "\ufffd" not in text and "Goodness is 1 − rate · scored per period; ≥ 0." in text
    assert "Page 1 of" in text


def test_missing_configured_font_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(pdf_font.PdfFontError, match="no such file"):
        pdf_font.locate(str(tmp_path / "none.ttf"))
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(pdf_font.PdfFontError, match="cannot embed"):
        pdf_font.register(str(bad))


def test_collection_member_is_parsed() -> None:
    assert pdf_font.parse("/x/y.ttc#2") == (pdf_font.Path("/x/y.ttc"), 2)
    assert pdf_font.parse("/x/y.ttf") == (pdf_font.Path("/x/y.ttf"), 0)
