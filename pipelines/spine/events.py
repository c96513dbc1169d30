"""The three feeds: vocabulary, wire schemas, decoding and vectorised validation.

Wire format: every stream entry has one field ``data`` holding a JSON object. Times are
integer epoch milliseconds (UTC) in field ``ts``; the gateway normalises other forms.

``decode_batch`` turns raw entries into a Polars frame of valid rows plus a frame of
dead letters (original payload + reason code). Each payload is parsed once (orjson);
typing is decided per column by the set of value types, and validation is columnar:
one pass per rule over the whole batch, never a Python branch per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from pipelines.access import text

# ---------------------------------------------------------------- vocabulary

CATEGORIES = (
    "dispute",  # 矛盾纠纷
    "safety_hazard",  # 安全隐患
    "public_order",  # 治安
    "sanitation",  # 环境卫生
    "city_management",  # 城市管理
    "livelihood",  # 民生服务
    "fire",  # 消防
    "other",  # 其他
)
STEPS = (
    "reported",  # 上报
    "accepted",  # 受理
    "dispatched",  # 派遣
    "handling",  # 处置
    "resolved",  # 办结
    "verified",  # 核查
    "closed",  # 结案
    "returned",  # 退回
    "escalated",  # 上报升级
)
# Allowed step → next steps (the lifecycle). "reported" only ever starts an incident.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "reported": ("accepted", "handling", "escalated", "returned"),
    "accepted": ("dispatched", "handling", "escalated", "returned"),
    "dispatched": ("handling", "escalated", "returned"),
    "handling": ("resolved", "escalated", "returned"),
    "escalated": ("accepted", "dispatched", "handling"),
    "resolved": ("verified", "returned", "closed"),
    "verified": ("closed", "returned"),
    "returned": ("accepted", "dispatched", "handling"),
    "closed": (),
}


def reachable_pairs() -> set[tuple[str, str]]:
    """(a, b) such that some sequence of lifecycle steps leads from a to b.

    Events can arrive out of order (redelivery after a crash), so a gap in an
    incident's history is tolerated; an event is impossible only when *no* path leads
    to it from an earlier one: any step after "closed", or "reported" after anything
    (``aggregate.decide_reports`` applies exactly these two; a unit test keeps them equal).
    """
    out: set[tuple[str, str]] = set()
    for start in STEPS:
        seen: set[str] = set()
        todo = list(TRANSITIONS[start])
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            todo.extend(TRANSITIONS[s])
        out.update((start, s) for s in seen)
    return out


SOURCES = ("worker", "hotline", "camera", "resident")
LEVELS = ("grid", "community", "street", "district")
SEVERITIES = (1, 2, 3, 4)  # 1 minor … 4 critical
VIDEO_LABELS = (
    "crowd_gathering",
    "smoke_fire",
    "illegal_parking",
    "garbage_overflow",
    "street_vending",
    "intrusion",
    "fall",
)
FEEDS = ("reports", "locations", "video")

# Dead-letter reason codes.
REASONS = (
    "malformed",
    "missing_field",
    "bad_type",
    "out_of_range",
    "outside_city",
    "future_timestamp",
    "unknown_category",
    "unknown_camera",
    "bad_transition",
    "duplicate",
    "too_large",
    "max_deliveries",
    "moved_alert",  # a later revision of an alert names another camera
)

# ---------------------------------------------------------------- schemas


@dataclass(frozen=True)
class Field:
    name: str
    dtype: Any
    required: bool = True
    lo: float | None = None
    hi: float | None = None
    vocab: tuple[Any, ...] | None = None
    vocab_reason: str = "unknown_category"
    max_len: int | None = None


_TS = Field("ts", pl.Int64)
_LON = Field("lon", pl.Float64, lo=-180.0, hi=180.0)
_LAT = Field("lat", pl.Float64, lo=-90.0, hi=90.0)
_ID = 64

SCHEMAS: dict[str, tuple[Field, ...]] = {
    "reports": (
        Field("event_id", pl.String, max_len=_ID),
        Field("incident_id", pl.String, max_len=_ID),
        _TS,
        Field("step", pl.String, vocab=STEPS, vocab_reason="bad_type"),
        Field("category", pl.String, vocab=CATEGORIES),
        Field("severity", pl.Int64, vocab=SEVERITIES, vocab_reason="out_of_range"),
        Field("source", pl.String, vocab=SOURCES, vocab_reason="bad_type"),
        Field("reporter_id", pl.String, required=False, max_len=_ID),
        Field("handler_id", pl.String, required=False, max_len=_ID),
        _LON,
        _LAT,
        Field("description", pl.String, required=False, max_len=2000),
        Field("level", pl.String, required=False, vocab=LEVELS, vocab_reason="bad_type"),
        # Command and dispatch (pipelines/dispatch/actions.py): who acted and what the
        # action recorded. All optional; field reports carry none of them.
        Field("actor_id", pl.String, required=False, max_len=_ID),
        Field("reason", pl.String, required=False, max_len=500),
        Field("unit_id", pl.String, required=False, max_len=_ID),
        Field("due_ms", pl.Int64, required=False),  # a deadline the dispatch set (epoch ms)
        Field("note", pl.String, required=False, max_len=2000),
        Field("photo_url", pl.String, required=False, max_len=512),
        Field("onsite_by", pl.String, required=False, max_len=_ID),  # who checked on site
        Field("duplicate_of", pl.String, required=False, max_len=_ID),  # a merge (on closed)
    ),
    "locations": (
        Field("worker_id", pl.String, max_len=_ID),
        _TS,
        _LON,
        _LAT,
        Field("accuracy", pl.Float64, required=False, lo=0.0, hi=10000.0),
        Field("speed", pl.Float64, required=False, lo=0.0, hi=100.0),
        Field("battery", pl.Float64, required=False, lo=0.0, hi=100.0),
        Field("mock", pl.Boolean, required=False),  # the phone reports a simulated (mock) fix
    ),
    "video": (
        Field("alert_id", pl.String, max_len=_ID),
        Field("camera_id", pl.String, max_len=_ID),
        Field("label", pl.String, vocab=VIDEO_LABELS),
        Field("score", pl.Float64, lo=0.0, hi=1.0),
        _TS,
        Field("lon", pl.Float64, required=False, lo=-180.0, hi=180.0),
        Field("lat", pl.Float64, required=False, lo=-90.0, hi=90.0),
        # An alert that changes while it lasts (a tracked object, a review item) is sent
        # again under its alert_id with a higher revision: one alert, updated in place.
        Field("revision", pl.Int64, required=False, lo=0.0, hi=float(2**62)),
        Field("end_ts", pl.Int64, required=False),  # when the alert ended (epoch ms)
        Field("sub_label", pl.String, required=False, max_len=128),
        Field("zones", pl.String, required=False, max_len=256),
        Field("severity", pl.String, required=False, max_len=16),
    ),
}


def schema_of(feed: str) -> dict[str, Any]:
    return {f.name: f.dtype for f in SCHEMAS[feed]}


DEADLETTER_SCHEMA = {
    "entry_id": pl.String,
    "payload": pl.Binary,
    "reason": pl.String,
    "detail": pl.String,
}

# ---------------------------------------------------------------- decoding


def encode(event: dict[str, Any]) -> bytes:
    """Serialise one event for the wire (the simulator and gateway use this)."""
    return orjson.dumps(event)


def _first_failure(checks: list[tuple[pl.Expr, str, str]]) -> tuple[pl.Expr, pl.Expr]:
    """Combine ordered (condition, reason, detail) checks: the first that holds wins."""
    reason: Any = pl.lit(None, dtype=pl.String)
    detail: Any = pl.lit(None, dtype=pl.String)
    for cond, why, what in reversed(checks):
        reason = pl.when(cond).then(pl.lit(why)).otherwise(reason)
        detail = pl.when(cond).then(pl.lit(what)).otherwise(detail)
    return reason, detail


def decode_batch(
    feed: str,
    entries: list[tuple[str, bytes]],
    *,
    now_ms: int,
    future_skew_ms: int,
    max_age_ms: int,
    max_payload_bytes: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Decode ``(entry_id, payload)`` pairs into (valid rows, dead letters).

    Valid rows carry the schema's columns plus ``entry_id``. Dead letters carry
    ``entry_id``, ``payload``, ``reason`` and ``detail``. Geographic checks (outside the
    city) and lifecycle checks happen later, where the index and the state are.

    Types are strict (the wire format is exact; a gateway converts other forms): a
    string field takes a JSON string, an integer field (``ts``, ``severity``) a JSON
    integer (``1.0``, ``1e3``, ``"1"`` and ``true`` are ``bad_type``), a number field a
    JSON number (never a string or a boolean); a number beyond what its field can hold
    is ``out_of_range``. A payload that is not one JSON object (orjson: RFC 8259, UTF-8,
    finite numbers) is ``malformed``; fields outside the schema are ignored.
    """
    fields = SCHEMAS[feed]
    ids = [e for e, _ in entries]
    payloads = [p for _, p in entries]
    df = _frame(fields, ids, payloads, max_payload_bytes)
    return _validate(
        feed,
        fields,
        df,
        ids,
        payloads,
        now_ms=now_ms,
        future_skew_ms=future_skew_ms,
        max_age_ms=max_age_ms,
        max_payload_bytes=max_payload_bytes,
    )


