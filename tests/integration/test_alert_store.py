"""``store.decide_alerts`` on a real database decides exactly as the pure rule
(``aggregate.decide_alert_versions``, whose behaviour tests/unit/test_alert_versions.py
derives from Frigate's documented messages): for random streams of Frigate objects —
alerts seen once, objects whose new / update / end messages share a batch or span
several, replays of stored entries, earlier creators decided after later ones, a
message from another camera — cut into random batches, the statuses of every batch and
the table after it equal the rule's, run batch by batch on what it stored."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine

from pipelines.spine import store
from pipelines.spine.aggregate import decide_alert_versions

pytestmark = pytest.mark.integration

T0 = 1_780_000_000_000


def stream(rng: random.Random, n_alerts: int) -> list[dict[str, Any]]:
    """Video rows in stream order: most alerts one message without a revision (a camera
    that sends one event per alert), some a Frigate object's numbered revisions (one of
    them, now and then, from another camera), some sent twice."""
    rows: list[dict[str, Any]] = []
    seq = 0

    def row(aid: str, cam: str, rev: int | None, score: float) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        entry = f"{T0 // 1000 + seq}-0"
        return {
            "alert_id": aid,
            "camera_id": cam,
            "label": rng.choice(["intrusion", "fire", "crowd"]),
            "score": score,
            "ts_ms": T0 + 1000 * seq,
            "lon": 118.8,
            "lat": 32.05,
            "grid_id": "G1",
            "street_id": "S1",
            "district_id": "D1",
            "entry_id": entry,
            "revision": rev,
            "rev_entry": entry,
            "end_ms": None if rev is None or rev < 3 else T0 + 1000 * seq + 5000,
            "sub_label": None,
            "zones": None,
            "severity": None,
        }

    for k in range(n_alerts):
        aid, cam = f"A{k}", f"CAM{k % 7}"
        kind = rng.random()
        if kind < 0.6:
            rows.append(row(aid, cam, None, 0.5))
        elif kind < 0.75:  # the same message twice (a replay, or a camera's duplicate)
            rows += [row(aid, cam, None, 0.5), row(aid, cam, None, 0.6)]
        else:
            for rev in range(1, rng.randint(2, 4) + 1):
                moved = rng.random() < 0.1
                rows.append(row(aid, "CAMX" if moved else cam, rev, 0.5 + rev / 10))
    # arrival is not stream order everywhere: a few neighbours swapped
    for _ in range(len(rows) // 10):
        i = rng.randrange(len(rows) - 1)
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return rows


def batches_of(rng: random.Random, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out, i = [], 0
    while i < len(rows):
        n = rng.randint(1, 40)
        out.append(rows[i : i + n])
        i += n
    # an entry decided again (redelivered after a crash before XACK)
    again = rng.sample(range(len(out)), max(1, len(out) // 5))
    return [b for k, b in enumerate(out) for _ in range(2 if k in again else 1)]


def table(engine: Engine) -> dict[str, dict[str, Any]]:
    got = store.read_frame(engine, store.video_alerts.select()).to_dicts()
    return {r["alert_id"]: {k: r[k] for k in store.VIDEO_COLUMNS} for r in got}


@pytest.mark.parametrize("seed", range(4))
def test_the_store_decides_as_the_rule(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    rows = stream(rng, 120)
    rule: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for batch in batches_of(rng, rows):
        ids = {r["alert_id"] for r in batch}
        write, want, _ = decide_alert_versions([rule[a] for a in ids if a in rule], batch)
        for w in write:
            rule[w["alert_id"]] = {k: w[k] for k in store.VIDEO_COLUMNS}
        frame = pl.DataFrame(batch, schema=store.frame_schema(store.video_alerts))
        with engine.begin() as conn:
            got = store.decide_alerts(conn, frame).statuses
        assert got == want
        assert table(engine) == rule
        seen |= set(want.values())
    # created, applied again, updated, superseded, duplicate: each case was decided
    assert {"A", "R", "U", "S", "D"} <= seen, seen
