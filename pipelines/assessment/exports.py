"""Scorecard exports: a registry of formats (XLSX, CSV, PDF) over one table.

Every format writes the same :class:`ExportTable` — built once from the scorecard's
display rows (``scorecard.display_rows``), i.e. exactly the numbers the page shows.
Text cells that a spreadsheet could read as a formula (starting ``= + - @``, their
full-width forms ``＝ ＋ － ＠``, or a tab / carriage return) are neutralised with a
leading apostrophe. Adding a format is a function plus a row in :data:`EXPORTS`.

Writers take an optional progress callback, ``progress(stage, done, total)``, called at
each stage's start and end and every :data:`CHUNK` rows (never per row); :func:`percent`
turns a call into one bar that only grows (the stages and their shares: :data:`STAGES`).
The callback never changes the bytes written.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipelines import assessment as S
from pipelines.assessment import pdf_font
from pipelines.assessment.display import gap_of, gap_text
from pipelines.assessment.metrics import sample_rule, score_rule
from pipelines.city.geography import City
from pipelines.settings import Settings

DANGEROUS = ("=", "+", "-", "@", "＝", "＋", "－", "＠", "\t", "\r")


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: how far an export is (``stage`` is a key of STAGES)."""

# each stage's share of the bar (percent from, to), in the order an export runs them;
# "pages" is the PDF's layout (its total an estimate), "pack" the XLSX/CSV's encoding —
# the slow part of every format (a city-wide PDF: ~1 s of rows, ~15 s of layout)
STAGES: dict[str, tuple[int, int]] = {
    "table": (0, 5),
    "rows": (5, 30),
    "pages": (30, 98),
    "pack": (30, 98),
    "hash": (98, 100),
    "audit": (100, 100),
    "done": (100, 100),
}
CHUNK = 500  # rows between two progress calls


def percent(stage: str, done: int, total: int) -> int:
    """One progress call as a share of the whole export, 0..100."""
    lo, hi = STAGES[stage]
    share = min(done, total) / total if total > 0 else 1.0
    return lo + int((hi - lo) * share)


def no_progress(stage: str, done: int, total: int) -> None:
    return None


def counted(rows: list[list[Any]], progress: Progress) -> Iterator[list[Any]]:
    """The rows, reporting ``("rows", n, N)`` at the start, every CHUNK rows and the end."""
    n = len(rows)
    progress("rows", 0, n)
    for i, row in enumerate(rows, start=1):
        yield row  # the caller writes it before asking for the next one
        if i % CHUNK == 0 and i < n:
            progress("rows", i, n)
    progress("rows", n, n)


def neutralise(value: Any) -> Any:
    """A text cell that starts like a formula gets a leading apostrophe (numbers pass)."""
    if isinstance(value, str) and value.startswith(DANGEROUS):
        return "'" + value
    return value


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Column:
    id: str
    title: str
    kind: str  # text · int · num1 · signed1


@dataclass(frozen=True)
class ExportTable:
    title: str
    period: str
    scope: str
    generated: str
    lang: str
    columns: list[Column]
    rows: list[list[Any]]  # display values (numbers rounded as on screen; None = no data)
    definitions: list[tuple[str, str, str, str]]  # name, unit, weight, definition
    score_definition: str
    chart: list[tuple[str, float]] = field(default_factory=list)  # name, score
    generated_ms: int = 0  # the XLSX's creation time (so one table is always one file)
    pdf_font: str = ""  # assessment.pdf_font: the CJK TrueType font the PDF embeds

    def labels(self) -> dict[str, str]:
        zh = self.lang != "en"
        return {
            "period": "统计期" if zh else "Period",
            "scope": "范围" if zh else "Scope",
            "generated": "生成时间" if zh else "Generated",
            "defs": "指标说明" if zh else "Definitions",
            "ranking": "考核排名" if zh else "Ranking",
            "metric": "指标" if zh else "Metric",
            "unit": "单位" if zh else "Unit",
            "weight": "权重" if zh else "Weight",
            "definition": "定义" if zh else "Definition",
            "score": "综合得分" if zh else "Score",
            "chart": "综合得分排名" if zh else "Scores, ranked",
            "page": "第 {n} 页 / 共 {m} 页" if zh else "Page {n} of {m}",
            "none": "—",
        }


def column_kind(col: str) -> str:
    if col in ("name", "parent", "trend"):
        return "text"
    if col in ("rank",) or (col in S.METRICS and S.METRICS[col].unit == "count"):
        return "int"
    if col == "change":
        return "signed1"
    return "num1"