_INT64 = 2**63
# Python types a field's JSON value may have (bool is its own type, never a number).
_ALLOWED: dict[Any, frozenset[type]] = {
    pl.String: frozenset({str, type(None)}),
    pl.Int64: frozenset({int, type(None)}),
    pl.Float64: frozenset({int, float, type(None)}),
    pl.Boolean: frozenset({bool, type(None)}),
}


def _parse(payload: bytes, max_bytes: int) -> tuple[dict[str, Any] | None, str | None]:
    if len(payload) > max_bytes:
        return None, "too_large"
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, "malformed"
    return (obj, None) if type(obj) is dict else (None, "malformed")


def _strict(dtype: Any, v: Any) -> tuple[Any, str | None]:
    """One JSON value for a field of ``dtype``: (value or None, problem or None)."""
    t = type(v)
    if v is None:
        return None, None
    if dtype == pl.String:
        return (v, None) if t is str else (None, "bad_type")
    if dtype == pl.Boolean:  # only JSON's own true / false
        return (v, None) if t is bool else (None, "bad_type")
    if t is not int and t is not float:
        return None, "bad_type"  # strings, booleans, arrays, objects
    if dtype == pl.Int64:
        if not -_INT64 <= v < _INT64:
            return None, "out_of_range"
        return (v, None) if t is int else (None, "bad_type")  # 1.5, 1.0, 1e3
    try:
        return float(v), None
    except OverflowError:  # an integer beyond any double
        return None, "out_of_range"


