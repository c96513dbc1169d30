"""Live push's pure parts: what a stream is from the page's query (the same value key the
refresh callbacks make), the Dash request that builds a tick, and where the pages may
connect (the CSP) — from the rules, not from the code under test."""

from __future__ import annotations

from dashboard import ids
from dashboard.auth import DETAIL_KINDS, Decision
from dashboard.guard import push_sources
from dashboard.push.hub import frame
from dashboard.push.spec import Query, refresh_callback, request_body, tick_of, until_next
from dashboard.responses import push_channel, slot_label, slot_of, stream_of


def test_query_takes_only_clean_values() -> None:
    q = Query.parse("pan", {"area": "320102", "metric": "nope", "grids": "1", "lang": "en-GB"})
    assert q == Query("pan", "320102", "open", True, "en", 1080)  # unknown metric → "open"
    assert Query.parse("warnings", {"area": "320102"}) is None  # no stream for that page
    assert Query.parse("pan", {"area": ""}) is None
    assert Query.parse("pan", {"area": "x" * 129}) is None  # longer than any id
    wall = Query.parse("wall", {"area": "320100", "vh": "2160", "lang": "zh"})
    assert wall is not None and wall.vh == 2160 and wall.lang == "zh-CN"


def test_stream_key_is_what_the_data_is_never_who_asks() -> None:
    leader = Decision(True, "320102", "aggregates", frozenset())
    commander = Decision(True, "320102", "aggregates", frozenset(DETAIL_KINDS))
    q = Query("pan", "320102", "online", False, "zh-CN", 1080)
    # Backend.cache_key: name, area, data class, then the callback's other inputs
    assert q.key(leader) == "pan:320102:aggregates:online:False:zh-CN"
    assert q.key(commander).startswith("pan:320102:incidents+names+positions+tracks:")
    wall = Query("wall", "320100", "open", False, "en", 2160)
    city = Decision(True, "320100", "aggregates", frozenset())
    assert wall.key(city) == "wall:320100:aggregates:open:en:36"  # 1.65 % of 2160 px
    refused = Decision(False, "320102", "aggregates", why="area outside scope")
    try:
        q.key(refused)
    except PermissionError:
        pass
    else:
        raise AssertionError("a refusal has no stream")
    # one channel per (outputs, key); the tick is not part of it
    out = f"..{ids.P_GEO}.hideout...{ids.P_LAST}.data.."
    a, b = stream_of(out, q.key(leader)), stream_of(out, q.key(commander))
    assert a != b and push_channel("p", a) == f"p:dash:push:{a}"
    assert slot_label(slot_of(out, q.key(leader), 42)) == f"{a}:42"


def test_request_body_fills_the_callbacks_inputs_by_id() -> None:
    deps = [
        {"output": "..other.x..", "inputs": [], "state": []},
        {
            "output": f"..{ids.P_GEO}.hideout...{ids.P_LAST}.data..",
            "inputs": [
                {"id": ids.P_TICK, "property": "n_intervals"},
                {"id": ids.P_METRIC, "property": "value"},
                {"id": ids.P_ALLGRIDS, "property": "value"},
            ],
            "state": [
                {"id": ids.P_AREA, "property": "data"},
                {"id": ids.P_LAST, "property": "data"},
                {"id": ids.LANG, "property": "data"},
            ],
        },
    ]
    cb = refresh_callback("pan", deps)
    assert cb is deps[1]
    body = request_body(Query("pan", "320102", "online", True, "en", 1080), cb)
    assert [i["value"] for i in body["inputs"]] == [0, "online", ["all"]]
    assert [s["value"] for s in body["state"]] == ["320102", None, "en"]
    assert body["outputs"] == [
        {"id": ids.P_GEO, "property": "hideout"},
        {"id": ids.P_LAST, "property": "data"},
    ]


def test_ticks_and_frames() -> None:
    assert tick_of(10.0, 5.0) == 2 and tick_of(14.999, 5.0) == 2
    assert abs(until_next(11.0, 5.0) - 4.0) < 1e-9
    assert frame(7, b'{"a":\n1}') == b'id: 7\nevent: tick\ndata: {"a": 1}\n\n'


def test_csp_allows_the_push_server_only() -> None:
    assert push_sources("", "example.org") == []  # same origin: 'self' covers it
    assert push_sources(":8052", "10.0.0.5:8050") == [
        "http://10.0.0.5:8052",
        "https://10.0.0.5:8052",
    ]
    assert push_sources("https://push.example.org/", "x") == ["https://push.example.org"]
    assert push_sources("not a url", "x") == []
