"""Assessment on real SQL: scorecards from history agree with an independent count,
final periods are frozen by snapshots, every export round-trips to exactly the shown
rows, formula injection is neutralised, the CLI and the page's export are audited, and
the page's export runs as a job whose progress lives in Redis."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pypdf
import pytest
import redis
from dash import no_update
from sqlalchemy import Engine, delete, select

from dashboard.app import create_app, page_module
from dashboard.auth import Principal
from dashboard.pages.assessment import export_jobs as J
from pipelines import assessment as S
from pipelines import cli
from pipelines.access import audit
from pipelines.assessment import exports as E
from pipelines.city.geography import City
from pipelines.dispatch.flows import DEFAULT_FILE
from pipelines.settings import Settings
from pipelines.spine import store
from tests.conftest import signed_in
from tests.history import History, load, make_history

pytestmark = [pytest.mark.integration, pytest.mark.clock]  # runs on a clock passed in

OCT = S.parse_period("2026-10")
NOV = S.parse_period("2026-11")
AFTER = NOV.end_ms + 3 * S.DAY_MS  # October and November are final
DURING = NOV.start_ms + 10 * S.DAY_MS + 5 * S.HOUR_MS  # November is in progress


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


def test_coverage_and_online_count_from_the_first_position(
    engine: Engine, city: City, hist: History, live_settings: Settings
) -> None:
    """Days and shift slots before the platform's first position are not counted: a month
    before any position has no coverage (null, not 0 %), and a worker-level card whose
    trend reaches back into that month still renders."""
    first = S.read_tracked_since(engine)
    assert first is not None and first == hist.tracks["ts_ms"].min()
    grid = city.children(city.children("320102")[0])[0]
    card = S.scorecard(engine, city, live_settings, "worker", OCT, AFTER, scope=grid)
    assert card.rows.height and card.rows["patrol_coverage"].null_count() == 0
    sep = S.parse_period("2026-09")
    before = S.scorecard(engine, city, live_settings, "worker", sep, AFTER, scope=grid).rows
    assert before.height and before["patrol_coverage"].null_count() == before.height
    assert before["online_rate"].null_count() == before.height
    # a period that began before the first position: its denominators start at it
    span = S.parse_period("2026-09-25..2026-10-05")
    since = S.shift_slots(span, AFTER, 8, 18, live_settings.assessment.online_slot_minutes, first)
    whole = S.shift_slots(span, AFTER, 8, 18, live_settings.assessment.online_slot_minutes)
    assert 0 < since < whole
    assert S.elapsed_days(span, AFTER, first) == 5 < S.elapsed_days(span, AFTER)


def _shown(engine: Engine, city: City, settings: Settings, level: str = "street") -> S.Shown:
    card = S.scorecard(engine, city, settings, level, OCT, AFTER, scope="320102")
    return S.Shown.of(card)


def test_exports_round_trip_to_exactly_the_shown_rows(
    engine: Engine, city: City, hist: History, live_settings: Settings, tmp_path: Path
) -> None:
    shown = _shown(engine, city, live_settings)
    cols = S.shown_columns("street")
    kinds = [E.column_kind(c) for c in cols]
    expect = [[E.shown_cell(r, c, "zh-CN") for c in cols] for r in shown.rows]
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
    # definitions say the configured values, never a settings key
    texts = [str(defs.cell(i, 4).value) for i in range(2, len(S.METRICS) + 3)]
    # … and quote the shipped flows' hours (the flow file read here)
    raw = tomllib.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
    dispute = next(f for f in raw["flow"] if f["id"] == "dispute")
    accept = texts[list(S.METRICS).index("accept_ontime")]
    assert dispute["name_zh"] in accept
    assert f"{dispute['stages']['accept']['hours']:g} 小时" in accept
    assert not any(re.search(r"[a-z]+_[a-z_]+|\[[a-z_]+\]|\{[a-z_]*\}", x) for x in texts)
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
    for k in fonts:  # the CJK font is embedded (TrueType), nothing else is used
        font = fonts[k].get_object()
        font = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
        assert "/FontFile2" in font["/FontDescriptor"].get_object()
    assert "\ufffd" not in text
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
    engine: Engine,
    city: City,
    hist: History,
    live_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = dataclasses.replace(
        live_settings,
        geo=dataclasses.replace(live_settings.geo, grids=300, cache_dir=str(tmp_path)),
    )
    out = tmp_path / "out" / "street.xlsx"
    args = cli.parser().parse_args(
        ["export", "scorecard", "--period", "2026-10", "--level", "street", "--format", "xlsx",
         "--out", str(out), "--scope", "320102", "--progress"]
    )  # fmt: skip
    assert cli.admin.cmd_export(settings, args) == 0
    progress = capsys.readouterr().err.splitlines()
    assert progress[0] == "  0% table 0/1" and progress[-1] == "100% hash 1/1"
    assert "  5% rows 0/7" in progress
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
    assert cli.admin.cmd_export(settings, bad) == 2


def _finished(b: Any, owner: str, job: J.Job) -> J.Job:
    """The job once its thread has ended (running → done or error)."""
    for _ in range(2400):
        got = J.status(b, owner, job.id)
        assert got is not None
        if got.state != "running":
            return got
        time.sleep(0.05)
    raise AssertionError(f"export job {job.id} still running")


def _exports(engine: Engine) -> list[dict[str, Any]]:
    return audit.query(engine).filter(pl.col("action") == "export").to_dicts()


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
        result, started = page.begin_export(b, p, token, "xlsx", "zh-CN")
        assert result == "ok" and started is not None and started.state == "running"
        job = _finished(b, "sup", started)
        assert job.state == "done" and job.percent == 100
        got = J.fetch(b, "sup", job.id)
        assert got is not None and got[0].filename.endswith(".xlsx")
        rows = list(
            openpyxl.load_workbook(io.BytesIO(got[1]))["考核排名"].iter_rows(
                min_row=6, values_only=True
            )
        )
        cols = S.shown_columns("street")
        assert [list(r) for r in rows] == [
            [E.shown_cell(row, c, "zh-CN") for c in cols] for row in data
        ]
        # the page: the bar at 100 %, the message, then the file downloads
        outs = page.watch(job, "zh-CN")
        assert outs[:3] == (None, job.id, True) and "已导出" in outs[5]
        assert "100%" in str(outs[3]) and "已完成" in str(outs[3])
        sent, _msg = page.deliver(job.id, "zh-CN")
        assert sent["filename"] == job.filename and sent["base64"]
        (entry,) = _exports(engine)  # audited once, with the file's hash
        detail = json.loads(entry["detail"])
        assert (entry["actor"], entry["role"], entry["scope"]) == ("sup", "supervisor", "320102")
        assert detail["sha256"] == job.sha256 == E.sha256(got[1])
        assert detail["rows"] == len(data) and detail["via"] == "web"
        assert page.begin_export(b, p, "not-a-token", "csv", "zh-CN") == ("stale", None)
        result, started = page.begin_export(b, p, token, "pdf", "zh-CN")
        assert result == "ok" and started is not None
        assert _finished(b, "sup", started).state == "done"
        assert page.begin_export(b, p, token, "csv", "zh-CN") == ("rate_limited", None)
        assert len(_exports(engine)) == 2
    with signed_in(app, role="street_operator", scope=city.children("320102")[0], username="op"):
        p = page.auth.principal()
        assert page.begin_export(b, p, token, "xlsx", "zh-CN") == ("export_denied", None)
    with signed_in(app, role="district_commander", scope="320102", username="cmd"):
        p = page.auth.principal()  # someone else's table: tables are kept under their
        # owner, so another user's token finds nothing to export
        assert page.begin_export(b, p, token, "xlsx", "zh-CN") == ("stale", None)
        # nor their job, nor their file
        assert J.status(b, "cmd", job.id) is None and J.fetch(b, "cmd", job.id) is None
        assert page.deliver(job.id, "zh-CN")[0] is no_update
    assert audit.verify(engine).ok


def test_export_job_lifecycle_on_real_redis(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, hist: History
) -> None:
    now = [AFTER / 1000]
    app = create_app(live_settings, city=city, r=rclient, clock=lambda: now[0])
    b = app.server.extensions["wangge"]
    sup = Principal("sup", "supervisor", "320102")
    shown = _shown(engine, city, live_settings, "grid")
    big = dataclasses.replace(shown, rows=shown.rows * max(1, 1500 // len(shown.rows)))
    held: list[Callable[[], None]] = []
    job = J.start(b, sup, big, "pdf", "zh-CN", spawn=held.append)
    assert (job.state, job.percent) == ("running", 0) and J.running(b, "sup") == job
    # a second start while it runs: the same job, nothing new started
    assert J.start(b, sup, big, "csv", "zh-CN", spawn=held.append) == job and len(held) == 1
    assert J.fetch(b, "sup", job.id) is None  # not done yet
    # the job runs; its progress is in Redis for any worker to read
    thread = threading.Thread(target=held[0])
    thread.start()
    seen: list[J.Job] = []
    while thread.is_alive():
        got = J.status(b, "sup", job.id)
        assert got is not None
        seen.append(got)
        time.sleep(0.005)
    thread.join()
    done = J.status(b, "sup", job.id)
    assert done is not None and (done.state, done.stage, done.percent) == ("done", "done", 100)
    percents = [j.percent for j in seen] + [done.percent]
    assert percents == sorted(percents) and len(set(percents)) > 2
    assert "pages" in {j.stage for j in seen}
    # fetched by its owner only
    got = J.fetch(b, "sup", job.id)
    assert got is not None and E.sha256(got[1]) == done.sha256 and done.rows == len(big.rows)
    assert J.fetch(b, "cmd", job.id) is None and J.status(b, "cmd", job.id) is None
    assert J.running(b, "sup") is None  # finished: a new export may start
    assert json.loads(_exports(engine)[-1]["detail"])["sha256"] == done.sha256
    # a failing export ends with an error (no audit entry, no file), not a hung bar
    bad = J.start(b, sup, shown, "docx", "zh-CN", spawn=lambda body: body())
    failed = J.status(b, "sup", bad.id)
    assert failed is not None and (failed.state, failed.error) == ("error", "failed")
    assert J.fetch(b, "sup", bad.id) is None and J.running(b, "sup") is None
    assert len(_exports(engine)) == 1
    # a job whose process died stops moving: after STALL_MS it is lost, a new one may start
    dead = J.start(b, sup, shown, "csv", "zh-CN", spawn=lambda body: None)
    assert J.running(b, "sup") == dead
    now[0] += J.STALL_MS / 1000 + 1
    lost = J.status(b, "sup", dead.id)
    assert lost is not None and (lost.state, lost.error) == ("error", "lost")
    fresh = J.start(b, sup, shown, "csv", "zh-CN", spawn=lambda body: body())
    assert fresh.id != dead.id and J.status(b, "sup", fresh.id).state == "done"  # type: ignore[union-attr]


def test_pdf_without_a_cjk_font_says_so(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, hist: History
) -> None:
    """A configured font that is not there ends the job with a message naming the fix."""
    settings = dataclasses.replace(
        live_settings,
        assessment=dataclasses.replace(live_settings.assessment, pdf_font="/nonexistent.ttf"),
    )
    app = create_app(settings, city=city, r=rclient, clock=lambda: AFTER / 1000)
    b = app.server.extensions["wangge"]
    sup = Principal("sup", "supervisor", "320102")
    shown = _shown(engine, city, settings, "street")
    held: list[Callable[[], None]] = []
    job = J.start(b, sup, shown, "pdf", "zh-CN", spawn=held.append)
    held[0]()
    done = J.status(b, "sup", job.id)
    assert done is not None and (done.state, done.error) == ("error", "font_missing")
    assert "fonts-wqy-microhei" in J.stage_text(done, "zh-CN")
