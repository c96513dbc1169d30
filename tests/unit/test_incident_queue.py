"""The incident workbench's queue (dashboard/pages/incidents/queries.py) on a real SQLite
database with hand-made incident rows and a flow file written here: the stage deadline
(SQL and Polars alike, as the flow file says), the filters, paging and sorting across
pages, the SLA clock in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine

from dashboard.pages.incidents import queries as Q
from pipelines.city.geography import City, demo_city
from pipelines.dispatch.flows import Flows, load_flows
from pipelines.spine import store
from pipelines.spine.events import CATEGORIES

H = 3_600_000
NOW = 1_780_000_000_000

# Stage hours by category: accept, dispatch, handle, verify, close. Fire has a faster flow
# from severity 3 up.
HOURS = {c: (1, 2, 10, 4, 2) for c in CATEGORIES}
HOURS["dispute"] = (1, 2, 57, 8, 4)
FIRE_3 = (0.25, 0.25, 1, 0.5, 0.5)
STAGES = ("accept", "dispatch", "handle", "verify", "close")


def _flow(fid: str, category: str, sev: int, hours: tuple[float, ...]) -> str:
    out = [
        "[[flow]]",
        f'id = "{fid}"',
        f'category = "{category}"',
        f'name_zh = "{fid}"',
        f'name_en = "{fid}"',
        f"min_severity = {sev}",
        "escalate_after_hours = 8",
    ]
    for stage, h in zip(STAGES, hours, strict=True):
        out += [f"[flow.stages.{stage}]", f"hours = {h}", 'unit = "street"']
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Flows:
    text = "".join(_flow(c, c, 1, h) for c, h in HOURS.items())
    text += _flow("fire_serious", "fire", 3, FIRE_3)
    path = Path(tmp_path_factory.mktemp("flows")) / "flows.toml"
    path.write_text(text, encoding="utf-8")
    return load_flows(path)


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def _place(city: City, k: int) -> dict[str, str]:
    grid = city.grids.row(k, named=True)
    return {
        "grid_id": grid["grid_id"],
        "street_id": grid["street_id"],
        "district_id": grid["district_id"],
    }


def incident(city: City, iid: str, status: str, entered_ms: int, **kw: Any) -> dict[str, Any]:
    row = {
        "incident_id": iid,
        "status": status,
        "category": "dispute",
        "severity": 1,
        "source": "worker",
        "lon": 118.8,
        "lat": 32.0,
        "reported_ms": entered_ms - H,
        "last_ms": entered_ms,
        "n_events": 2,
        **_place(city, kw.pop("grid", 0)),
    }
    if Q.has("stage_ms"):
        row["stage_ms"] = entered_ms
    row.update(kw)
    return row


def put(engine: Engine, rows: list[dict[str, Any]]) -> None:
    cols = {c.name for c in store.incidents.columns}
    with engine.begin() as conn:
        conn.execute(
            store.incidents.insert(), [{k: v for k, v in r.items() if k in cols} for r in rows]
        )


MODES = pytest.mark.parametrize("mode", ["polars", "sql"])


@MODES
def test_the_stage_deadline_is_the_flow_files(
    engine: Engine, city: City, flows: Flows, mode: str
) -> None:
    """due = entered + the hours of the stage the status is in (the flow file above),
    the same in SQL and in Polars; a serious fire takes the faster flow."""
    e = NOW - 30 * 60_000
    cases = [
        # (id, status, category, severity, expected due)
        ("a", "reported", "dispute", 1, e + 1 * H),
        ("b", "escalated", "dispute", 2, e + 1 * H),
        ("c", "accepted", "dispute", 1, e + 2 * H),
        ("d", "returned", "sanitation", 1, e + 2 * H),
        ("e", "dispatched", "dispute", 1, e + 57 * H),
        ("f", "handling", "dispute", 4, e + 57 * H),
        ("g", "resolved", "dispute", 1, e + 8 * H),
        ("h", "verified", "dispute", 1, e + 4 * H),
        ("i", "reported", "fire", 2, e + 1 * H),
        ("j", "reported", "fire", 3, e + H // 4),
        ("k", "handling", "fire", 4, e + 1 * H),
    ]
    rows = [incident(city, i, s, e, category=c, severity=v) for i, s, c, v, _ in cases]
    put(engine, rows)
    f = Q.Filters(page_size=100)
    page = Q.queue_page(engine, flows, city, city.city_id, f, NOW, deadline=mode)
    got = dict(zip(page.rows["incident_id"], page.rows["due_ms"], strict=True))
    assert got == {i: due for i, *_, due in cases}
    polars_due = Q.with_due(pl.DataFrame(rows), flows)
    assert dict(zip(polars_due["incident_id"], polars_due["due_ms"], strict=True)) == got
    left = dict(zip(page.rows["incident_id"], page.rows["left_ms"], strict=True))
    assert left["j"] == e + H // 4 - NOW == -15 * 60_000  # overdue by 15 minutes
    assert page.rows.filter(pl.col("overdue"))["incident_id"].to_list() == ["j"]


@pytest.mark.skipif(not Q.has("due_ms"), reason="the dispatch core's due_ms column")
def test_a_dispatch_deadline_overrides_the_handle_stage(
    engine: Engine, city: City, flows: Flows
) -> None:
    e = NOW - H
    rows = [
        incident(city, "x", "dispatched", e, due_ms=NOW + 5 * H),
        incident(city, "y", "accepted", e, due_ms=NOW + 5 * H),  # not in handle: the flow's
    ]
    put(engine, rows)
    page = Q.queue_page(engine, flows, city, city.city_id, Q.Filters(), NOW)
    got = dict(zip(page.rows["incident_id"], page.rows["due_ms"], strict=True))
    assert got == {"x": NOW + 5 * H, "y": e + 2 * H}


@MODES
def test_overdue_and_due_soon_are_right_across_pages(
    engine: Engine, city: City, flows: Flows, mode: str
) -> None:
    """60 accepted disputes (dispatch stage: 2 h) entered 0..59 × 5 minutes ago: those that
    entered more than 2 h ago are overdue; due within 1 h are those entered 1–2 h ago."""
    rows = [incident(city, f"q{i:02d}", "accepted", NOW - i * 5 * 60_000 - 1000) for i in range(60)]
    rows.append(incident(city, "closed1", "closed", NOW - 10 * H))  # never in the queue
    put(engine, rows)
    entered = {r["incident_id"]: r["last_ms"] for r in rows[:60]}
    overdue = sorted((i for i, t in entered.items() if t + 2 * H < NOW), key=entered.get)
    soon = sorted((i for i, t in entered.items() if NOW <= t + 2 * H < NOW + H), key=entered.get)
    assert len(overdue) == 36 and len(soon) == 12  # i ≥ 24 overdue; 12 ≤ i < 24 soon
    seen: list[str] = []
    for page in range(3):
        f = Q.Filters(due="overdue", page=page, page_size=25)
        got = Q.queue_page(engine, flows, city, city.city_id, f, NOW, deadline=mode)
        assert got.total == 36 and got.pages == 2
        seen += got.rows["incident_id"].to_list() if page < 2 else []
        assert got.rows["overdue"].all()
    assert seen == overdue  # most overdue first, every one once
    soon_page = Q.queue_page(
        engine, flows, city, city.city_id, Q.Filters(due="soon", soon_hours=1), NOW, deadline=mode
    )
    assert soon_page.rows["incident_id"].to_list() == soon
    # the last page asked past the end shows the last page
    f = Q.Filters(page=9, page_size=25)
    last = Q.queue_page(engine, flows, city, city.city_id, f, NOW, deadline=mode)
    assert last.page == 2 and last.rows.height == 60 - 50


def test_scope_and_filters(engine: Engine, city: City, flows: Flows) -> None:
    districts = city.ids("district")
    k_other = next(
        i for i in range(city.grids.height) if city.grids["district_id"][i] != districts[0]
    )
    k_mine = next(
        i for i in range(city.grids.height) if city.grids["district_id"][i] == districts[0]
    )
    mine, other = _place(city, k_mine), _place(city, k_other)
    rows = [
        incident(
            city,
            "m1",
            "reported",
            NOW,
            grid=k_mine,
            category="fire",
            source="hotline",
            reported_ms=NOW - 600_000,
        ),
        incident(city, "m2", "accepted", NOW - H, grid=k_mine, severity=3, reported_ms=NOW - 2 * H),
        incident(city, "o1", "reported", NOW, grid=k_other, reported_ms=NOW - 600_000),
    ]
    put(engine, rows)

    def ids_of(scope: str, **kw: Any) -> list[str]:
        page = Q.queue_page(engine, flows, city, scope, Q.Filters(sort="incident_id", **kw), NOW)
        return page.rows["incident_id"].to_list()

    assert ids_of(city.city_id) == ["m1", "m2", "o1"]
    assert ids_of(mine["district_id"]) == ["m1", "m2"]
    assert ids_of(mine["street_id"]) == ["m1", "m2"]
    assert ids_of(other["grid_id"]) == ["o1"]
    assert ids_of(city.city_id, categories=("fire",)) == ["m1"]
    assert ids_of(city.city_id, sources=("hotline",)) == ["m1"]
    assert ids_of(city.city_id, severities=(3,)) == ["m2"]
    assert ids_of(city.city_id, statuses=("accepted",)) == ["m2"]
    assert ids_of(city.city_id, area_id=other["district_id"]) == ["o1"]
    # an area outside the scope is ignored, never a way out of it
    assert ids_of(mine["district_id"], area_id=other["district_id"]) == ["m1", "m2"]
    assert ids_of(city.city_id, since_ms=NOW - H // 2) == ["m1", "o1"]
    assert ids_of(city.city_id, until_ms=NOW - H // 2) == ["m2"]
    newest_first = Q.queue_page(
        engine, flows, city, city.city_id, Q.Filters(sort="reported_ms", desc=True), NOW
    )
    assert newest_first.rows["incident_id"].to_list() == ["m1", "o1", "m2"]


def test_filters_from_untrusted_values() -> None:
    f = Q.Filters.of(
        {
            "statuses": ["reported", "closed", "x"],
            "categories": "fire",
            "severities": [1, "2", 9],
            "sources": None,
            "due": "later",
            "soon_hours": float("nan"),
            "sort": "description; drop table",
            "desc": "yes",
            "page": -3,
            "page_size": 1_000_000,
            "unit_id": "u" * 65,
        }
    )
    assert f.statuses == ("reported",) and f.categories == ("fire",) and f.severities == (1,)
    assert f.due is None and f.soon_hours == 2.0 and f.sort == "due_ms" and f.desc is False
    assert f.page == 0 and f.page_size == 50 and f.unit_id is None


@pytest.mark.parametrize(
    ("left", "zh", "en"),
    [
        (None, "—", "—"),
        (12 * 60_000 + 5000, "剩余 12 分钟", "12 min left"),
        (3 * H + 5 * 60_000, "剩余 3 小时 5 分", "3 h 5 min left"),
        (-(2 * 24 * H + 3 * H), "超时 2 天 3 小时", "overdue by 2 d 3 h"),
        (-30_000, "超时 0 分钟", "overdue by 0 min"),
    ],
)
def test_the_sla_clock_in_words(left: int | None, zh: str, en: str) -> None:
    assert Q.clock_words(left, "zh-CN") == zh and Q.clock_words(left, "en") == en
