"""Accounts and the audit chain against real SQL (SQLite, or PostgreSQL via DATABASE_URL),
plus the `wangge users` / `wangge audit` commands."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from pipelines import cli
from pipelines.access import accounts, audit, demo, wall_tokens
from pipelines.city.geography import City, demo_city
from pipelines.settings import AuthSettings, child_environ
from pipelines.spine import store
from tests.conftest import TEST_AUDIT_KEY, open_engine

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
AUTH = AuthSettings(lockout_failures=5, lockout_window_minutes=15)
PW = "Grid-governance-2026"


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=150)


def district_street(city: City) -> tuple[str, str]:
    district = city.ids("district")[0]
    return district, city.children(district)[0]


def actions(engine: Engine) -> list[str]:
    return audit.query(engine, limit=10_000).sort("seq")["action"].to_list()


# ------------------------------------------------------------------ users


def test_create_list_disable_set_role(engine: Engine, city: City) -> None:
    district, street = district_street(city)
    u = accounts.create_user(
        engine, city, "Alice", "district_commander", district, PW, "张三", now_ms=T0, actor="cli:t"
    )
    assert (u.username, u.display_name, u.role, u.scope_area_id, u.disabled) == (
        "alice",
        "张三",
        "district_commander",
        district,
        False,
    )
    accounts.create_user(engine, city, "wall1", "wall", street, now_ms=T0)
    assert [x.username for x in accounts.list_users(engine)] == ["alice", "wall1"]
    with pytest.raises(accounts.DuplicateUser):
        accounts.create_user(engine, city, "ALICE", "supervisor", city.city_id, PW, now_ms=T0)
    with pytest.raises(accounts.ScopeError):
        accounts.create_user(engine, city, "bob", "street_operator", district, PW, now_ms=T0)
    with pytest.raises(accounts.WeakPassword):
        accounts.create_user(engine, city, "bob", "supervisor", district, "short", now_ms=T0)
    with pytest.raises(accounts.WeakPassword):
        accounts.create_user(engine, city, "bob", "supervisor", district, None, now_ms=T0)
    with pytest.raises(accounts.AccountError):
        accounts.create_user(engine, city, "bob", "wall", district, PW, now_ms=T0)

    moved = accounts.set_role(
        engine, city, "alice", "street_operator", street, now_ms=T0 + 1, actor=u
    )
    assert (moved.role, moved.scope_area_id) == ("street_operator", street)
    with pytest.raises(accounts.ScopeError):
        accounts.set_role(engine, city, "alice", "admin", district, now_ms=T0 + 2)
    with pytest.raises(accounts.UnknownUser):
        accounts.disable_user(engine, "nobody", now_ms=T0 + 2)
    assert accounts.disable_user(engine, "alice", now_ms=T0 + 3).disabled
    found = accounts.get_user(engine, "ALICE")
    assert found == accounts.User(
        u.user_id, "alice", "张三", "street_operator", street, True, found.stamp if found else ""
    )
    assert found is not None and found.stamp != u.stamp  # every change makes a new version
    log = audit.query(engine).sort("seq")
    assert log["action"].to_list() == [
        "user_created",
        "user_created",
        "role_changed",
        "user_disabled",
    ]
    changed = log.row(2, named=True)
    # A User as actor: its name, role and scope are recorded.
    assert (changed["actor"], changed["role"], changed["scope"]) == (
        "alice",
        "district_commander",
        district,
    )
    assert json.loads(changed["detail"]) == {
        "from_role": "district_commander",
        "from_scope": district,
        "role": "street_operator",
        "scope": street,
    }
    assert log["actor"][0] == "cli:t" and log["target"][0] == "alice"
    with engine.connect() as conn:
        row = conn.execute(select(store.users).where(store.users.c.username == "alice")).one()
    assert row.password_hash.startswith("scrypt$") and PW not in row.password_hash
    assert audit.verify(engine).ok


def test_authenticate_lockout_and_unlock(engine: Engine, city: City) -> None:
    accounts.create_user(engine, city, "lee", "city_leader", city.city_id, PW, now_ms=T0)
    ok = accounts.authenticate(engine, AUTH, "Lee", PW, T0, detail={"ip": "10.0.0.1"})
    assert ok.ok and ok.user is not None and ok.user.username == "lee"
    assert accounts.authenticate(engine, AUTH, "lee", "wrong password", T0).status == (
        "bad_credentials"
    )
    assert accounts.authenticate(engine, AUTH, "nobody", PW, T0).status == "bad_credentials"
    # One failure, then a success clears it: four more do not lock.
    assert accounts.authenticate(engine, AUTH, "lee", PW, T0 + MIN).ok
    for i in range(4):
        res = accounts.authenticate(engine, AUTH, "lee", f"wrong {i}", T0 + 2 * MIN + i)
        assert res.status == "bad_credentials"
    assert accounts.authenticate(engine, AUTH, "lee", PW, T0 + 3 * MIN).ok
    # Five failures within the window lock, even the right password, for one window.
    t = T0 + 10 * MIN
    for i in range(5):
        assert accounts.authenticate(engine, AUTH, "lee", "bad", t + i * MIN).status == (
            "bad_credentials"
        )
    last = t + 4 * MIN
    locked = accounts.authenticate(engine, AUTH, "lee", PW, last + MIN)
    assert locked.status == "locked" and locked.locked_until_ms == last + 15 * MIN
    assert accounts.authenticate(engine, AUTH, "lee", PW, last + 15 * MIN - 1).status == "locked"
    assert accounts.authenticate(engine, AUTH, "lee", PW, last + 15 * MIN).ok
    # Unknown usernames lock the same way (no hint whether the user exists).
    for i in range(5):
        accounts.authenticate(engine, AUTH, "ghost", "x" * 12, t + i)
    assert accounts.authenticate(engine, AUTH, "ghost", "x" * 12, t + 10).status == "locked"
    log = audit.query(engine, actor="lee").sort("seq")
    assert log["action"].to_list() == (
        ["login", "login_failed", "login"]
        + ["login_failed"] * 4
        + ["login"]
        + ["login_failed"] * 5
        + ["login_locked"] * 2
        + ["login"]
    )
    assert json.loads(log["detail"][0]) == {"ip": "10.0.0.1"}
    assert json.loads(log["detail"][1])["reason"] == "bad_password"
    assert audit.verify(engine).ok


def test_disabled_and_wall_users_cannot_log_in(engine: Engine, city: City) -> None:
    accounts.create_user(engine, city, "sup", "supervisor", city.city_id, PW, now_ms=T0)
    accounts.create_user(engine, city, "screen", "wall", city.city_id, now_ms=T0)
    accounts.disable_user(engine, "sup", now_ms=T0)
    assert accounts.authenticate(engine, AUTH, "sup", PW, T0).status == "disabled"
    assert accounts.authenticate(engine, AUTH, "sup", "wrong!", T0).status == "bad_credentials"
    assert accounts.authenticate(engine, AUTH, "screen", "", T0).status == "bad_credentials"
    accounts.enable_user(engine, "sup", now_ms=T0)
    assert accounts.authenticate(engine, AUTH, "sup", PW, T0).ok
    accounts.set_password(engine, "sup", "a brand new secret", now_ms=T0)
    assert accounts.authenticate(engine, AUTH, "sup", PW, T0).status == "bad_credentials"
    assert accounts.authenticate(engine, AUTH, "sup", "a brand new secret", T0).ok
    longest = "Lp-" * 85 + "x"  # 256 characters, the most the policy allows
    accounts.set_password(engine, "sup", longest, now_ms=T0)
    assert accounts.authenticate(engine, AUTH, "sup", longest, T0).ok
    assert accounts.authenticate(engine, AUTH, "sup", longest + "!", T0).status == (
        "bad_credentials"
    )


def test_wall_tokens(engine: Engine, city: City) -> None:
    _district, street = district_street(city)
    accounts.create_user(engine, city, "wall", "wall", street, now_ms=T0)
    accounts.create_user(engine, city, "ops", "supervisor", street, PW, now_ms=T0)
    with pytest.raises(accounts.AccountError, match="not a wall user"):
        wall_tokens.issue_wall_token(engine, "ops", 30, T0)
    token = wall_tokens.issue_wall_token(engine, "wall", 30, T0, actor="cli:t")
    other = wall_tokens.issue_wall_token(engine, "wall", 1, T0)
    assert len(token) >= 40 and token != other
    user = wall_tokens.verify_wall_token(engine, token, T0 + 1)
    assert user is not None and (user.username, user.scope_area_id) == ("wall", street)
    assert wall_tokens.verify_wall_token(engine, token + "x", T0) is None
    assert wall_tokens.verify_wall_token(engine, "", T0) is None
    assert wall_tokens.verify_wall_token(engine, other, T0 + 86_400_000 - 1) is not None
    assert wall_tokens.verify_wall_token(engine, other, T0 + 86_400_000) is None  # expired
    # The token is never stored in clear: scan every column of every access table.
    with engine.connect() as conn:
        for table in (store.wall_tokens, store.users, store.audit_log):
            for row in conn.execute(select(table)):
                assert not any(token in str(v) or other in str(v) for v in row), table.name
    assert wall_tokens.wall_token_count(engine, "wall", T0) == 2
    assert wall_tokens.revoke_wall_tokens(engine, "wall", T0 + 2, actor="cli:t") == 2
    assert wall_tokens.verify_wall_token(engine, token, T0 + 3) is None
    fresh = wall_tokens.issue_wall_token(engine, "wall", 30, T0 + 4)
    assert wall_tokens.verify_wall_token(engine, fresh, T0 + 5) is not None
    accounts.disable_user(engine, "wall", now_ms=T0 + 6)
    assert wall_tokens.verify_wall_token(engine, fresh, T0 + 7) is None
    assert actions(engine)[-5:] == [
        "wall_token_issued",
        "wall_token_issued",
        "wall_tokens_revoked",
        "wall_token_issued",
        "user_disabled",
    ]


def test_demo_accounts_are_idempotent(engine: Engine, city: City) -> None:
    first = demo.demo_accounts(engine, city, T0)
    roles = {role for _u, role, _s, _p in first}
    assert roles == set(accounts.ROLES)
    again = demo.demo_accounts(engine, city, T0 + 1)
    assert [r[:3] for r in again] == [r[:3] for r in first]
    assert len(accounts.list_users(engine)) == len(accounts.ROLES)
    for username, role, _scope, secret in again:
        if role == "wall":
            assert wall_tokens.verify_wall_token(engine, secret, T0 + 2) is not None
        else:
            assert accounts.authenticate(engine, AUTH, username, secret, T0 + 2).ok
    assert audit.verify(engine).ok


# ------------------------------------------------------------------ audit chain


def fill(engine: Engine, n: int, start: int = T0, step: int = MIN) -> None:
    for i in range(n):
        audit.record(
            engine,
            actor=f"user{i % 3}",
            role="admin",
            scope="320100",
            action="export",
            target=f"t{i}",
            detail={"i": i, "名": "值"},
            now_ms=start + i * step,
        )


def test_chain_links_and_starts_from_genesis(engine: Engine) -> None:
    fill(engine, 5)
    rows = audit.query(engine).sort("seq")
    assert rows["seq"].to_list() == [1, 2, 3, 4, 5]
    with engine.connect() as conn:
        stored = conn.execute(select(store.audit_log).order_by(store.audit_log.c.seq)).all()
    assert stored[0].prev_hash == audit.GENESIS
    for a, b in itertools.pairwise(stored):
        assert b.prev_hash == a.hash
    res = audit.verify(engine)
    assert res.ok and res.rows == 5 and res.head_hash == stored[-1].hash
    assert (res.first_seq, res.last_seq) == (1, 5)
    # Filters for the admin view.
    assert audit.query(engine, actor="user0")["seq"].to_list() == [4, 1]
    assert audit.query(engine, since_ms=T0 + MIN, until_ms=T0 + 3 * MIN)["seq"].to_list() == [
        3,
        2,
    ]
    assert audit.query(engine, limit=2)["seq"].to_list() == [5, 4]
    assert audit.query(engine, action="nothing").height == 0


def test_empty_log_verifies(engine: Engine) -> None:
    res = audit.verify(engine)
    assert res.ok and res.rows == 0


def _exec(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def test_edit_is_detected(engine: Engine) -> None:
    fill(engine, 10)
    _exec(engine, "UPDATE audit_log SET detail = :d WHERE seq = 4", d='{"i":999}')
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 4 and "edited" in res.reason
    assert res.rows == 3


def test_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    fill(engine, 6)
    with engine.begin() as conn:
        row = dict(conn.execute(text("SELECT * FROM audit_log WHERE seq = 3")).one()._mapping)
        row["target"] = "forged"
        forged = audit.row_hash(row["prev_hash"], row, audit.key_of(engine))  # holds the key
        conn.execute(
            text("UPDATE audit_log SET target = 'forged', hash = :h WHERE seq = 3"), {"h": forged}
        )
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 4 and "prev_hash" in res.reason


def test_deleted_middle_row_is_detected(engine: Engine) -> None:
    fill(engine, 10)
    _exec(engine, "DELETE FROM audit_log WHERE seq = 6")
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 6 and "deleted" in res.reason


def test_deleted_first_rows_without_purge_are_detected(engine: Engine) -> None:
    fill(engine, 10)
    _exec(engine, "DELETE FROM audit_log WHERE seq <= 3")
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 1 and "no purge row" in res.reason


def test_swapped_hashes_are_detected(engine: Engine) -> None:
    fill(engine, 10)
    with engine.begin() as conn:
        h = dict(conn.execute(text("SELECT seq, hash FROM audit_log WHERE seq IN (3, 7)")).all())
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE seq = 3"), {"h": h[7]})
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE seq = 7"), {"h": h[3]})
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 3


def test_reordered_rows_are_detected(engine: Engine) -> None:
    fill(engine, 10)
    cols = ["at_ms", "actor", "role", "scope", "action", "target", "detail", "prev_hash", "hash"]
    with engine.begin() as conn:
        a, b = (
            dict(conn.execute(text(f"SELECT * FROM audit_log WHERE seq = {s}")).one()._mapping)
            for s in (5, 6)
        )
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        conn.execute(text(f"UPDATE audit_log SET {sets} WHERE seq = 5"), {c: b[c] for c in cols})
        conn.execute(text(f"UPDATE audit_log SET {sets} WHERE seq = 6"), {c: a[c] for c in cols})
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 5


def test_purge_keeps_the_chain_verifiable(engine: Engine) -> None:
    day = 86_400_000
    fill(engine, 10, start=T0, step=day)  # seq 1..10 at T0 .. T0 + 9 days
    now = T0 + 12 * day
    # Retention 5 days: the cutoff is T0 + 7 days, so seq 1..7 go.
    assert audit.purge(engine, 5, now, actor="cli:t") == 7
    res = audit.verify(engine)
    assert res.ok, res.describe()
    assert (res.first_seq, res.last_seq, res.rows) == (8, 11, 4)
    purge_row = audit.query(engine, action="purge").row(0, named=True)
    assert (purge_row["seq"], purge_row["actor"], purge_row["at_ms"]) == (11, "cli:t", now)
    detail = json.loads(purge_row["detail"])
    assert (detail["rows"], detail["purged_through_seq"], detail["retention_days"]) == (7, 7, 5)
    # Nothing more to purge: still recorded, still verifiable.
    assert audit.purge(engine, 5, now, actor="cli:t") == 0
    assert audit.verify(engine).ok
    # A later purge removes the first purge row too; its own row anchors the chain.
    fill(engine, 2, start=now + day, step=1)
    assert audit.purge(engine, 1, now + 2 * day, actor="cli:t") == 5  # seq 8..12
    res = audit.verify(engine)
    assert res.ok and res.first_seq == 13, res.describe()
    # After a purge, tampering with kept rows still fails.
    _exec(engine, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 13")
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 13


def test_deleting_after_a_purge_is_detected(engine: Engine) -> None:
    day = 86_400_000
    fill(engine, 10, start=T0, step=day)
    audit.purge(engine, 5, T0 + 12 * day)
    _exec(engine, "DELETE FROM audit_log WHERE seq = 8")  # the first kept row
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 8 and "no purge row" in res.reason


def test_purge_stops_at_a_newer_row(engine: Engine) -> None:
    day = 86_400_000
    for at in (T0, T0 + 10 * day, T0 + day):  # clocks of different processes disagree
        audit.record(engine, actor="x", action="export", now_ms=at)
    assert audit.purge(engine, 5, T0 + 12 * day) == 1  # only the prefix before seq 2
    assert audit.verify(engine).ok


def test_a_failed_change_leaves_no_audit_row_and_no_gap(engine: Engine, city: City) -> None:
    accounts.create_user(engine, city, "ann", "admin", city.city_id, PW, now_ms=T0)
    with pytest.raises(accounts.DuplicateUser):
        accounts.create_user(engine, city, "ann", "admin", city.city_id, PW, now_ms=T0)
    with pytest.raises(RuntimeError), audit.transaction(engine) as conn:
        audit.append(
            conn, actor="x", role="", scope="", action="export", target="", detail={}, now_ms=T0
        )
        raise RuntimeError("rolled back")
    audit.record(engine, actor="x", action="export", now_ms=T0)
    assert audit.query(engine).sort("seq")["seq"].to_list() == [1, 2]
    assert audit.verify(engine).ok


def test_concurrent_appends_from_threads(engine: Engine) -> None:
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(50):
                audit.record(
                    engine,
                    actor=f"w{w}",
                    action="export",
                    target=str(i),
                    detail={"w": w, "i": i},
                    now_ms=T0 + i,
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    res = audit.verify(engine)
    assert res.ok and res.rows == 200, res.describe()
    assert sorted(audit.query(engine, limit=1000)["seq"].to_list()) == list(range(1, 201))


WRITER = """
import sys
from pipelines.access import audit
from tests.conftest import open_engine
url, schema, w = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
engine = open_engine((url, schema))
for i in range(40):
    audit.record(engine, actor=f"p{w}", action="export", target=str(i), now_ms=i)
