"""The live-state scripts' batched writes end exactly where one write per item would:
worker positions (newest ping wins, across chunks and within one call), ticker lists
(newest first, trimmed to their length) and video counters (summed per field, a field
that ends at 0 removed). Expected values come from the rules, computed here in Python."""

from __future__ import annotations

import random

import pytest
import redis

from pipelines.spine.aggregate import EMPTY_STATE
from pipelines.spine.state import LiveState

pytestmark = pytest.mark.integration


def _live(rclient: redis.Redis, prefix: str, ticker_length: int = 50) -> LiveState:
    return LiveState(rclient, prefix, ticker_length=ticker_length)


def test_newest_ping_wins_within_a_call_and_across_calls(rclient: redis.Redis, prefix: str) -> None:
    st = _live(rclient, prefix)
    rnd = random.Random(7)
    workers = [f"W{i}" for i in range(1300)]  # more than one chunk of the script
    expected: dict[str, tuple[int, str]] = {}
    for call in range(3):
        pings = []
        for k in range(1800):  # repeats of a worker, in and out of time order
            w = rnd.choice(workers)
            ts = 1_000 + rnd.randrange(50)
            pings.append((w, ts, f"{w}@{ts}#{call}.{k}"))
        st.apply_locations(pings, [])
        for w, ts, packed in pings:  # the rule: a strictly newer ping replaces the position
            if w not in expected or ts > expected[w][0]:
                expected[w] = (ts, packed)
        assert st.positions() == {w: p for w, (_, p) in expected.items()}
        seen = {
            k.decode(): int(v)
            for k, v in rclient.zrange(f"{prefix}:live:seen", 0, -1, withscores=True)
        }
        assert seen == {w: ts for w, (ts, _) in expected.items()}


def _incident(i: int, street: str) -> tuple[str, ...]:
    acc = f"1-{i},reported,{1000 + i},20261205,0,0,grid;"
    state = (
        "reported",
        str(1000 + i),
        "road",
        "2",
        "G1",
        street,
        "D1",
        "C",
        "118.0",
        "32.0",
        "1",
        "9999999999999",
        acc,
    )
    assert len(state) == len(EMPTY_STATE)
    return state


def test_ticker_keeps_the_newest_lines_in_order(rclient: redis.Redis, prefix: str) -> None:
    st = _live(rclient, prefix, ticker_length=5)
    pushed: list[str] = []

    def push(ids: range) -> None:
        rows = []
        for i in ids:
            line = f'{{"id":"I{i}"}}'
            rows.append([f"I{i}", "1", _incident(i, "S1"), EMPTY_STATE, f"1-{i}\t{line}"])
            pushed.append(line)
        st.push_incidents(rows)

    push(range(3))  # fewer than the length: all kept
    assert [x["id"] for x in st.ticker("S1", 50)] == ["I2", "I1", "I0"]
    push(range(3, 15))  # more than the length in one call
    want = [f"I{i}" for i in range(14, 9, -1)]  # newest first, 5 of them
    for area in ("S1", "D1", "C"):
        assert [x["id"] for x in st.ticker(area, 50)] == want
    push(range(15, 17))  # two new ones on top of the trimmed list
    assert [x["id"] for x in st.ticker("S1", 50)] == ["I16", "I15", "I14", "I13", "I12"]


