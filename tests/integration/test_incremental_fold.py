"""The reports pipeline keeps each incident's fold state on its ``incidents`` row and
folds a batch onto it (``store.decide_reports`` with a time zone): random entry
sequences — out of order, duplicated, replayed, rejected, with dispatch actions and
merges — decided batch by batch against SQL give the rows and live states that the
full fold of the rules gives: ``aggregate.decide_reports`` over every entry at once,
then ``incident_frame`` / ``aggregate.incident_states`` over the accepted events."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, select

from pipelines.dispatch.flows import load_flows
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import STEPS, stream_key
from pipelines.spine.store.incidents import incident_frame

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
CITY = "c1"
H = 3_600_000
T0 = 1_790_000_000_000  # 2026-09-21, near a local midnight boundary below
FOLD = ["acc", "acc_tz", "walk_ts_ms", "walk_entry", "walk_closed"]
SCHEMA = store.frame_schema(store.incident_events)


def _entries(rnd: random.Random, n: int) -> list[dict[str, Any]]:
    """n valid report entries in stream order over a few incidents: lifecycles with
    gaps, reports after other steps, closes, merges, reused event ids, shuffled times."""
    out = []
    for k in range(n):
        inc = f"I{rnd.randrange(5)}"
        step = rnd.choice([*STEPS, "reported", "dispatched", "closed"])
        reuse = out and rnd.random() < 0.12
        ev = rnd.choice(out)["event_id"] if reuse else f"E{k}"
        ts = T0 + rnd.randrange(40) * H // 2 + rnd.choice([0, 0, 1])  # ties too
        out.append(
            {
                "event_id": ev,
                "incident_id": inc,
                "step": step,
                "ts_ms": ts,
                "category": rnd.choice(["sanitation", "roads"]),
                "severity": rnd.randint(1, 4),
                "source": rnd.choice(["worker", "hotline", None]),
                "reporter_id": rnd.choice([None, "R1", "R2"]),
                "handler_id": rnd.choice([None, "W1", "W2", "W3"]),
                "grid_id": rnd.choice(["g1", "g2"]),
                "street_id": "s1",
                "district_id": "d1",
                "lon": 118.8 + rnd.random() / 10,
                "lat": 32.0 + rnd.random() / 10,
                "description": rnd.choice([None, "pothole"]),
                "level": rnd.choice([None, "grid", "community", "street", "district"]),
                "entry_id": f"{1000 + k // 3}-{k % 3}",
                "actor_id": rnd.choice([None, "A1", "A2"]),
                "reason": None,
                "unit_id": rnd.choice([None, "U1", "U2"]) if step == "dispatched" else None,
                "due_ms": ts + 5 * H if step == "dispatched" and rnd.random() < 0.5 else None,
                "note": None,
                "photo_url": None,
                "onsite_by": None,
                "duplicate_of": "I0" if step == "closed" and rnd.random() < 0.3 else None,
            }
        )
    return out


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def _full_fold(entries: list[dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted events, every entry with its verdict) by the rule, all at once."""
    cands = (
        _frame(entries)
        .select(agg.DECISION_COLUMNS)
        .with_columns(stored=pl.lit(None, pl.String), reason=pl.lit(None, pl.String))
    )
    decided = agg.decide_reports(cands)
    ok = set(decided.filter(pl.col("verdict") == "accepted")["entry_id"])
    return _frame([e for e in entries if e["entry_id"] in ok]), decided


def _stored_rows(engine: Engine) -> pl.DataFrame:
    with engine.connect() as conn:
        got = conn.execute(select(store.incidents)).fetchall()
    return pl.DataFrame(got, schema=store.frame_schema(store.incidents), orient="row").sort(
        "incident_id"
    )


def _deliveries(rnd: random.Random, entries: list[dict[str, Any]]) -> list[list[dict]]:
    """Batches as a consumer group delivers them: mostly in stream order, sometimes a
    batch held back (a claim after a crash) or delivered again (a redelivery)."""
    batches, i = [], 0
    while i < len(entries):
        k = rnd.randint(1, 8)
        batches.append(entries[i : i + k])
        i += k
    out: list[list[dict]] = []
    held: list[list[dict]] = []
    for b in batches:
        r = rnd.random()
        if r < 0.15:
            held.append(b)  # delivered later
            continue
        out.append(b)
        if r > 0.9:
            out.append(b)  # redelivered
        if held and rnd.random() < 0.3:
            out.append(held.pop(0))
    return out + held