"""


def test_concurrent_appends_from_processes(db_url: tuple[str, str | None], tmp_path: Path) -> None:
    url, schema = db_url
    engine = open_engine(db_url)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, url, schema or "", str(w)],
                cwd=Path(__file__).resolve().parents[2],
            )
            for w in range(4)
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
        res = audit.verify(engine)
        assert res.ok and res.rows == 160, res.describe()
        assert sorted(audit.query(engine, limit=1000)["seq"].to_list()) == list(range(1, 161))
    finally:
        engine.dispose()


# ------------------------------------------------------------------ CLI


def cli_env(tmp: Path, db: tuple[str, str | None]) -> dict[str, str]:
    url, schema = db
    return child_environ(
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_RUN_VAR_DIR=str(tmp / "var"),
        WANGGE_GEO_GRIDS="300",
        WANGGE_GEO_CACHE_DIR=str(tmp / "geo"),
        WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
    )


def wangge(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_cli_users_and_audit(
    db_url: tuple[str, str | None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = cli_env(tmp_path, db_url)
    res = wangge(
        "users",
        "add",
        "Zhang",
        "--role",
        "district_commander",
        "--scope",
        "320102",
        "--name",
        "张主任",
        "--password-stdin",
        env=env,
        stdin=PW + "\n",
    )
    assert res.returncode == 0, res.stderr
    assert "created zhang" in res.stdout
    res = wangge("users", "add", "screen", "--role", "wall", "--scope", "320102", env=env)
    assert res.returncode == 0, res.stderr

    def fails(*args: str, message: str, stdin: str = PW + "\n") -> None:
        """A refused command: exit 2 and the reason, no traceback. Run in this process (the
        `main` that `python -m pipelines.cli` runs; an exception would fail the test) to
        spare a Python start per case."""
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            m.setattr(sys, "stdin", io.StringIO(stdin))
            capsys.readouterr()
            try:
                code = cli.main(list(args))
            except SystemExit as exc:
                code = exc.code
            out, err = capsys.readouterr()
        assert code == 2, (out, err)
        assert message in err, err

    add = ("users", "add", "li", "--password-stdin")
    fails(*add, "--role", "mayor", "--scope", "320100", message="unknown role 'mayor'")
    fails(*add, "--role", "admin", "--scope", "320102", message="needs a scope at level city")
    fails(*add, "--role", "supervisor", "--scope", "999", message="unknown area '999'")
    fails(*add, "--role", "admin", "--scope", "320100", message="too short", stdin="short\n")
    fails(
        "users",
        "add",
        "zhang",
        "--role",
        "admin",
        "--scope",
        "320100",
        "--password-stdin",
        message="already exists",
    )
    fails("users", "disable", "nobody", message="no such user")
    fails("users", "issue-wall-token", "zhang", message="not a wall user")
    fails(
        "users",
        "set-role",
        "zhang",
        "--role",
        "street_operator",
        "--scope",
        "320102",
        message="needs a scope at level street",
    )

    res = wangge("users", "issue-wall-token", "screen", "--days", "7", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    token = lines[1]
    assert f"/wall?token={token}" in lines[2]
    engine = open_engine(db_url)
    try:
        user = wall_tokens.verify_wall_token(engine, token, int(time.time() * 1000))
        assert user is not None and user.username == "screen"
    finally:
        engine.dispose()

    res = wangge("users", "set-role", "zhang", "--role", "supervisor", "--scope", "320100", env=env)
    assert res.returncode == 0, res.stderr
    assert wangge("users", "disable", "screen", env=env).returncode == 0
    res = wangge("users", "list", env=env)
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:-1]}
    assert rows["zhang"][1:4] == ["supervisor", "320100", "no"]
    assert rows["screen"][1:4] == ["wall", "320102", "yes"]
    assert "张主任" in res.stdout

    res = wangge("users", "enable", "screen", env=env)
    assert res.returncode == 0 and "enabled screen (wall, scope 320102)" in res.stdout, res.stderr
    assert "wangge users issue-wall-token screen" in res.stdout  # its tokens stay revoked
    fails("users", "enable", "nobody", message="no such user")
    res = wangge("users", "list", env=env)
    assert [line.split()[1:4] for line in res.stdout.splitlines() if line.startswith("screen")] == [
        ["wall", "320102", "no"]
    ]

    res = wangge("audit", "verify", env=env)
    assert res.returncode == 0 and "audit log OK: 6 rows" in res.stdout, res.stdout
    engine = open_engine(db_url)
    try:
        assert wall_tokens.verify_wall_token(engine, token, int(time.time() * 1000)) is None
        log = audit.query(engine).sort("seq")
        assert log["action"].to_list() == [
            "user_created",
            "user_created",
            "wall_token_issued",
            "role_changed",
            "user_disabled",
            "user_enabled",
        ]
        assert all(a.startswith("cli:") for a in log["actor"].to_list())
        _exec(engine, "UPDATE audit_log SET target = 'x' WHERE seq = 2")
    finally:
        engine.dispose()
    res = wangge("audit", "verify", env=env)
    assert res.returncode == 1 and "TAMPERED at seq 2" in res.stdout, res.stdout
    assert "'target': 'x'" in res.stdout
    res = wangge("audit", "purge", "--days", "30", env=env)
    assert res.returncode == 0 and "purged 0 audit rows" in res.stdout, res.stderr


# ------------------------------------------------------------------ keyed chain


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _content(row: dict[str, Any]) -> str:
    fields = ("seq", "at_ms", "actor", "role", "scope", "action", "target", "detail")
    return _canonical({k: row[k] for k in fields})


def _forge(prev_hash: str, row: dict[str, Any], key: bytes | None) -> str:
    """The hash an attacker computes for a row: plain SHA-256 of the documented text (or
    HMAC with a key they guessed) — written from the chain's definition, not the code."""
    body = (prev_hash + _content(row)).encode("utf-8")
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _insert_raw(engine: Engine, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(store.audit_log.insert(), [row])


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        t = store.audit_log
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.seq))]


