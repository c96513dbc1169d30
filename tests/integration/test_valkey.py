"""The embedded server's binary is a setting (``redis.embedded_server``). `make test-valkey`
sets it to a Valkey server and runs the integration and cluster tiers on it; these tests
make sure the tier really ran on the server it names (not silently on redis-server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from pipelines.embedded import EmbeddedRedis, redis_server_binary
from pipelines.settings import load_settings

pytestmark = pytest.mark.integration


def test_the_server_the_tests_use_is_the_configured_one(redis_url: str) -> None:
    if os.environ.get("REDIS_URL"):
        pytest.skip("a server given by REDIS_URL, not started by the tests")
    r = redis.Redis.from_url(redis_url)
    try:
        info = r.info("server")
    finally:
        r.close()
    assert Path(str(info["executable"])).resolve() == Path(redis_server_binary()).resolve()
    configured = load_settings().redis.embedded_server
    if "valkey" in Path(configured).name:
        assert "valkey_version" in info, info  # the Valkey tier runs on Valkey


def test_a_server_binary_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"redis\.embedded_server: .* is no executable"):
        EmbeddedRedis(tmp_path, binary=str(tmp_path / "no-such-server")).start()
    text = tmp_path / "server.txt"
    text.write_text("not a program")
    with pytest.raises(RuntimeError, match="is no executable"):
        EmbeddedRedis(tmp_path, binary=str(text)).start()