def _column(f: Field, raw: list[Any]) -> tuple[pl.Series, pl.Series | None]:
    """A field's values as a typed column, plus a column of per-row type problems (None
    when there are none: the common case is decided by the set of value types alone)."""
    if set(map(type, raw)) <= _ALLOWED[f.dtype]:
        try:
            return pl.Series(f.name, raw, dtype=f.dtype, strict=True), None
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            pass  # an integer beyond the dtype: decided per value below
    checked = [_strict(f.dtype, v) for v in raw]
    values = pl.Series(f.name, [v for v, _ in checked], dtype=f.dtype, strict=True)
    return values, pl.Series(f"_bad_{f.name}", [p for _, p in checked], dtype=pl.String)


def _frame(
    fields: tuple[Field, ...], ids: list[str], payloads: list[bytes], max_payload_bytes: int
) -> pl.DataFrame:
    """Typed columns of every field, ``_pre`` (too_large / malformed) and, only for fields
    where some value had the wrong type or size, ``_bad_<field>`` (the problem per row)."""
    objs: list[Any] = []
    pre: list[str | None] | None = None
    if payloads and max(map(len, payloads)) <= max_payload_bytes:
        try:  # the common case: every payload parses, checked for objects below
            objs = list(map(orjson.loads, payloads))
        except orjson.JSONDecodeError:
            objs = []
    if objs and all(type(o) is dict for o in objs):
        pass
    else:
        parsed = [_parse(p, max_payload_bytes) for p in payloads]
        objs = [o if o is not None else {} for o, _ in parsed]
        pre = [why for _, why in parsed]
    cols: list[pl.Series] = [
        pl.Series("entry_id", ids, dtype=pl.String),
        pl.Series("_pre", pre if pre is not None else [None] * len(ids), dtype=pl.String),
    ]
    for f in fields:
        values, problems = _column(f, [o.get(f.name) for o in objs])
        cols.append(values)
        if problems is not None:
            cols.append(problems)
    return pl.DataFrame(cols)