@pytest.mark.parametrize("forger_key", [None, b"a-guessed-key"], ids=["unkeyed", "wrong-key"])
def test_deleting_rows_and_forging_a_purge_row_is_detected(
    engine: Engine, forger_key: bytes | None
) -> None:
    """The reported attack: delete rows 1–20, append one forged ``purge`` row whose
    detail anchors the new start and whose hash is recomputed — without the key."""
    fill(engine, 30)
    rows = _rows(engine)
    assert audit.verify(engine).ok
    _exec(engine, "DELETE FROM audit_log WHERE seq <= 20")
    last = rows[-1]
    forged = {
        "seq": last["seq"] + 1,
        "at_ms": last["at_ms"] + MIN,
        "actor": "system",
        "role": "",
        "scope": "",
        "action": "purge",
        "target": "audit_log",
        "detail": _canonical(
            {
                "rows": 20,
                "purged_through_seq": 20,
                "last_purged_hash": rows[19]["hash"],
                "cutoff_ms": last["at_ms"],
                "retention_days": 1,
            }
        ),
        "prev_hash": last["hash"],
    }
    forged["hash"] = _forge(forged["prev_hash"], forged, forger_key)
    _insert_raw(engine, forged)
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 31, res.describe()
    assert "content does not match its hash" in res.reason


