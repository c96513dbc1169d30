"""Fuzz the gateway's OpenAPI surface with schemathesis against a real uvicorn server on a
real Redis and SQL: no 500s, every status documented, every 4xx in the protocol's own
error format (OsmAnd: a bare status with text; Open311: a list of {code, description}
in JSON or ``<errors>`` in XML; Frigate / batch / health: {"error": {code, message}}).

Half the generated requests carry a valid key (chosen from the generated data, so the
run is reproducible), so the fuzzing reaches past authentication into the parsers.
Bounded: ``WANGGE_FUZZ_EXAMPLES`` (default 25) examples per operation."""

from __future__ import annotations

import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from pipelines.city.geography import demo_city
from pipelines.gateway.app import create_app
from pipelines.gateway.server import free_port
from tests.conftest import open_engine, private_database, private_prefix
from tests.gateway_support import credential, gateway_settings, seed_registries

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.system]
EXAMPLES = int(os.environ.get("WANGGE_FUZZ_EXAMPLES", "25"))
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def gateway_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    city = demo_city(2026, n_grids=300)
    with private_prefix(redis_url) as prefix, private_database(Path(tmp)) as db:
        engine = open_engine(db)
        s = gateway_settings(redis_url, prefix, db, tmp, phone_rate_per_minute=100_000)
        seed_registries(engine, city)
        KEYS.update(
            phone=credential(engine, city, "phone", worker_id="W1", device_id="123456"),
            hotline=credential(engine, city, "hotline"),
            camera=credential(engine, city, "camera"),
        )
        port = free_port("127.0.0.1")
        config = uvicorn.Config(
            create_app(s, city=city, engine=engine),
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="on",
        )
        server = uvicorn.Server(config)
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            t.join(10)
            engine.dispose()


def with_key(case: Any) -> None:
    """Put a valid key on about half the cases (decided by the generated data)."""
    seed = len(repr(case.query)) + len(repr(case.body))
    if seed % 2:
        return
    path = case.operation.path
    if path in ("/", "/osmand"):
        case.query = {**(case.query or {}), "key": KEYS["phone"]}
    elif path == "/osmand/{key}":
        case.path_parameters = {**case.path_parameters, "key": KEYS["phone"]}
    elif path.startswith("/open311"):
        if case.method == "POST" and isinstance(case.body, dict):
            case.body = {**case.body, "api_key": KEYS["hotline"]}
        else:
            case.query = {**(case.query or {}), "api_key": KEYS["hotline"]}
    elif path.startswith("/frigate"):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEYS['camera']}"}
    elif path.startswith("/batch"):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEYS['hotline']}"}
    elif path.startswith("/tasks"):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {KEYS['phone']}"}


def protocol_error_format(path: str, fmt: str | None, response: Any) -> None:
    """A 4xx body in the protocol's own format."""
    status, body = response.status_code, response.content
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if path in ("/", "/osmand", "/osmand/{key}"):
        assert ctype.startswith("text/plain"), (path, ctype)
        assert body.startswith(str(status).encode()), body[:100]
    elif path.startswith("/open311"):
        if fmt == "json":
            errors = orjson.loads(body)
            assert isinstance(errors, list) and errors, body[:200]
            assert all(set(e) == {"code", "description"} for e in errors), body[:200]
            assert errors[0]["code"] == status
        else:
            root = ET.fromstring(body)
            assert root.tag == "errors" and root[0].tag == "error", body[:200]
            assert root[0].findtext("code") == str(status)
    else:
        err = orjson.loads(body)["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str), body[:200]


def operations(url: str) -> list[Any]:
    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    return [r.ok() for r in schemathesis.openapi.from_dict(spec).get_all_operations()]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_and_protocol_errors(gateway_url: str, mode: str) -> None:
    """Each operation, with schema-valid (positive) and schema-violating (negative) data.
    (Driven through hypothesis directly: schemathesis' lazy pytest fixture does not run
    under this pytest.)"""
    ran = 0
    for op in operations(gateway_url):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        def check(case: Any) -> None:
            with_key(case)
            response = case.call(base_url=gateway_url, timeout=30)
            path = case.operation.path
            assert response.status_code < 500 or response.status_code == 503, (
                path,
                response.status_code,
                response.text[:300],
            )
            documented = case.operation.definition.raw.get("responses", {})
            assert str(response.status_code) in documented, (response.status_code, path)
            if 400 <= response.status_code < 500:
                fmt = (case.path_parameters or {}).get("format")
                protocol_error_format(path, fmt, response)

        try:
            check()
        except Unsatisfiable:  # nothing to violate (no parameters, no body)
            assert mode == "negative", op.path
            continue
        ran += 1
    assert ran >= (12 if mode == "positive" else 8)  # every protocol's operations were fuzzed
