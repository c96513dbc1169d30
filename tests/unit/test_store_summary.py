"""The lifecycle summary kept on each incident: computed from the full event history,
whatever the order of arrival."""

from __future__ import annotations

import random
from typing import Any

import polars as pl

from pipelines.spine import store

H = 3_600_000
T0 = 1_790_000_000_000


def event(iid: str, step: str, ts: int, level: str | None = None, handler: str | None = None):
    return {
        "event_id": f"{iid}:{step}:{ts}",
        "incident_id": iid,
        "step": step,
        "ts_ms": ts,
        "category": "sanitation",
        "severity": 2,
        "source": "worker",
        "reporter_id": "R1",
        "handler_id": handler,
        "grid_id": "g1",
        "street_id": "s1",
        "district_id": "d1",
        "lon": 118.8,
        "lat": 32.0,
        "description": None,
        "level": level,
        "entry_id": "0-0",
    }


def history() -> list[dict[str, Any]]:
    return [
        event("A", "reported", T0, "grid", "W2"),
        event("A", "reported", T0 + 1, "grid", "W1"),  # a second report: least handler wins
        event("A", "accepted", T0 + 1 * H, handler="W9"),
        event("A", "dispatched", T0 + 2 * H),
        event("A", "resolved", T0 + 3 * H),
        event("A", "returned", T0 + 4 * H),
        event("A", "resolved", T0 + 5 * H),
        event("A", "returned", T0 + 6 * H),
        event("A", "resolved", T0 + 7 * H),
        event("A", "verified", T0 + 8 * H),
        event("A", "closed", T0 + 9 * H, "street"),
        event("A", "closed", T0 + 10 * H, "grid"),  # a late duplicate close: greatest level
        event("B", "handling", T0 - H),  # stamped before its report (device clock)
        event("B", "reported", T0, "grid", None),
    ]


EXPECT = {
    "A": {
        "first_ms": T0,
        "last_ms": T0 + 10 * H,
        "first_action_ms": T0 + 1 * H,
        "accepted_ms": T0 + 1 * H,
        "dispatched_ms": T0 + 2 * H,
        "first_resolved_ms": T0 + 3 * H,
        "last_returned_ms": T0 + 6 * H,
        "n_returned": 2,
        "n_verified": 1,
        "closed_ms": T0 + 9 * H,
        "closed_level": "street",
        "report_handler_id": "W1",
        "status": "closed",
        "n_events": 12,
    },
    "B": {
        "first_ms": T0 - H,
        "last_ms": T0,
        "first_action_ms": T0 - H,
        "accepted_ms": None,
        "dispatched_ms": None,
        "first_resolved_ms": None,
        "last_returned_ms": None,
        "n_returned": 0,
        "n_verified": 0,
        "closed_ms": None,
        "closed_level": None,
        "report_handler_id": None,
        "reported_ms": T0,
    },
}


def test_incident_rows_carry_the_lifecycle_summary() -> None:
    rows = {r["incident_id"]: r for r in store.incident_rows(pl.DataFrame(history()))}
    for iid, want in EXPECT.items():
        assert {k: rows[iid][k] for k in want} == want
    assert set(store.SUMMARY_COLUMNS) <= set(rows["A"])


def test_summary_is_independent_of_arrival_order() -> None:
    evs = history()
    want = sorted(store.incident_rows(pl.DataFrame(evs)), key=lambda r: r["incident_id"])
    for seed in range(5):
        random.Random(seed).shuffle(evs)
        got = sorted(store.incident_rows(pl.DataFrame(evs)), key=lambda r: r["incident_id"])
        assert got == want


def test_summary_columns_are_model_columns_and_nullable() -> None:
    cols = store.incidents.c
    assert all(c in cols and cols[c].nullable for c in store.SUMMARY_COLUMNS)