def test_the_key_holder_can_forge_which_is_what_the_readme_says(engine: Engine) -> None:
    """The limit, stated: with the key, the same forgery verifies (so guard the key, and
    keep anchors elsewhere)."""
    fill(engine, 30)
    head = audit.verify(engine).anchor
    rows = _rows(engine)
    _exec(engine, "DELETE FROM audit_log WHERE seq <= 20")
    forged = {
        **{k: rows[-1][k] for k in ("at_ms",)},
        "seq": 31,
        "actor": "system",
        "role": "",
        "scope": "",
        "action": "purge",
        "target": "audit_log",
        "detail": _canonical({"purged_through_seq": 20, "last_purged_hash": rows[19]["hash"]}),
        "prev_hash": rows[-1]["hash"],
    }
    forged["hash"] = _forge(forged["prev_hash"], forged, audit.key_of(engine))
    _insert_raw(engine, forged)
    assert audit.verify(engine).ok
    assert audit.verify(engine, anchor=head).ok  # and the old head is still there


def test_deleting_the_tail_needs_an_anchor_kept_elsewhere(engine: Engine) -> None:
    fill(engine, 30)
    head = audit.verify(engine).anchor
    _exec(engine, "DELETE FROM audit_log WHERE seq >= 25")
    assert audit.verify(engine).ok  # a shorter chain verifies on its own …
    res = audit.verify(engine, anchor=head)
    assert not res.ok and res.bad_seq == 30 and "gone" in res.reason  # … not against it
    fill(engine, 6, start=T0 + 100 * MIN)  # the tail re-grown with other rows
    res = audit.verify(engine, anchor=head)
    assert not res.ok and res.bad_seq == 30 and "rewritten" in res.reason