@pytest.mark.parametrize("seed", range(30))
def test_incremental_fold_equals_the_full_fold(engine: Engine, seed: int) -> None:
    rnd = random.Random(seed)
    flows = load_flows()
    entries = _entries(rnd, rnd.randrange(10, 70))
    from_rows = 0
    for batch in _deliveries(rnd, entries):
        with engine.begin() as conn:
            d = store.decide_reports(conn, _frame(batch), flows, tz=TZ)
        assert d.prior is not None
        from_rows += d.prior.height
    accepted, decided = _full_fold(entries)
    want = incident_frame(accepted, flows).sort("incident_id")
    got = _stored_rows(engine)
    rule_cols = [c for c in want.columns if c not in FOLD]
    assert got.select(rule_cols).to_dicts() == want.select(rule_cols).to_dicts()
    # the live state kept on the rows is the one the accepted events give
    assert agg.row_states(got, CITY, flows) == agg.incident_states(accepted, CITY, TZ, flows)
    # the walk columns: the last entry in walk order of every stored entry, and closes
    for r in got.iter_rows(named=True):
        mine = [e for e in entries if e["incident_id"] == r["incident_id"]]
        last = max(mine, key=lambda e: (e["ts_ms"], *stream_key(e["entry_id"])))
        assert (r["walk_ts_ms"], r["walk_entry"]) == (last["ts_ms"], last["entry_id"])
        assert r["walk_closed"] == int(any(e["step"] == "closed" for e in mine))
        assert r["acc_tz"] == TZ
    # the same accepted entries in SQL, and every entry decided the rule's way
    with engine.connect() as conn:
        ids = set(conn.execute(select(store.incident_events.c.entry_id)).scalars())
        rej = dict(
            conn.execute(
                select(store.report_rejects.c.entry_id, store.report_rejects.c.reason)
            ).all()
        )
    assert ids == set(accepted["entry_id"])
    assert set(rej) == set(decided["entry_id"]) - ids
    # and some batches were decided from the rows (the path under test ran)
    if seed < 20:
        assert from_rows > 0 or len(entries) < 20


def test_rows_of_other_writers_are_folded_from_their_history(engine: Engine) -> None:
    """A row without fold state (an older database, ``persist_report_events``) is
    decided from its history once, and keeps its fold state from then on."""
    rnd = random.Random(7)
    flows = load_flows()
    seen: set[str] = set()
    entries = [  # each accepted by the rule: unique event ids, no report or close after
        e
        for e in _entries(rnd, 60)
        if e["step"] not in ("closed", "reported")
        and not (e["event_id"] in seen or seen.add(e["event_id"]))
    ]
    first, rest = entries[:20], entries[20:]
    first = [{**first[0], "step": "reported", "ts_ms": T0 - H}, *first[1:]]
    store.persist_report_events(engine, _frame(first), flows)
    assert _stored_rows(engine)["acc"].null_count() == _stored_rows(engine).height
    with engine.begin() as conn:
        d = store.decide_reports(conn, _frame(rest), flows, tz=TZ)
    assert d.prior is not None and d.prior.height == 0  # no fold state yet: from history
    got = _stored_rows(engine)
    accepted, _ = _full_fold(first + rest)
    assert got["acc"].null_count() == 0
    assert agg.row_states(got, CITY, flows) == agg.incident_states(accepted, CITY, TZ, flows)


def test_backfilled_fold_state_is_the_pipelines(engine: Engine) -> None:
    """``backfill_summaries`` with the time zone fills the fold state of rows without it
    (history and rejects read once), and later batches are decided from the rows."""
    rnd = random.Random(11)
    flows = load_flows()
    entries = _entries(rnd, 60)
    first = entries[:40]
    rest = [{**e, "ts_ms": e["ts_ms"] + 40 * H} for e in entries[40:]]  # (after the first)
    entries = first + rest
    with engine.begin() as conn:
        store.decide_reports(conn, _frame(first), flows)  # (no time zone: no fold state)
    assert _stored_rows(engine)["acc"].null_count() == _stored_rows(engine).height
    n = _stored_rows(engine).height
    assert store.backfill_summaries(engine, chunk=2, flows=flows, tz=TZ) == n
    assert store.backfill_summaries(engine, flows=flows, tz=TZ) == 0
    from_rows = 0
    for batch in [[e] for e in rest]:
        with engine.begin() as conn:
            d = store.decide_reports(conn, _frame(batch), flows, tz=TZ)
        from_rows += d.prior.height if d.prior is not None else 0
    assert from_rows > 0
    accepted, _ = _full_fold(entries)
    got = _stored_rows(engine)
    assert agg.row_states(got, CITY, flows) == agg.incident_states(accepted, CITY, TZ, flows)
    want = incident_frame(accepted, flows).sort("incident_id")
    rule_cols = [c for c in want.columns if c not in FOLD]
    assert got.select(rule_cols).to_dicts() == want.select(rule_cols).to_dicts()
