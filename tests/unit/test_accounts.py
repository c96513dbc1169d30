"""Accounts and audit pure logic: KDF, password policy, roles/scope, lock-out, hashing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pipelines.access import accounts, audit
from pipelines.access.accounts import ROLES, scope_allows, validate_role_scope
from pipelines.city.geography import City, demo_city


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=150)


# ------------------------------------------------------------------ KDF


@pytest.fixture
def production_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite hashes at a lower cost (tests/conftest.py); these tests check the real one."""
    from tests.conftest import PRODUCTION_SCRYPT_N

    monkeypatch.setattr(accounts, "SCRYPT_N", PRODUCTION_SCRYPT_N)


@pytest.mark.usefixtures("production_cost")
def test_password_hash_round_trip_and_format() -> None:
    encoded = accounts.hash_password("correct horse battery")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert accounts.verify_password("correct horse battery", encoded)
    assert not accounts.verify_password("correct horse batterY", encoded)
    assert not accounts.verify_password("", encoded)


@pytest.mark.usefixtures("production_cost")
def test_salt_is_random_and_the_hash_matches_stdlib_scrypt() -> None:
    a, b = accounts.hash_password("same password!"), accounts.hash_password("same password!")
    assert a != b
    salt = bytes(range(16))
    encoded = accounts.hash_password("same password!", salt=salt)
    expected = hashlib.scrypt(b"same password!", salt=salt, n=2**14, r=8, p=1, dklen=32)
    assert encoded.endswith("$" + base64.b64encode(expected).decode())


@pytest.mark.parametrize(
    "encoded",
    [
        None,
        "",
        "garbage",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$x$8$1$AAAA$AAAA",
        f"scrypt${2**30}$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # absurd cost is refused
        "scrypt$16384$8$1$not base64!$AAAA",
    ],
)
def test_malformed_hashes_never_verify(encoded: str | None) -> None:
    assert not accounts.verify_password("whatever password", encoded)


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    "password, ok",
    [
        ("short", False),
        ("123456789", False),  # 9 characters
        ("1234567890", True),  # 10
        ("aaaaaaaaaaaa", False),  # too simple
        ("x" * 257, False),
        ("长城长城长城长城长城口令", True),
    ],
)
def test_password_policy(password: str, ok: bool) -> None:
    if ok:
        accounts.check_password_policy(password)
    else:
        with pytest.raises(accounts.WeakPassword):
            accounts.check_password_policy(password)


def test_password_must_not_be_the_username() -> None:
    with pytest.raises(accounts.WeakPassword, match="username"):
        accounts.check_password_policy("LongUserName", "longusername")


@pytest.mark.parametrize("name", ["alice", "Alice ", "zhang.san", "ops-1@wg", "a1"])
def test_usernames_are_normalized(name: str) -> None:
    assert accounts.normalize_username(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["", "a", "-alice", "has space", "x" * 65, "名字"])
def test_bad_usernames(name: str) -> None:
    with pytest.raises(accounts.InvalidUsername):
        accounts.normalize_username(name)


# ------------------------------------------------------------------ roles and scope


def test_roles_table() -> None:
    assert set(ROLES) == {
        "city_leader",
        "district_commander",
        "street_operator",
        "supervisor",
        "admin",
        "wall",
    }
    assert ROLES["district_commander"].can_act and ROLES["street_operator"].can_act
    assert not ROLES["city_leader"].can_act and not ROLES["wall"].can_act
    levels, can_act, description = ROLES["admin"]  # a plain tuple too
    assert levels == ("city",) and not can_act and description


def test_role_levels(city: City) -> None:
    district = city.ids("district")[0]
    street = city.children(district)[0]
    grid = city.children(street)[0]
    ok = [
        ("city_leader", city.city_id),
        ("admin", city.city_id),
        ("district_commander", district),
        ("street_operator", street),
        ("supervisor", city.city_id),
        ("supervisor", district),
        ("supervisor", street),
        ("wall", city.city_id),
        ("wall", street),
        ("wall", grid),
    ]
    for role, scope in ok:
        validate_role_scope(city, role, scope)
    bad = [
        ("city_leader", district),
        ("admin", street),
        ("district_commander", city.city_id),
        ("district_commander", street),
        ("street_operator", district),
        ("street_operator", grid),
    ]
    for role, scope in bad:
        with pytest.raises(accounts.ScopeError, match="needs a scope at level"):
            validate_role_scope(city, role, scope)
    with pytest.raises(accounts.ScopeError, match="unknown area"):
        validate_role_scope(city, "supervisor", "999999")
    with pytest.raises(accounts.UnknownRole, match="unknown role"):
        validate_role_scope(city, "mayor", city.city_id)


def test_scope_allows(city: City) -> None:
    d1, d2 = city.ids("district")[:2]
    s1 = city.children(d1)[0]
    s_other = city.children(d2)[0]
    g1 = city.children(s1)[0]
    assert scope_allows(city.city_id, g1, city)
    assert scope_allows(city.city_id, city.city_id, city)
    assert scope_allows(d1, d1, city) and scope_allows(d1, s1, city) and scope_allows(d1, g1, city)
    assert not scope_allows(d1, city.city_id, city)  # a district cannot see the whole city
    assert not scope_allows(d1, s_other, city)
    assert scope_allows(s1, g1, city) and not scope_allows(s1, d1, city)
    assert not scope_allows(g1, s1, city)
    assert not scope_allows(city.city_id, "nowhere", city)


# ------------------------------------------------------------------ lock-out


W = 15 * 60_000


def test_locked_until_needs_the_limit_within_one_window() -> None:
    assert accounts.locked_until([], 0, 5, W) is None
    four = [0, 1000, 2000, 3000]
    assert accounts.locked_until(four, 4000, 5, W) is None
    five = [*four, 4000]
    assert accounts.locked_until(five, 4000, 5, W) == 4000 + W
    assert accounts.locked_until(five, 4000 + W - 1, 5, W) == 4000 + W
    assert accounts.locked_until(five, 4000 + W, 5, W) is None  # the lock lasts one window
    spread = [0, W // 2, W - 1, W + 10, W + 20]  # five failures, never five within a window
    assert accounts.locked_until(spread, W + 20, 5, W) is None
    assert accounts.locked_until(five, 4000, 0, W) is None  # limit 0 = lock-out off


# ------------------------------------------------------------------ audit hashing


def test_canonical_json_is_order_and_space_independent() -> None:
    a = audit.canonical_json({"b": 1, "a": [1, 2], "名": "值"})
    b = audit.canonical_json({"名": "值", "a": [1, 2], "b": 1})
    assert a == b == '{"a":[1,2],"b":1,"名":"值"}'


def test_row_hash_covers_every_content_field() -> None:
    content = {
        "seq": 1,
        "at_ms": 1000,
        "actor": "alice",
        "role": "admin",
        "scope": "320100",
        "action": "login",
        "target": "alice",
        "detail": "{}",
        "hash": "ignored",  # non-content fields do not matter
    }
    h = audit.row_hash(audit.GENESIS, content)
    expected_body = audit.canonical_json({k: content[k] for k in audit.CONTENT_FIELDS})
    assert h == hashlib.sha256((audit.GENESIS + expected_body).encode()).hexdigest()
    assert audit.row_hash(audit.GENESIS, {**content, "hash": "other"}) == h
    assert audit.row_hash("1" * 64, content) != h
    for field in audit.CONTENT_FIELDS:
        changed = {**content, field: content[field] + 1 if field in ("seq", "at_ms") else "x"}
        assert audit.row_hash(audit.GENESIS, changed) != h, field