def test_a_different_key_fails_verification(engine: Engine) -> None:
    fill(engine, 3)
    other = audit.keyed(engine, b"another-deployment-key")
    res = audit.verify(other)
    assert not res.ok and res.bad_seq == 1 and "different audit key" in res.reason


def test_an_engine_without_a_key_cannot_write_or_verify(db_url: tuple[str, str | None]) -> None:
    url, schema = db_url
    bare = store.make_engine(url, schema=schema)
    store.create_schema(bare)
    try:
        with pytest.raises(audit.AuditKeyMissing):
            audit.record(bare, actor="x", action="export", now_ms=T0)
        with pytest.raises(audit.AuditKeyMissing):
            audit.verify(bare)
    finally:
        bare.dispose()


def test_the_key_comes_from_settings_or_var_never_the_database(tmp_path: Path) -> None:
    from pipelines.settings import load_settings

    base = {"WANGGE_RUN_VAR_DIR": str(tmp_path / "var")}
    sqlite = load_settings(environ={**base, "DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    key = audit.key_for(sqlite)
    assert len(key) >= 32 and (tmp_path / "var" / "audit_key").exists()
    assert oct((tmp_path / "var" / "audit_key").stat().st_mode & 0o777) == "0o600"
    assert audit.key_for(sqlite) == key  # generated once, then kept
    given = load_settings(environ={**base, "WANGGE_AUTH_AUDIT_KEY": "k" * 40})
    assert audit.key_for(given) == b"k" * 40
    pg = load_settings(environ={**base, "DATABASE_URL": "postgresql://u@db.example/wangge"})
    with pytest.raises(audit.AuditKeyMissing, match="WANGGE_AUTH_AUDIT_KEY"):
        audit.key_for(pg)


def test_the_dashboard_refuses_to_start_on_postgresql_without_a_key(tmp_path: Path) -> None:
    import dataclasses

    import redis

    from dashboard.app import create_app
    from pipelines.settings import load_settings

    s = load_settings(environ={"WANGGE_RUN_VAR_DIR": str(tmp_path)})
    s = dataclasses.replace(
        s, database=dataclasses.replace(s.database, url="postgresql://u@127.0.0.1:1/x")
    )
    with pytest.raises(audit.AuditKeyMissing):
        create_app(s, city=demo_city(2026, n_grids=150), r=redis.Redis(port=1))


def _legacy_chain(engine: Engine, n: int) -> list[dict[str, Any]]:
    """Rows as a version before the key wrote them: plain SHA-256 chain."""
    prev, out = audit.GENESIS, []
    for i in range(1, n + 1):
        row = {
            "seq": i,
            "at_ms": T0 + i,
            "actor": "old",
            "role": "",
            "scope": "",
            "action": "login",
            "target": f"u{i}",
            "detail": "{}",
            "prev_hash": prev,
        }
        row["hash"] = _forge(prev, row, None)
        _insert_raw(engine, row)
        out.append(row)
        prev = row["hash"]
    return out


def test_a_chain_from_before_the_key_is_sealed_and_stays_verifiable(engine: Engine) -> None:
    old = _legacy_chain(engine, 5)
    res = audit.verify(engine)
    assert not res.ok and "no keyed row" in res.reason  # unsealed: could be anyone's
    assert audit.seal(engine, T0 + 10)
    assert not audit.seal(engine, T0 + 11)  # once
    fill(engine, 2, start=T0 + 20)
    res = audit.verify(engine)
    assert res.ok and res.rows == 8 and res.unkeyed == 5, res.describe()
    marker = audit.query(engine, action="audit_keyed").row(0, named=True)
    assert marker["seq"] == 6
    assert json.loads(marker["detail"]) == {
        "unkeyed_through_seq": 5,
        "unkeyed_head": old[-1]["hash"],
    }


def test_the_sealed_old_segment_cannot_be_rewritten(engine: Engine) -> None:
    _legacy_chain(engine, 5)
    fill(engine, 2, start=T0 + 20)  # the first keyed append seals it
    assert audit.verify(engine).ok
    # rewrite the old rows consistently (they are unkeyed: anyone can recompute them)
    rows = _rows(engine)[:5]
    prev = audit.GENESIS
    with engine.begin() as conn:
        for row in rows:
            row = {**row, "target": "rewritten", "prev_hash": prev}
            row["hash"] = _forge(prev, row, None)
            conn.execute(
                text("UPDATE audit_log SET target = :t, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"t": "rewritten", "p": row["prev_hash"], "h": row["hash"], "s": row["seq"]},
            )
            prev = row["hash"]
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 6 and "prev_hash" in res.reason


def test_an_unkeyed_row_after_the_keyed_ones_fails(engine: Engine) -> None:
    fill(engine, 3)
    last = _rows(engine)[-1]
    row = {**last, "seq": 4, "target": "forged", "prev_hash": last["hash"]}
    row["hash"] = _forge(row["prev_hash"], row, None)
    _insert_raw(engine, row)
    audit.record(engine, actor="x", action="export", now_ms=T0 + 99)  # no seal after it
    res = audit.verify(engine)
    assert not res.ok and res.bad_seq == 4
    assert audit.query(engine, action="audit_keyed").height == 0


def test_cli_anchor_and_verify_against_it(db_url: tuple[str, str | None], tmp_path: Path) -> None:
    env = cli_env(tmp_path, db_url)
    engine = open_engine(db_url)
    try:
        fill(engine, 6)
        res = wangge("audit", "anchor", env=env)
        assert res.returncode == 0, res.stderr
        anchor = res.stdout.strip()
        assert re.fullmatch(r"6:[0-9a-f]{64}", anchor), anchor
        assert wangge("audit", "verify", "--anchor", anchor, env=env).returncode == 0
        _exec(engine, "DELETE FROM audit_log WHERE seq >= 5")  # the tail goes
        assert wangge("audit", "verify", env=env).returncode == 0  # undetectable alone
        res = wangge("audit", "verify", "--anchor", anchor, env=env)
        assert res.returncode == 1 and "TAMPERED at seq 6" in res.stdout, res.stdout
        wrong = {**env, "WANGGE_AUTH_AUDIT_KEY": "not-the-key"}
        res = wangge("audit", "verify", env=wrong)
        assert res.returncode == 1 and "different audit key" in res.stdout
    finally:
        engine.dispose()
