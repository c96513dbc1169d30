"""The three feeds: vocabulary, wire schemas, decoding and vectorised validation.

Wire format: every stream entry has one field ``data`` holding a JSON object. Times are
integer epoch milliseconds (UTC) in field ``ts``; the gateway normalises other forms.

``decode_batch`` turns raw entries into a Polars frame of valid rows plus a frame of
dead letters (original payload + reason code). Validation is columnar: one pass per
rule over the whole batch, never a Python branch per row.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

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
    """
    fields = SCHEMAS[feed]
    ids = [e for e, _ in entries]
    payloads = [p for _, p in entries]
    df = _fast_frame(fields, ids, payloads, max_payload_bytes)
    if df is None:
        df = _slow_frame(fields, ids, payloads, max_payload_bytes)
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


def _fast_frame(
    fields: tuple[Field, ...], ids: list[str], payloads: list[bytes], max_bytes: int
) -> pl.DataFrame | None:
    """All payloads parsed at once by Polars, or None to take the per-payload path.

    Only for batches where every payload is one JSON object on one line within the size
    limit; any parse or type error falls back, so the outcome equals the slow path's.
    """
    lines = _ndjson(payloads, max_bytes)
    if lines is None:
        return None
    try:
        parsed = pl.read_ndjson(io.BytesIO(lines), schema={f.name: f.dtype for f in fields})
    except Exception:  # any failure: the exact per-payload path decides
        return None
    if parsed.height != len(payloads):
        return None
    return parsed.with_columns(
        pl.Series("entry_id", ids, dtype=pl.String),
        pl.lit(None, dtype=pl.String).alias("_pre"),
        *[pl.col(f.name).is_not_null().alias(f"_has_{f.name}") for f in fields],
    )


def _ndjson(payloads: list[bytes], max_bytes: int) -> bytes | None:
    """The payloads joined by newlines, if each is one line, starts with ``{`` and is
    within the size limit; else None. Whole-batch byte scans, no loop per payload."""
    if not payloads:
        return None
    n = len(payloads)
    lines = b"\n".join(payloads)
    one_line_each = lines.count(b"\n") == n - 1 and b"\r" not in lines
    # with no newline inside a payload, every "\n{" starts one of payloads 2..n
    objects = lines.startswith(b"{") and lines.count(b"\n{") == n - 1
    if not (one_line_each and objects) or max(map(len, payloads)) > max_bytes:
        return None
    return lines


def _slow_frame(
    fields: tuple[Field, ...], ids: list[str], payloads: list[bytes], max_payload_bytes: int
) -> pl.DataFrame:
    parsed: list[dict[str, Any] | None] = []
    pre_reason: list[str | None] = []
    for p in payloads:
        if len(p) > max_payload_bytes:
            parsed.append(None)
            pre_reason.append("too_large")
            continue
        try:
            obj = orjson.loads(p)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            parsed.append(obj)
            pre_reason.append(None)
        else:
            parsed.append(None)
            pre_reason.append("malformed")
    empty: dict[str, Any] = {}
    cols: dict[str, pl.Series] = {
        "entry_id": pl.Series("entry_id", ids, dtype=pl.String),
        "_pre": pl.Series("_pre", pre_reason, dtype=pl.String),
    }
    for f in fields:
        raw = [(o or empty).get(f.name) for o in parsed]
        present = pl.Series([v is not None for v in raw], dtype=pl.Boolean)
        if f.dtype == pl.Boolean:  # only JSON's own true / false
            values = [v if isinstance(v, bool) else None for v in raw]
        else:  # booleans are JSON's own type, never a number here
            values = [None if isinstance(v, bool | list | dict) else v for v in raw]
        cols[f.name] = pl.Series(f.name, values, dtype=f.dtype, strict=False)
        cols[f"_has_{f.name}"] = present
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
    for f in fields:
        if f.required:
            checks.append((~pl.col(f"_has_{f.name}"), "missing_field", f.name))
    for f in fields:
        checks.append((pl.col(f"_has_{f.name}") & pl.col(f.name).is_null(), "bad_type", f.name))
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
