"""Shared fixtures: a real Redis and a real SQL database, each private to the test.

* Redis: the server at ``REDIS_URL`` when set, else an embedded redis-server started
  once per session. Every test gets its own key prefix and deletes only those keys.
* SQL: a SQLite file per test, or — when ``DATABASE_URL`` points at PostgreSQL — a
  private schema created for the test and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from pipelines.access import accounts, audit
from pipelines.embedded import EmbeddedRedis
from pipelines.settings import Settings, load_settings
from pipelines.spine import store
from tests.clock import MOMENTS, Moment

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# The audit chain's key in tests: every engine and app of a test's database shares it.
TEST_AUDIT_KEY = "wangge-test-audit-key"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--moment",
        default="thu-10:00",
        choices=[m.name for m in MOMENTS],
        help="the calendar moment a live server's clock starts at (tests/clock.py)",
    )


@pytest.fixture(scope="module", params=MOMENTS, ids=str)
def moment(request: pytest.FixtureRequest) -> Moment:
    """Each named calendar moment in turn (``tests/clock.py``): a weekday day and night, a
    weekend night and noon, the minute after midnight that starts a new ISO week and month.
    A test that asks for it runs once per moment and is marked ``clock``."""
    m: Moment = request.param
    return m


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever runs at a calendar moment is time-sensitive: mark it ``clock``.

    For ``-n N --dist loadgroup`` (``make test``): a test file is one group, so its module
    fixtures are built once; all browser tests are one group, so one Chromium runs at a time.
    First of the hooks: an xdist worker reads the groups in its own hook (which would
    otherwise run before this one and find none, and every test be its own group).
    """
    for item in items:
        if "moment" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.clock)
        path = item.nodeid.split("::", 1)[0]
        group = "browser" if path.startswith("tests/browser/") else path
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session: pytest.Session) -> None:
    """In an xdist worker under ``--dist loadgroup``, every test carries its group in its
    id (``…@group``); a pytest or xdist version that loses it fails here, not by slowly
    rebuilding every module fixture on both workers."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in session.items if "@" not in i.nodeid.rsplit("]", 1)[-1]]
    if lost:
        raise pytest.UsageError(f"pytest-xdist lost the group of {len(lost)} tests: {lost[0]}")


# Tests hash hundreds of passwords (every account they make): at the production scrypt cost
# that is a quarter of a second each. The same code runs at a lower cost; a hash carries its
# cost, so verification reads it from the hash. tests/unit/test_accounts.py puts the
# production cost back and checks it.
PRODUCTION_SCRYPT_N = accounts.SCRYPT_N
TEST_SCRYPT_N = 2**10


@pytest.fixture(scope="session", autouse=True)
def _test_password_cost() -> Iterator[None]:
    accounts.SCRYPT_N = TEST_SCRYPT_N
    yield
    accounts.SCRYPT_N = PRODUCTION_SCRYPT_N


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def private_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of our own; on exit, delete exactly the keys under it."""
    p = f"wgtest-{uuid.uuid4().hex[:10]}"
    yield p
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{p}:*", count=5000))
    for i in range(0, len(keys), 1000):
        r.unlink(*keys[i : i + 1000])
    r.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    with private_prefix(redis_url) as p:
        yield p


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    with private_prefix(redis_url) as p:
        yield p


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def _pg_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1] if "+" not in url.split(":")[0] else url


@contextmanager
def private_database(tmp: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema): SQLite in tmp, or a private PostgreSQL schema dropped on exit."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        schema = f"wgtest_{uuid.uuid4().hex[:10]}"
        admin = create_engine(_pg_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield url, schema
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        return
    yield f"sqlite:///{tmp / 'wangge.db'}", None


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    with private_database(tmp_path) as db:
        yield db


@pytest.fixture(scope="module")
def module_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    with private_database(tmp_path_factory.mktemp("db")) as db:
        yield db


def open_engine(db: tuple[str, str | None]) -> Engine:
    url, schema = db
    eng = audit.keyed(store.make_engine(url, schema=schema), TEST_AUDIT_KEY)
    store.create_schema(eng)
    return eng


@pytest.fixture
def engine(db_url: tuple[str, str | None]) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def settings_for(
    redis_url: str, prefix: str, db: tuple[str, str | None], tmp: Path, **sections: dict
) -> Settings:
    """Settings pointing at the test's own Redis prefix and database."""
    base = load_settings(environ={})
    url, schema = db
    changes = {
        "redis": dataclasses.replace(base.redis, url=redis_url, prefix=prefix),
        "database": dataclasses.replace(base.database, url=url, schema=schema or ""),
        "run": dataclasses.replace(base.run, var_dir=str(tmp)),
        "auth": dataclasses.replace(base.auth, audit_key=TEST_AUDIT_KEY),
    }
    for name, values in sections.items():
        changes[name] = dataclasses.replace(getattr(base, name), **values)
    s = dataclasses.replace(base, **changes)
    return s


@pytest.fixture
def live_settings(
    redis_url: str, prefix: str, db_url: tuple[str, str | None], tmp_path: Path
) -> Settings:
    """Settings for this test's own Redis prefix, database and var directory."""
    return settings_for(redis_url, prefix, db_url, tmp_path)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    d = ARTIFACTS / request.node.name.replace("/", "_")
    d.mkdir(parents=True, exist_ok=True)
    return d


def start_session(server: Any, role: str, scope: str, username: str) -> str:
    """A real server-side session (in the app's Redis) for a principal; its id."""
    from pipelines.access import accounts

    guard = server.extensions["wangge.guard"]
    known = accounts.get_user(guard.engine, username)
    stamp = known.stamp if known is not None else ""
    s = guard.sessions.start(
        username=username,
        role=role,
        scope=scope,
        display_name=username,
        now_ms=guard.now_ms(),
        stamp=stamp,
        csrf="test-csrf",
    )
    return str(s.sid)


@contextmanager
def signed_in(
    app: Any, role: str = "city_leader", scope: str = "320100", username: str = "tester"
) -> Iterator[None]:
    """A request context whose session holds a principal (for calling callbacks directly)."""
    from flask import session

    sid = start_session(app.server, role, scope, username)
    with app.server.test_request_context("/"):
        session["sid"] = sid
        yield


def sign_in_client(
    client: Any, role: str = "city_leader", scope: str = "320100", username: str = "tester"
) -> Any:
    """A Flask test client with a signed-in session (its CSRF token is "test-csrf")."""
    sid = start_session(client.application, role, scope, username)
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return client


def stop_processes(procs: Iterable[subprocess.Popen[Any]], timeout_s: float = 20) -> None:
    """SIGTERM every process (a graceful stop), then wait; kill what outlives the timeout."""
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
