"""Assessment on real SQL: scorecards from history agree with an independent count,
final periods are frozen by snapshots, every export round-trips to exactly the shown
rows, formula injection is neutralised, the CLI and the page's export are audited."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import openpyxl
import polars as pl
import pypdf
import pytest
import redis
from sqlalchemy import Engine, delete, select

from dashboard.app import create_app, page_module
from pipelines import audit, cli, store
from pipelines import exports as E
from pipelines import scorecard as S
from pipelines.geo import City, demo_city
from pipelines.settings import Settings
from tests.conftest import signed_in
from tests.history import History, load, make_history

pytestmark = pytest.mark.integration

OCT = S.parse_period("2026-10")
NOV = S.parse_period("2026-11")
AFTER = NOV.end_ms + 3 * S.DAY_MS  # October and November are final
DURING = NOV.start_ms + 10 * S.DAY_MS + 5 * S.HOUR_MS  # November is in progress


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


@pytest.fixture
def hist(engine: Engine, city: City) -> History:
    h = make_history(city, OCT.start_ms, 61, 4000, 240, seed=5)
    load(engine, h)
    return h


def test_scorecard_agrees_with_an_independent_count(
    engine: Engine, city: City, hist: History, live_settings: Settings
) -> None:
    card = S.scorecard(engine, city, live_settings, "street", OCT, AFTER, scope="320102")
    rows = {r["row_id"]: r for r in card.rows.iter_rows(named=True)}
    assert set(rows) == set(city.children("320102"))
    inc = hist.incidents.filter(
        (pl.col("reported_ms") >= OCT.start_ms) & (pl.col("reported_ms") < OCT.end_ms)
    )
    for street, r in rows.items():
        mine = inc.filter(pl.col("street_id") == street)
        assert r["reports"] == mine.height
        closed = mine.filter(pl.col("closed_ms").is_not_null())
        if closed.height:  # the incidents table's resolution level vs the events' one
            share = (closed["resolution_level"] == "grid").mean()
            assert r["grid_level"] == pytest.approx(share)
            hours = ((closed["closed_ms"] - closed["reported_ms"]) / S.HOUR_MS).to_list()
            assert r["mean_hours"] == pytest.approx(sum(hours) / len(hours))
        assert r["self_found"] == pytest.approx((mine["source"] == "worker").mean())
    ranks = card.rows["rank"].to_list()
    assert ranks == sorted(ranks) and ranks[0] == 1
    # levels add up: the district's reports are its streets' and its grids' reports
    d = S.scorecard(engine, city, live_settings, "district", OCT, AFTER).rows
    g = S.scorecard(engine, city, live_settings, "grid", OCT, AFTER, scope="320102").rows
    xw = d.filter(pl.col("row_id") == "320102")["reports"][0]
    assert xw == sum(r["reports"] for r in rows.values()) == g["reports"].sum()
    assert d["reports"].sum() == inc.height


def test_final_periods_are_snapshotted_and_never_rewritten(
    engine: Engine, city: City, hist: History, live_settings: Settings
) -> None:
    before = S.scorecard(engine, city, live_settings, "street", OCT, AFTER).rows
    with engine.connect() as c:
        n = c.execute(
            select(store.scorecard_snapshots.c.rules).where(
                store.scorecard_snapshots.c.period_key == OCT.key
            )
        ).fetchall()
    assert len(n) == len(city.ids("street")) and json.loads(n[0][0])["assessment"]
    # new rules and lost history change nothing for a final period …
    changed = dataclasses.replace(
        live_settings,
        assessment=dataclasses.replace(live_settings.assessment, w_resolve_ontime=60.0),
    )
    with engine.begin() as c:
        c.execute(delete(store.incidents).where(store.incidents.c.district_id == "320102"))
    after = S.scorecard(engine, city, changed, "street", OCT, AFTER).rows
    assert after.drop("change", "trend").equals(before.drop("change", "trend"))
    # … while a period in progress is computed live (its incidents are gone)
    live = S.scorecard(engine, city, changed, "street", NOV, DURING, scope="320102").rows
    assert live["reports"].sum() == 0 and not S.is_final(NOV, DURING, changed)


def _shown(engine: Engine, city: City, settings: Settings, level: str = "street") -> S.Shown:
    card = S.scorecard(engine, city, settings, level, OCT, AFTER, scope="320102")
    return S.Shown.of(card)


def test_exports_round_trip_to_exactly_the_shown_rows(
    engine: Engine, city: City, hist: History, live_settings: Settings, tmp_path: Path
) -> None:
    shown = _shown(engine, city, live_settings)
    cols = S.shown_columns("street")
    kinds = [E.column_kind(c) for c in cols]
    expect = [[r[c] for c in cols] for r in shown.rows]
    # XLSX: title, period, generated-at, frozen header, number formats, definitions sheet
    x = E.export_shown(shown, city, live_settings, "xlsx")
    wb = openpyxl.load_workbook(io.BytesIO(x.data))
    ws = wb["考核排名"]
    assert "玄武区" in ws["A1"].value and "街道考核排名" in ws["A1"].value
    assert ws["A2"].value == "统计期：2026年10月（已定稿）" and "生成时间" in ws["A3"].value
    assert ws.freeze_panes == "C6"
    assert [c.value for c in ws[5]] == [S.column_title(c, "zh-CN", "street") for c in cols]
    got = [list(r) for r in ws.iter_rows(min_row=6, values_only=True)]
    assert got == expect
    fmt = {k: ws.cell(6, j + 1).number_format for j, k in enumerate(kinds)}
    assert fmt["num1"] == "0.0" and fmt["int"] == "0" and fmt["signed1"] == "+0.0;-0.0;+0.0"
    defs = wb["指标说明"]
    names = [defs.cell(i, 1).value for i in range(2, len(S.METRICS) + 2)]
    assert names == [m.zh for m in S.METRICS.values()]
    assert all(defs.cell(i, 4).value for i in range(2, len(S.METRICS) + 3))
    # CSV: UTF-8 with BOM, the same cells as text
    c = E.export_shown(shown, city, live_settings, "csv")
    assert c.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(c.data.decode("utf-8-sig"))))
    assert rows[0] == [S.column_title(col, "zh-CN", "street") for col in cols]
    assert rows[1:] == [
        [
            "" if v is None else (v if k == "text" else E.cell_text(k, v))
            for k, v in zip(kinds, r, strict=True)
        ]
        for r in expect
    ]
    # PDF: Chinese text extracts; title, period, page numbers, chart, every row in order
    p = E.export_shown(shown, city, live_settings, "pdf")
    reader = pypdf.PdfReader(io.BytesIO(p.data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    n = len(reader.pages)
    assert "街道考核排名" in text and "2026年10月" in text and f"第 1 页 / 共 {n} 页" in text
    assert "综合得分排名" in text  # the chart's title
    fonts = reader.pages[-1]["/Resources"]["/Font"]
    assert "/STSong-Light" in {str(fonts[k].get_object()["/BaseFont"]) for k in fonts}
    table_text = text[text.index("排名") :]
    pos = 0
    for r in expect:  # each row's cells appear in order, as shown
        for k, v in zip(kinds, r, strict=True):
            cell = "—" if v is None else (str(v) if k == "text" else E.cell_text(k, v))
            found = table_text.find(cell, pos)
            assert found >= 0, (cell, r)
            pos = found + len(cell)
    assert x.sha256 == E.sha256(x.data) and x.rows == len(expect)


HOSTILE = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "＝1＋1", "＠cmd", "\tTAB"]


def test_formula_injection_is_neutralised(
    engine: Engine, city: City, live_settings: Settings
) -> None:
    grid = city.children(city.children("320102")[0])[0]
    workers = [
        {"worker_id": f"X{i}", "name": name, "type": "t", "grid_id": grid}
        for i, name in enumerate(HOSTILE)
    ]
    with engine.begin() as c:
        c.execute(store.workers.insert(), workers)
    card = S.scorecard(engine, city, live_settings, "worker", OCT, AFTER, scope=grid)
    shown = S.Shown.of(card)
    assert sorted(r["name"] for r in shown.rows) == sorted(HOSTILE)
    ws = openpyxl.load_workbook(
        io.BytesIO(E.export_shown(shown, city, live_settings, "xlsx").data)
    )["考核排名"]
    names = [ws.cell(r, 2).value for r in range(6, 6 + len(HOSTILE))]
    assert sorted(names) == sorted("'" + h for h in HOSTILE)
    text = E.export_shown(shown, city, live_settings, "csv").data.decode("utf-8-sig")
    cells = [row[1] for row in csv.reader(io.StringIO(text))][1:]
    assert sorted(cells) == sorted("'" + h for h in HOSTILE)
    assert E.neutralise(-3.5) == -3.5 and E.neutralise("玄武区") == "玄武区"


def test_cli_export_writes_the_file_and_audits_it(
    engine: Engine, city: City, hist: History, live_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        live_settings,
        geo=dataclasses.replace(live_settings.geo, grids=300, cache_dir=str(tmp_path)),
    )
    out = tmp_path / "out" / "street.xlsx"
    args = cli.parser().parse_args(
        ["export", "scorecard", "--period", "2026-10", "--level", "street", "--format", "xlsx",
         "--out", str(out), "--scope", "320102"]
    )  # fmt: skip
    assert cli.cmd_export(settings, args) == 0
    data = out.read_bytes()
    rows = list(
        openpyxl.load_workbook(io.BytesIO(data))["考核排名"].iter_rows(min_row=6, values_only=True)
    )
    shown = _shown(engine, city, live_settings)
    assert [r[1] for r in rows] == [r["name"] for r in shown.rows]
    last = audit.query(engine, limit=1).row(0, named=True)
    detail = json.loads(last["detail"])
    assert last["action"] == "export" and last["actor"].startswith("cli:")
    assert detail["sha256"] == E.sha256(data) and detail["rows"] == len(rows) == 7
    assert (
        detail["level"] == "street" and detail["period"] == "2026-10" and detail["area"] == "320102"
    )
    bad = cli.parser().parse_args(
        ["export", "scorecard", "--period", "2026-13", "--level", "street", "--out", str(out)]
    )
    assert cli.cmd_export(settings, bad) == 2


def test_page_export_is_the_shown_table_role_checked_rate_limited_and_audited(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, hist: History
) -> None:
    settings = dataclasses.replace(
        live_settings, auth=dataclasses.replace(live_settings.auth, export_rate_per_minute=3)
    )
    app = create_app(settings, city=city, r=rclient, clock=lambda: AFTER / 1000)
    page = page_module("assessment")
    view = {"level": "street", "period": "2026-10", "area": "320104"}  # outside: clamped
    with signed_in(app, role="supervisor", scope="320102", username="sup"):
        data, _styles, _title, _crumbs, token = page.render(view, "zh-CN")
        assert {r["row_id"] for r in data} == set(city.children("320102"))
        b = app.server.extensions["wangge"]
        p = page.auth.principal()
        result, f = page.export_file(b, p, token, "xlsx", "zh-CN")
        assert result == "ok" and f is not None
        got = list(
            openpyxl.load_workbook(io.BytesIO(f.data))["考核排名"].iter_rows(
                min_row=6, values_only=True
            )
        )
        cols = S.shown_columns("street")
        assert [list(r) for r in got] == [[row[c] for c in cols] for row in data]
        entry = audit.query(engine, limit=1).row(0, named=True)
        detail = json.loads(entry["detail"])
        assert (entry["actor"], entry["role"], entry["scope"]) == ("sup", "supervisor", "320102")
        assert (
            detail["sha256"] == f.sha256 and detail["rows"] == len(data) and detail["via"] == "web"
        )
        assert page.export_file(b, p, "not-a-token", "csv", "zh-CN") == ("stale", None)
        assert page.export_file(b, p, token, "pdf", "zh-CN")[0] == "ok"
        assert page.export_file(b, p, token, "csv", "zh-CN") == ("rate_limited", None)
    with signed_in(app, role="street_operator", scope=city.children("320102")[0], username="op"):
        p = page.auth.principal()
        assert page.export_file(b, p, token, "xlsx", "zh-CN") == ("export_denied", None)
    with signed_in(app, role="district_commander", scope="320102", username="cmd"):
        p = page.auth.principal()  # someone else's table: not theirs to export
        assert page.export_file(b, p, token, "xlsx", "zh-CN") == ("export_denied", None)
    assert audit.verify(engine).ok
