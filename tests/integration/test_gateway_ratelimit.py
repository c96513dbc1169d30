"""The shared sliding-window limit (Redis), weighted by cost, with the clock passed in."""

from __future__ import annotations

import pytest

from pipelines.gateway.ratelimit import SyncLimiter

pytestmark = pytest.mark.integration
T = 1_800_000_000_000


def test_window_slides_and_counts_costs(rclient, prefix) -> None:
    lim = SyncLimiter(rclient, prefix, f"{prefix}:gen")
    assert lim.hit("k", 10, T, 4).admitted  # 4
    assert lim.hit("k", 10, T + 30_000, 4).admitted  # 8
    v = lim.hit("k", 10, T + 40_000, 4)  # 12 > 10: refused, not recorded
    assert not v.admitted and v.total == 8 and v.retry_after_s == 20  # the first leaves at T+60 s
    assert lim.hit("k", 10, T + 40_001, 2).admitted  # exactly 10
    v = lim.hit("k", 10, T + 60_001, 4)  # the first 4 slid out: 6 + 4
    assert v.admitted and v.total == 10
    assert lim.hit("other", 10, T + 60_001, 10).admitted  # buckets are separate
    assert not lim.hit("big", 10, T, 11).admitted  # one request over the whole limit


def test_counter_lost_is_rebuilt_from_the_window(rclient, prefix) -> None:
    lim = SyncLimiter(rclient, prefix, f"{prefix}:gen")
    lim.hit("k", 10, T, 6)
    rclient.delete(f"{prefix}:rl:k:n")  # e.g. evicted
    assert not lim.hit("k", 10, T + 1000, 5).admitted  # 6 still counted
    assert lim.hit("k", 10, T + 1000, 4).admitted


def test_revocation_generation_comes_with_every_hit(rclient, prefix) -> None:
    lim = SyncLimiter(rclient, prefix, f"{prefix}:gen")
    assert lim.hit("k", 10, T, 1).generation == 0
    rclient.incr(f"{prefix}:gen")
    assert lim.hit("k", 10, T, 1).generation == 1