def cell_text(kind: str, v: Any) -> str:
    """How a value is written where only text exists (PDF; the page uses the same)."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if kind == "int":
        return str(int(v))
    if kind == "num1":
        return f"{float(v):.1f}"
    if kind == "signed1":
        return f"{float(v) + 0.0:+.1f}"  # + 0.0: never "-0.0"
    return str(v)


def shown_cell(row: dict[str, Any], col: str, lang: str) -> Any:
    """A shown value, or the words for why it is empty (样本不足, 无数据, 未排名 …)."""
    gap = gap_of(row, col)
    return row[col] if gap is None else gap_text(gap, lang)


def level_title(level: str, lang: str) -> str:
    zh = {"district": "区", "street": "街道", "grid": "网格", "worker": "网格员"}[level]
    en = {"district": "District", "street": "Street", "grid": "Grid", "worker": "Worker"}[level]
    return f"{en} scorecard" if lang == "en" else f"{zh}考核排名"


def build_table(shown: S.Shown, city: City, settings: Settings, lang: str) -> ExportTable:
    """The export's content from the display rows (the ones the page shows)."""
    card, rows = shown, shown.rows
    cols = S.shown_columns(card.level)
    columns = [Column(c, S.column_title(c, lang, card.level), column_kind(c)) for c in cols]
    scope_row = city.area(card.area)
    scope = str(scope_row["name"]) if scope_row else card.area
    tz = ZoneInfo(settings.live.timezone)
    generated = datetime.fromtimestamp(card.generated_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
    w = S.weights(settings)
    a = settings.assessment
    defs = [
        (
            m.name(lang),
            m.unit_label(lang) or "—",
            f"{w[m.id]:g}",
            " ".join(
                x
                for x in (m.definition(lang, settings), sample_rule(m.id, lang, a.min_sample))
                if x
            ),
        )
        for m in S.METRICS.values()
    ]
    final = ("（已定稿）" if lang != "en" else " (final)") if card.final else ""
    return ExportTable(
        title=f"{scope} · {level_title(card.level, lang)}",
        period=card.period.label(lang) + final,
        scope=scope,
        generated=generated,
        lang=lang,
        columns=columns,
        rows=[[shown_cell(r, c, lang) for c in cols] for r in rows],
        definitions=defs,
        score_definition=S.score_definition(lang, settings)
        + (" " if lang == "en" else "")
        + score_rule(lang, a.min_score_weight),
        chart=[(str(r["name"]), float(r["score"])) for r in rows if r["score"] is not None],
        generated_ms=card.generated_ms,
        pdf_font=settings.assessment.pdf_font,
    )


# ------------------------------------------------------------------ XLSX


def to_xlsx(t: ExportTable, progress: Progress = no_progress) -> bytes:
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False})
    created = datetime.fromtimestamp(t.generated_ms / 1000, UTC)
    props = {"title": t.title, "subject": t.period, "author": "Wangge 网格", "created": created}
    wb.set_properties(props)
    lab = t.labels()
    title = wb.add_format({"bold": True, "font_size": 16})
    meta = wb.add_format({"font_color": "#555555"})
    head = wb.add_format(
        {"bold": True, "bg_color": "#1F3B5C", "font_color": "#FFFFFF", "text_wrap": True}
    )
    head.set_align("center")
    head.set_align("vcenter")
    head.set_border(1)
    fmts = {
        "text": wb.add_format({"border": 1}),
        "int": wb.add_format({"num_format": "0", "border": 1}),
        "num1": wb.add_format({"num_format": "0.0", "border": 1}),
        "signed1": wb.add_format({"num_format": "+0.0;-0.0;+0.0", "border": 1}),
    }
    ws = wb.add_worksheet(lab["ranking"])
    ncol = len(t.columns)
    ws.merge_range(0, 0, 0, max(1, ncol - 1), t.title, title)
    ws.write_string(1, 0, f"{lab['period']}：{t.period}", meta)
    ws.write_string(2, 0, f"{lab['scope']}：{t.scope}    {lab['generated']}：{t.generated}", meta)
    header_row = 4
    ws.set_row(header_row, 36)
    for j, c in enumerate(t.columns):
        ws.write_string(header_row, j, c.title, head)
        width = 18 if c.kind == "text" else 11
        ws.set_column(j, j, width)
    for i, row in enumerate(counted(t.rows, progress), start=header_row + 1):
        for j, (c, v) in enumerate(zip(t.columns, row, strict=True)):
            if v is None:
                ws.write_blank(i, j, None, fmts[c.kind])
            elif c.kind == "text" or isinstance(v, str):  # a name, or why a number is missing
                ws.write_string(i, j, str(neutralise(v)), fmts[c.kind])
            else:
                ws.write_number(i, j, float(v), fmts[c.kind])
    ws.freeze_panes(header_row + 1, 2)
    if t.rows:
        ws.autofilter(header_row, 0, header_row + len(t.rows), ncol - 1)
    d = wb.add_worksheet(lab["defs"])
    d.set_column(0, 0, 20)
    d.set_column(1, 2, 8)
    d.set_column(3, 3, 100)
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    for j, h in enumerate((lab["metric"], lab["unit"], lab["weight"], lab["definition"])):
        d.write_string(0, j, h, head)
    for i, (name, unit, weight, text) in enumerate(t.definitions, start=1):
        d.write_string(i, 0, name, wrap)
        d.write_string(i, 1, unit, wrap)
        d.write_number(i, 2, float(weight), wrap)
        d.write_string(i, 3, text, wrap)
    n = len(t.definitions) + 1
    d.write_string(n, 0, lab["score"], wrap)
    d.write_string(n, 3, t.score_definition, wrap)
    progress("pack", 0, 1)
    wb.close()
    progress("pack", 1, 1)
    return buf.getvalue()