def _alert_fields(grid: str, label: str, minute: int) -> tuple[object, ...]:
    return ("20261205", grid, "S1", "D1", "C", label, minute, minute // 60, b'{"k":"video"}')


def test_alert_counters_are_the_alerts_effects(rclient: redis.Redis, prefix: str) -> None:
    st = _live(rclient, prefix)
    alerts = {
        f"A{i}": (f"9-{i}", "GX" if i < 5 else f"G{i % 3}", "person" if i % 2 else "car")
        for i in range(40)
    }
    rows = [(a, e, _alert_fields(g, lab, 100), []) for a, (e, g, lab) in alerts.items()]
    assert st.set_alerts(rows) == ["A"] * 40
    # an earlier entry turns out to create A0..A9 (another label, grid G9): the old
    # creators are losers, their counts move
    moved = {f"A{i}": (f"8-{i}", "G9", "bike") for i in range(10)}
    rows = [
        (a, e, _alert_fields(g, lab, 100), [(alerts[a][0], "20261205")])
        for a, (e, g, lab) in moved.items()
    ]
    assert st.set_alerts(rows) == ["A"] * 10
    final = {**alerts, **moved}

    def want(level: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, g, lab in final.values():
            for a in (g, "S1", "D1", "C"):
                key = a if level == "video" else f"{a}|{lab}"
                out[key] = out.get(key, 0) + 1
        return out

    for metric in ("video", "video_label"):
        got = {
            k.decode(): int(v) for k, v in rclient.hgetall(f"{prefix}:d:20261205:{metric}").items()
        }
        assert got == want(metric)
        # every alert of grid GX moved: its fields ended at 0 and are gone
        assert not [k for k in got if k.startswith("GX")]
    # the hour's trend counts the same alerts (minute 100 is in hour 1)
    hour = {k.decode(): int(v) for k, v in rclient.hgetall(f"{prefix}:h:1").items()}
    assert hour == {f"v|{k}": n for k, n in want("video").items()}


def test_patrolled_grid_counts_once_per_day_in_coverage(rclient: redis.Redis, prefix: str) -> None:
    """A grid counts once per day in coverage (grid and its area chain), however often
    and in however many calls it is patrolled; repeats within one call included."""
    st = _live(rclient, prefix)
    chain = {f"g{i}": (f"s{i % 3}", f"d{i % 2}", "c") for i in range(12)}
    rnd = random.Random(11)
    visited: dict[str, set[str]] = {}
    for _call in range(4):
        rows = []
        for _ in range(20):
            day, g = rnd.choice(["20260101", "20260102"]), rnd.choice(sorted(chain))
            rows.append((day, g, *chain[g]))
            visited.setdefault(day, set()).add(g)
        st.apply_locations([], rows)
    for day, grids in visited.items():
        expected: dict[str, int] = {}
        for g in grids:
            for area in (g, *chain[g]):
                expected[area] = expected.get(area, 0) + 1
        got = rclient.hgetall(f"{prefix}:d:{day}:coverage")
        assert {k.decode(): int(v) for k, v in got.items()} == expected
        assert {m.decode() for m in rclient.smembers(f"{prefix}:d:{day}:patrolled")} == grids


def test_a_field_holding_a_separator_is_refused(rclient: redis.Redis, prefix: str) -> None:
    """Rows go to the script joined by control characters: a field holding one is refused
    before anything is written."""
    st = _live(rclient, prefix)
    with pytest.raises(ValueError):
        st.apply_locations([("W\x1f1", 1_000, "1,2,1000,g1,,,,")], [])
    with pytest.raises(ValueError):
        st.apply_locations([], [("20260101", "g\x1e1", "s", "d", "c")])
    assert not list(rclient.scan_iter(match=f"{prefix}:*"))


def _step(state: tuple[str, ...], item: str, **changes: str) -> tuple[str, ...]:
    """The state after one more accepted event (its acc item appended), with changes."""
    names = ("status", "ts", "cat", "sev", "grid", "street", "district", "city", "lon",
             "lat", "open", "dl", "acc")  # fmt: skip
    s = dict(zip(names, state, strict=True)) | changes
    s["acc"] = state[-1] + item
    return tuple(s[n] for n in names)


def test_an_open_incident_keeps_its_street_deadline_and_no_ttl(
    rclient: redis.Redis, prefix: str
) -> None:
    """The keys an open incident is in follow its state through every push (the script
    writes only what changes): its street's set, the deadline zset (score: its
    deadline), no TTL on its hash; none of them once closed, and then a TTL."""
    st = _live(rclient, prefix)
    k = f"{prefix}:live:deadlines"
    s0 = _incident(1, "S1")
    s1 = _step(s0, "1-2,accepted,1002,20261205,0,0,grid;", status="accepted")
    s2 = _step(s1, "1-3,dispatched,1003,20261205,0,0,grid;", street="S2", dl="8888888888888")
    s3 = _step(s2, "1-4,closed,1004,20261205,0,0,grid;", status="closed", open="0")
    history = [(s0, EMPTY_STATE), (s1, s0), (s2, s1), (s3, s2)]
    for n, (new, old) in enumerate(history):
        st.push_incidents([["I1", "1", new, old, ""]])
        street, is_open = new[5], new[10] == "1"
        for s in ("S1", "S2"):
            member = rclient.sismember(f"{prefix}:live:open_inc:{s}", "I1")
            assert bool(member) == (is_open and s == street), (n, s)
        assert rclient.zscore(k, "I1") == (float(new[11]) if is_open else None), n
        ttl = rclient.ttl(f"{prefix}:inc:I1")
        assert (ttl == -1) if is_open else (ttl > 0), n


def test_a_state_before_given_by_prefix_counts_as_the_full_one(
    rclient: redis.Redis, prefix: str
) -> None:
    """Redis lost an incident's hash (not its counters): the state before, whose acc is
    sent as a prefix of the new one's, takes back exactly its events' effects, so the
    counters end as if the new state had been pushed alone into an empty Redis."""
    lost, fresh = _live(rclient, f"{prefix}:a"), _live(rclient, f"{prefix}:b")
    s0 = _incident(1, "S1")
    s1 = _step(s0, "1-5,reported,1005,20261205,0,0,grid;")
    s2 = _step(s1, "1-6,closed,1006,20261206,1,0,street;", status="closed", open="0")
    lost.push_incidents([["I1", "1", s1, EMPTY_STATE, ""]])
    rclient.delete(f"{prefix}:a:inc:I1")
    lost.push_incidents([["I1", "1", s2, s1, ""]])
    fresh.push_incidents([["I1", "1", s2, EMPTY_STATE, ""]])
    for key in ("d:20261205:reports", "d:20261206:closed", "d:20261206:closed_level",
                "live:open"):  # fmt: skip
        a = rclient.hgetall(f"{prefix}:a:{key}")
        assert a == rclient.hgetall(f"{prefix}:b:{key}"), key
    assert rclient.hget(f"{prefix}:a:d:20261205:reports", "S1") == b"2"  # both reports
    assert rclient.hget(f"{prefix}:a:d:20261206:closed_level", "S1|street") == b"1"