def _validate(
    feed: str,
    fields: tuple[Field, ...],
    df: pl.DataFrame,
    ids: list[str],
    payloads: list[bytes],
    *,
    now_ms: int,
    future_skew_ms: int,
    max_age_ms: int,
    max_payload_bytes: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    checks: list[tuple[pl.Expr, str, str]] = [
        (pl.col("_pre") == "too_large", "too_large", f"payload over {max_payload_bytes} bytes"),
        (pl.col("_pre") == "malformed", "malformed", "not a JSON object"),
    ]
    problem = {f.name: f"_bad_{f.name}" in df.columns for f in fields}
    for f in fields:
        if f.required:
            has = pl.col(f.name).is_not_null()  # JSON null counts as absent
            if problem[f.name]:
                has = has | pl.col(f"_bad_{f.name}").is_not_null()
            checks.append((~has, "missing_field", f.name))
    for why in ("bad_type", "out_of_range"):
        for f in fields:
            if problem[f.name]:
                checks.append((pl.col(f"_bad_{f.name}") == why, why, f.name))
    for f in fields:
        c = pl.col(f.name)
        if f.max_len is not None:
            checks.append((c.str.len_chars() > f.max_len, "out_of_range", f"{f.name} too long"))
            if f.max_len == _ID:
                checks.append((c.str.len_chars() == 0, "bad_type", f"{f.name} empty"))
        if f.lo is not None:
            checks.append(((c < f.lo) | (c > f.hi) | c.is_nan(), "out_of_range", f.name))
        if f.vocab is not None:
            checks.append((c.is_not_null() & ~c.is_in(list(f.vocab)), f.vocab_reason, f.name))
    checks.extend(text.id_checks(f.name for f in fields if f.max_len == _ID))
    if feed == "video":
        checks.append(
            (pl.col("lon").is_null() != pl.col("lat").is_null(), "missing_field", "lon/lat")
        )
    checks.append((pl.col("ts") > now_ms + future_skew_ms, "future_timestamp", "ts"))
    checks.append((pl.col("ts") < now_ms - max_age_ms, "out_of_range", "ts too old"))

    names = [f.name for f in fields]
    any_bad = pl.any_horizontal([cond for cond, _, _ in checks]).fill_null(False)
    bad_mask = df.select(any_bad.alias("bad"))["bad"]
    if not bad_mask.any():  # the common case: one pass, no reasons to compute
        return df.select(["entry_id", *names]), pl.DataFrame(schema=DEADLETTER_SCHEMA)
    reason, detail = _first_failure(checks)
    df = df.with_columns(reason.alias("_reason"), detail.alias("_detail"))
    good = df.filter(~bad_mask).select(["entry_id", *names])
    bad_idx = bad_mask.arg_true().to_list()
    dead = pl.DataFrame(
        {
            "entry_id": [ids[i] for i in bad_idx],
            "payload": [payloads[i] for i in bad_idx],
            "reason": df["_reason"].gather(bad_idx) if bad_idx else [],
            "detail": df["_detail"].gather(bad_idx) if bad_idx else [],
        },
        schema=DEADLETTER_SCHEMA,
    )
    return good, dead


def dead_letters(
    entries: pl.DataFrame, payloads: dict[str, bytes], reason: str, detail: str
) -> pl.DataFrame:
    """Dead-letter rows for already-decoded entries (later-stage rejections)."""
    ids = entries["entry_id"].to_list()
    return pl.DataFrame(
        {
            "entry_id": ids,
            "payload": [payloads[i] for i in ids],
            "reason": [reason] * len(ids),
            "detail": [detail] * len(ids),
        },
        schema=DEADLETTER_SCHEMA,
    )


# ---------------------------------------------------------------- stream order


def stream_order(column: str = "entry_id") -> list[pl.Expr]:
    """Sort keys putting stream entry ids (``<ms>-<seq>``) in stream order (as text,
    ``"10-0"`` would sort before ``"9-0"``)."""
    parts = pl.col(column).str.split_exact("-", 1)
    return [
        parts.struct.field("field_0").cast(pl.UInt64, strict=False).alias("_ems"),
        parts.struct.field("field_1").cast(pl.UInt64, strict=False).fill_null(0).alias("_eseq"),
    ]


def stream_key(entry_id: str) -> tuple[int, int]:
    """One stream entry id as a tuple that sorts in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