# ------------------------------------------------------------------ CSV


def to_csv(t: ExportTable, progress: Progress = no_progress) -> bytes:
    """UTF-8 with a BOM (Excel on Chinese Windows then reads it as UTF-8), CRLF rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.title for c in t.columns])
    for row in counted(t.rows, progress):
        w.writerow(
            [
                "" if v is None else (neutralise(v) if c.kind == "text" else cell_text(c.kind, v))
                for c, v in zip(t.columns, row, strict=True)
            ]
        )
    progress("pack", 0, 1)
    data = ("\ufeff" + buf.getvalue()).encode("utf-8")
    progress("pack", 1, 1)
    return data


# ------------------------------------------------------------------ PDF

ROWS_PER_PAGE = 34  # ranking rows on one PDF page (for the layout's progress estimate)


def to_pdf(t: ExportTable, progress: Progress = no_progress) -> bytes:
    """A4 landscape; a CJK TrueType font embedded (a subset: :mod:`pdf_font`); title,
    period, page numbers, a bar chart of the scores and the ranking table."""
    from reportlab.graphics.charts.barcharts import HorizontalBarChart
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas
    from reportlab.platypus import (
        LongTable,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        TableStyle,
    )

    font = pdf_font.register(t.pdf_font)
    lab = t.labels()
    page_label = lab["page"]

    class NumberedCanvas(Canvas):  # "page n of m" needs the page count: draw at save
        def __init__(self, *a: Any, **kw: Any) -> None:
            kw["initialFontName"] = font  # no un-embedded Helvetica on any page
            super().__init__(*a, **kw)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont(font, 8)
                self.setFillColor(colors.grey)
                w, _h = landscape(A4)
                self.drawCentredString(
                    w / 2, 8 * mm, page_label.format(n=self._pageNumber, m=total)
                )
                self.drawString(12 * mm, 8 * mm, f"{t.title} · {t.period}")
                super().showPage()
            super().save()

    base = ParagraphStyle("b", fontName=font, fontSize=6.5, leading=8)
    head = ParagraphStyle("h", parent=base, textColor=colors.white, alignment=1)
    h1 = ParagraphStyle("t", fontName=font, fontSize=16, leading=20)
    meta = ParagraphStyle("m", fontName=font, fontSize=9, leading=12, textColor=colors.grey)
    story: list[Any] = [
        Paragraph(_esc(t.title), h1),
        Paragraph(_esc(f"{lab['period']}：{t.period}"), meta),
        Paragraph(_esc(f"{lab['scope']}：{t.scope} · {lab['generated']}：{t.generated}"), meta),
        Spacer(1, 4 * mm),
    ]
    # chart: scores, best first (at most 40 bars, so the chart fits one page)
    bars = t.chart[:40]
    if bars:
        height = 30 + 11 * len(bars)
        dr = Drawing(760, height + 20)
        dr.initialFontName = font  # the drawing starts in it (not Helvetica)
        dr.add(String(0, height + 8, lab["chart"], fontName=font, fontSize=9))
        ch = HorizontalBarChart()
        ch.x, ch.y, ch.width, ch.height = 120, 10, 600, height - 10
        ch.data = [[s for _, s in reversed(bars)]]
        ch.categoryAxis.categoryNames = [n[:14] for n, _ in reversed(bars)]
        ch.categoryAxis.labels.fontName = font
        ch.categoryAxis.labels.fontSize = 7
        ch.valueAxis.valueMin, ch.valueAxis.valueMax, ch.valueAxis.valueStep = 0, 100, 10
        ch.valueAxis.labels.fontName = font
        ch.valueAxis.labels.fontSize = 7
        ch.bars[0].fillColor = colors.HexColor("#2F7FC1")
        ch.barLabelFormat = "%.1f"
        ch.barLabels.fontName = font
        ch.barLabels.fontSize = 6
        ch.barLabels.nudge = 8
        dr.add(ch)
        story += [dr, PageBreak()]
    data = [[Paragraph(_esc(c.title), head) for c in t.columns]]
    for row in counted(t.rows, progress):
        data.append(
            [
                Paragraph(_esc(str(neutralise(cell_text(c.kind, v)))), base)
                if c.kind == "text"
                else cell_text(c.kind, v)
                for c, v in zip(t.columns, row, strict=True)
            ]
        )
    avail = landscape(A4)[0] - 24 * mm
    text_cols = [c for c in t.columns if c.kind == "text"]
    text_w = 62.0
    num_w = (avail - text_w * len(text_cols)) / max(1, len(t.columns) - len(text_cols))
    widths = [text_w if c.kind == "text" else num_w for c in t.columns]
    table = LongTable(data, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), font, 6.5),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#1F3B5C")),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#9AA7B5")),
                ("ALIGN", (0, 1), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#F1F5F9")]),
            ]
        )
    )
    story.append(table)
    story += [Spacer(1, 6 * mm), Paragraph(_esc(lab["defs"]), h1)]
    for name, unit, weight, text in t.definitions:
        line = f"{name}（{unit}，{lab['weight']} {weight}）：{text}"
        story.append(Paragraph(_esc(line), meta))
    story.append(Paragraph(_esc(f"{lab['score']}：{t.score_definition}"), meta))
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=14 * mm,
        title=t.title,
        author="Wangge 网格",
        subject=t.period,
    )
    pages = 2 + len(t.rows) // ROWS_PER_PAGE  # about: chart, table, definitions

    def laid_out(kind: str, value: int) -> None:  # reportlab's progress hook
        if kind == "PAGE":
            progress("pages", min(value, pages), pages)

    doc.setProgressCallBack(laid_out)
    progress("pages", 0, pages)
    doc.build(story, canvasmaker=NumberedCanvas)
    progress("pages", pages, pages)
    return buf.getvalue()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Exporter:
    ext: str
    mime: str
    write: Callable[[ExportTable, Progress], bytes]


EXPORTS: dict[str, Exporter] = {
    "xlsx": Exporter(
        "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", to_xlsx
    ),
    "csv": Exporter("csv", "text/csv; charset=utf-8", to_csv),
    "pdf": Exporter("pdf", "application/pdf", to_pdf),
}


@dataclass(frozen=True)
class ExportFile:
    filename: str
    mime: str
    data: bytes
    sha256: str
    rows: int


def export_shown(
    shown: S.Shown,
    city: City,
    settings: Settings,
    fmt: str,
    lang: str = "zh-CN",
    progress: Progress = no_progress,
) -> ExportFile:
    """One file of the displayed scorecard in ``fmt`` (a key of :data:`EXPORTS`)."""
    exporter = EXPORTS[fmt]
    progress("table", 0, 1)
    table = build_table(shown, city, settings, lang)
    progress("table", 1, 1)
    data = exporter.write(table, progress)
    progress("hash", 0, 1)
    digest = sha256(data)
    progress("hash", 1, 1)
    key = shown.period.key.replace("..", "_")
    name = f"scorecard_{shown.level}_{key}_{shown.area}.{exporter.ext}"
    return ExportFile(name, exporter.mime, data, digest, len(shown.rows))


def audit_target(shown: S.Shown) -> str:
    """The audit log's target of an export: which scorecard (level, period, area)."""
    return f"scorecard:{shown.level}:{shown.period.key}:{shown.area}"


def audit_detail(shown: S.Shown, f: ExportFile, fmt: str, via: str) -> dict[str, Any]:
    """What the audit log records for an export (who and the user's scope are the row's
    own fields; ``area`` is the area the rows were filtered to)."""
    return {
        "via": via,
        "format": fmt,
        "level": shown.level,
        "period": shown.period.key,
        "area": shown.area,
        "final": shown.final,
        "generated_ms": shown.generated_ms,
        "rows": f.rows,
        "sha256": f.sha256,
        "bytes": len(f.data),
        "filename": f.filename,
    }
