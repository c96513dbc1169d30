"""Who may read /metrics, the page label of a callback, readiness of the city (pure)."""

from __future__ import annotations

import pytest

from dashboard.ops import callback_page
from pipelines.ops.health import city_check, ready_body
from pipelines.ops.metrics import allowed

LOOPBACK = "127.0.0.0/8,::1"


@pytest.mark.parametrize(
    ("peer", "ok"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4 loopback through a dual-stack socket
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.7", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_only_allowed_networks_without_a_token(peer: str | None, ok: bool) -> None:
    assert allowed(peer, None, LOOPBACK, "") is ok


def test_trusted_proxy_networks_are_listed_explicitly() -> None:
    allow = "127.0.0.0/8, 10.1.0.0/16 ,bogus, 10.0.0.7"
    assert allowed("10.1.200.3", None, allow, "")
    assert allowed("10.0.0.7", None, allow, "")
    assert not allowed("10.0.0.8", None, allow, "")


def test_bearer_token_from_anywhere_only_when_set_and_equal() -> None:
    assert allowed("203.0.113.9", "Bearer s3cret-token", LOOPBACK, "s3cret-token")
    assert allowed("203.0.113.9", "bearer s3cret-token", LOOPBACK, "s3cret-token")
    assert not allowed("203.0.113.9", "Bearer s3cret-tokeN", LOOPBACK, "s3cret-token")
    assert not allowed("203.0.113.9", "Basic s3cret-token", LOOPBACK, "s3cret-token")
    assert not allowed("203.0.113.9", "Bearer ", LOOPBACK, "")  # no token configured
    assert not allowed("203.0.113.9", None, LOOPBACK, "s3cret-token")
    assert allowed("127.0.0.1", "Bearer wrong", LOOPBACK, "s3cret-token")  # loopback anyway


def test_nobody_when_nothing_is_allowed() -> None:
    assert not allowed("127.0.0.1", None, "", "")


def test_callback_page_is_a_bounded_label() -> None:
    assert callback_page({"output": "pan-kpi.children"}, {}) == "panorama"
    assert callback_page({"output": "..wall-clock.children...wall-kpi.children.."}, {}) == "wall"
    assert callback_page({"output": "_pages_content.children"}, {}) == "router"
    # unknown, several pages, or no body at all: "other", never the raw output string
    assert callback_page({"output": "evil-\u202e-id.children"}, {}) == "other"
    assert callback_page({"output": "..pan-a.children...wall-b.children.."}, {}) == "other"
    assert callback_page(["pan-kpi.children"], {}) == "other"
    assert callback_page(None, {}) == "other"


class _City:
    def __init__(self, grids: list[str] | None) -> None:
        self.grids = grids

    def ids(self, level: str) -> list[str]:
        if self.grids is None:
            raise RuntimeError("half built")
        return self.grids if level == "grid" else []


def test_city_readiness() -> None:
    assert city_check(_City(["g1", "g2"])) == "ok"
    assert city_check(_City([])) == "no grids"
    assert city_check(_City(None)) == "not loaded"
    assert city_check(None) == "not loaded"
    assert ready_body(False, {"redis": "unreachable: ConnectionError"}) == {
        "status": "not ready",
        "checks": {"redis": "unreachable: ConnectionError"},
    }


class _Source:
    def __init__(self, *families: object) -> None:
        self.families = families

    def collect(self) -> object:
        return iter(self.families)


def test_a_parents_and_its_childrens_counts_of_one_series_add_up() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.ops.metrics import _Many

    def counter(reports: float, video: float) -> CounterMetricFamily:
        c = CounterMetricFamily("wangge_x", "x", labels=["feed"])
        c.add_metric(["reports"], reports)
        c.add_metric(["video"], video)
        return c

    g1 = GaugeMetricFamily("wangge_g", "g", labels=["feed"])
    g1.add_metric(["reports"], 5)
    g2 = GaugeMetricFamily("wangge_g", "g", labels=["feed"])
    g2.add_metric(["video"], 7)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Many([_Source(counter(2, 0), g1), _Source(counter(3, 4), g2)]))
    got = {
        (s.name, tuple(s.labels.values())): s.value
        for f in text_string_to_metric_families(generate_latest(reg).decode())
        for s in f.samples
    }
    assert got == {
        ("wangge_x_total", ("reports",)): 5,
        ("wangge_x_total", ("video",)): 4,
        ("wangge_g", ("reports",)): 5,
        ("wangge_g", ("video",)): 7,
    }
