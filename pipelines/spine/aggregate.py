"""Pure Polars transforms: a decoded batch → rows the sinks write.

No Redis, no SQL, no clock: every function is ``DataFrame → DataFrame`` (or the tuples
a Lua script takes), chained with ``.pipe`` in the runner and unit-tested directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import polars as pl

from pipelines.dispatch.flows import Flows
from pipelines.dispatch.ontime import closure_ms
from pipelines.spine.events import stream_key, stream_order

CHAIN = ("grid_id", "street_id", "district_id", "city_id")


def with_time_keys(df: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Add local ``day`` (YYYYMMDD), epoch ``minute`` and ``hour`` from ``ts`` (ms, UTC).

    The time-zone conversion runs once per distinct minute of the batch (UTC offsets
    are whole minutes), not once per row.
    """
    minute = df["ts"] // 60_000
    minutes = minute.unique()
    local = pl.from_epoch(minutes * 60_000, time_unit="ms").dt.replace_time_zone("UTC")
    days = local.dt.convert_time_zone(tz).dt.strftime("%Y%m%d")
    return df.with_columns(
        minute=minute,
        hour=df["ts"] // 3_600_000,
        day=minute.replace_strict(minutes, days).cast(pl.String),  # (String when empty too)
    )


def local_day(ts_ms: int, tz: str) -> str:
    return with_time_keys(pl.DataFrame({"ts": [ts_ms]}), tz)["day"][0]


def with_grid(df: pl.DataFrame, grid_index: np.ndarray, grids: pl.DataFrame) -> pl.DataFrame:
    """Attach the area chain of each row's grid index (``-1`` rows get nulls)."""
    idx = pl.Series(grid_index, dtype=pl.Int64)
    idx = idx.set(idx < 0, None)  # a null index gathers nulls
    return df.hstack(grids.select(pl.col(CHAIN).gather(idx)).get_columns())


def split_outside(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    inside = pl.col("grid_id").is_not_null()
    return df.filter(inside), df.filter(~inside)


def report_tickers(df: pl.DataFrame) -> dict[str, bytes]:
    """Ticker lines (JSON) of report events (``incident_events`` rows), by entry id."""
    cols = df.select("entry_id", "ts_ms", "category", "step", "incident_id", "grid_id", "severity")
    return {
        e: orjson.dumps({"k": "report", "ts": ts, "what": f"{c}:{s}", "id": i, "grid": g, "sev": v})
        for e, ts, c, s, i, g, v in cols.iter_rows()
    }


# ---------------------------------------------------------------- the reports rule

DECISION_COLUMNS = ("entry_id", "event_id", "incident_id", "step", "ts_ms")


def decide_reports(cands: pl.DataFrame) -> pl.DataFrame:
    """The fate of report entries, from stream order and time alone (pure).

    ``cands`` holds every valid entry naming the incidents concerned and every entry
    carrying one of the event ids concerned: columns ``DECISION_COLUMNS``, ``stored``
    ("A" accepted earlier, "X" rejected earlier, null for new) and ``reason`` (of an
    earlier rejection). Returns them in walk order with ``verdict``: "accepted",
    "duplicate" or "bad_transition".

    * An event id belongs to the first entry in stream order that carries it; any later
      entry with it is a ``duplicate``, under whatever incident.
    * An incident's entries in time order (``ts``, then stream order): a ``reported``
      after an entry with another event id, and anything after a ``closed`` with another
      event id, is a ``bad_transition`` (no lifecycle path leads there). An entry is
      never an impossible transition relative to its own event id (a replay).
    * A rejection is final: an entry rejected earlier keeps its reason. New entries can
      only turn accepted ones into rejected ones, never the reverse, so the set of
      accepted entries depends on which entries exist, not on the order of arrival.
    """
    if cands.is_empty():
        return cands.with_columns(verdict=pl.lit(None, dtype=pl.String))
    c = cands.with_columns(stream_order()).sort(["_ems", "_eseq"])
    c = c.with_columns(_dup=pl.col("entry_id") != pl.col("entry_id").first().over("event_id"))
    c = c.sort(["incident_id", "ts_ms", "_ems", "_eseq"])
    closed = (pl.col("step") == "closed").cast(pl.Int64)
    inc, same = "incident_id", ["incident_id", "event_id"]
    earlier_other = pl.int_range(pl.len()).over(inc) > pl.int_range(pl.len()).over(same)
    closed_other = (closed.cum_sum() - closed).over(inc) > (closed.cum_sum() - closed).over(same)
    bad = ((pl.col("step") == "reported") & earlier_other) | closed_other
    verdict = (
        pl.when(pl.col("stored") == "X")
        .then(pl.col("reason"))
        .when(pl.col("_dup"))
        .then(pl.lit("duplicate"))
        .when(bad)
        .then(pl.lit("bad_transition"))
        .otherwise(pl.lit("accepted"))
    )
    return c.with_columns(verdict=verdict).drop("_dup", "_ems", "_eseq")


def acc_item(ts: str = "ts") -> pl.Expr:
    """One accepted event's effects as an item of the live state's ``acc``:
    ``entry,step,ts,day,minute,hour,level;`` (columns of ``with_time_keys`` and
    ``incident_events``; ``ts`` names the event time column)."""
    effects = pl.concat_str(
        [
            pl.col("entry_id"),
            pl.col("step"),
            pl.col(ts).cast(pl.String),
            pl.col("day"),
            pl.col("minute").cast(pl.String),
            pl.col("hour").cast(pl.String),
            # A merged duplicate is closed at no level (it is not counted as resolved).
            pl.when((pl.col("step") == "closed") & pl.col("duplicate_of").is_not_null())
            .then(pl.lit("duplicate"))
            .otherwise(pl.col("level").fill_null("grid")),
        ],
        separator=",",
    )
    return pl.concat_str([effects, pl.lit(";")])


def row_states(rows: pl.DataFrame, city_id: str, flows: Flows) -> dict[str, tuple[str, ...]]:
    """Each incident's live state (as ``incident_states``) from its ``incidents`` row,
    which keeps the same facts incrementally: status, latest event (``last_ms``), the
    first event's category, severity, area and location, the first event's time
    (``first_ms``) and ``acc``. Rows without ``acc`` are not allowed here."""
    if rows.is_empty():
        return {}
    g = rows.with_columns(dl=pl.col("first_ms") + closure_ms(flows))
    cols = ["incident_id", "status", "last_ms", "category", "severity", "grid_id",
            "street_id", "district_id", "lon", "lat", "dl", "acc"]  # fmt: skip
    out: dict[str, tuple[str, ...]] = {}
    for i, st, last, cat, sev, grid, street, dist, lon, lat, dl, acc in g.select(cols).iter_rows():
        if acc is None:
            raise ValueError(f"incident {i}: its row keeps no acc")
        closed = st == "closed"
        out[i] = (
            st,
            str(last),
            cat,
            str(sev),
            grid,
            street,
            dist,
            city_id,
            repr(float(lon)),
            repr(float(lat)),
            "0" if closed else "1",
            str(dl),
            acc,
        )
    return out


def incident_states(
    events: pl.DataFrame, city_id: str, tz: str, flows: Flows
) -> dict[str, tuple[str, ...]]:
    """Each incident's live state (``state.INCIDENT_FIELDS``) from its accepted events
    (``incident_events`` rows), the same function of that set in every store.

    Category, severity, area and location are those of the first event in time
    (then stream) order; status is the last event's step, ``closed`` once there is
    one; ``ts`` the latest event; the deadline is the first event's time plus the
    category's; ``acc`` lists every event's effects (entry, step, ts, local day,
    epoch minute and hour, level) in that order.
    """
    if events.is_empty():
        return {}
    if "duplicate_of" not in events.columns:
        events = events.with_columns(duplicate_of=pl.lit(None, dtype=pl.String))
    df = events.with_columns(stream_order()).sort(["incident_id", "ts_ms", "_ems", "_eseq"])
    df = with_time_keys(df.rename({"ts_ms": "ts"}), tz)
    item = acc_item()
    g = df.group_by("incident_id", maintain_order=True).agg(
        first_ts=pl.col("ts").first(),
        last_ts=pl.col("ts").max(),
        last_step=pl.col("step").last(),
        closed=(pl.col("step") == "closed").any(),
        category=pl.col("category").first(),
        severity=pl.col("severity").first(),
        grid=pl.col("grid_id").first(),
        street=pl.col("street_id").first(),
        district=pl.col("district_id").first(),
        lon=pl.col("lon").first(),
        lat=pl.col("lat").first(),
        acc=item.str.join(""),
    )
    g = g.with_columns(dl=pl.col("first_ts") + closure_ms(flows))
    out: dict[str, tuple[str, ...]] = {}
    for row in g.iter_rows(named=True):
        out[row["incident_id"]] = (
            "closed" if row["closed"] else row["last_step"],
            str(row["last_ts"]),
            row["category"],
            str(row["severity"]),
            row["grid"],
            row["street"],
            row["district"],
            city_id,
            repr(float(row["lon"])),
            repr(float(row["lat"])),
            "0" if row["closed"] else "1",
            str(row["dl"]),
            row["acc"],
        )
    return out


# ---------------------------------------------------------------- the video rule


# What an update of an alert replaces (the newest revision's values); the rest of the row
# (camera, start, place, creating entry) is the creating entry's.
CONTENT = ("label", "score", "end_ms", "sub_label", "zones", "severity", "revision", "rev_entry")


def alert_token(entry_id: str, rev_entry: str | None) -> str:
    """What the live state registers for an alert: its creating entry, and the entry of
    the revision it shows when that is another one (``creator/revision entry``)."""
    return entry_id if not rev_entry or rev_entry == entry_id else f"{entry_id}/{rev_entry}"


def decide_alert_versions(
    stored: list[dict[str, Any]], batch: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """The video rule (pure): one alert per alert id, updated in place.

    * The first entry in stream order carrying an alert id creates the alert (its camera,
      start and place stay the alert's), on any day.
    * An entry carrying a ``revision`` updates the alert's label, score, end, sub-label,
      zones and severity when it is the newest: the highest revision wins, ties going to
      the earlier entry (an exact replay is a no-op); a revision never regresses the
      alert. Such an entry naming another camera than the alert's is refused
      (``moved_alert``): an alert never moves between areas.
    * An entry without a revision that does not create its alert is a ``duplicate``.

    ``stored``: the ``video_alerts`` rows of the batch's alert ids; ``batch``: the batch's
    rows (same columns, ``rev_entry`` = own entry). Returns the rows to write (changed
    ones only), a status per batch entry — A created, U updated, R already applied,
    S superseded (older or equal revision: a no-op), D duplicate, M moved — and the
    stored rows whose creating entry lost its place to an earlier entry (the live state
    takes back what they counted; one that never had a revision is a duplicate now).
    """
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in batch:
        by_id.setdefault(row["alert_id"], []).append(row)
    old = {r["alert_id"]: r for r in stored}
    write: list[dict[str, Any]] = []
    statuses: dict[str, str] = {}
    displaced: list[dict[str, Any]] = []

    def rank(row: dict[str, Any]) -> tuple[int, tuple[int, int]]:
        rev = row["revision"]
        ms, seq = stream_key(row["rev_entry"] or row["entry_id"])
        return (-1 if rev is None else int(rev), (-ms, -seq))

    for aid, rows in by_id.items():
        s = old.get(aid)
        rows = sorted(rows, key=lambda r: stream_key(r["entry_id"]))
        creator = s
        for r in rows:
            if creator is None or stream_key(r["entry_id"]) < stream_key(creator["entry_id"]):
                creator = r
        assert creator is not None
        shown = s if s is not None else creator
        if s is not None and creator is not s and rank(creator) > rank(s):
            shown = creator  # a new creator without revisions shows itself
        for r in rows:
            if r is creator or r["revision"] is None or r["camera_id"] != creator["camera_id"]:
                continue
            if rank(r) > rank(shown):
                shown = r
        row = {k: creator[k] for k in creator if k not in CONTENT}
        row.update({k: shown[k] for k in CONTENT})
        if s is None or any(row.get(k) != s.get(k) for k in row):
            write.append(row)
        if s is not None and creator is not s:
            displaced.append(s)
        for r in rows:
            e = r["entry_id"]
            if e == row["entry_id"]:
                statuses[e] = "R" if s is not None and e == s["entry_id"] else "A"
            elif r["revision"] is None:
                statuses[e] = "D"
            elif r["camera_id"] != row["camera_id"]:
                statuses[e] = "M"
            elif e == row["rev_entry"]:
                statuses[e] = "R" if s is not None and e == s["rev_entry"] else "U"
            else:
                statuses[e] = "S"
    return write, statuses, displaced


def alert_rows(alerts: pl.DataFrame, city_id: str, tz: str) -> dict[str, tuple[Any, ...]]:
    """Live effects of alerts (``video_alerts`` rows) by alert id: the live-state token
    (``alert_token``), then day, area chain, label, epoch minute and hour, ticker
    (``state.ALERT_FIELDS``)."""
    if alerts.is_empty():
        return {}
    df = with_time_keys(alerts.rename({"ts_ms": "ts"}), tz)
    out: dict[str, tuple[Any, ...]] = {}
    cols = ("entry_id", "rev_entry", "ts", "day", "grid_id", "street_id", "district_id", "label")
    for e, rev, ts, d, g, s, dist, lab, m, h, a, cam in df.select(
        *cols, "minute", "hour", "alert_id", "camera_id"
    ).iter_rows():
        tick = orjson.dumps({"k": "video", "ts": ts, "what": lab, "id": a, "grid": g, "cam": cam})
        out[a] = (alert_token(e, rev), d, g, s, dist, city_id, lab, m, h, tick)
    return out


def _mock(df: pl.DataFrame) -> pl.Expr:
    """The ``mock`` flag of location rows (null when the frame has none)."""
    return pl.col("mock") if "mock" in df.columns else pl.lit(None, dtype=pl.Boolean)


def latest_positions(df: pl.DataFrame) -> list[tuple[str, int, str]]:
    """Latest ping per worker in the batch: (worker_id, ts, packed position)."""
    if df.is_empty():
        return []
    packed = pl.concat_str(
        [
            pl.col("lon").round(6).cast(pl.String),
            pl.col("lat").round(6).cast(pl.String),
            pl.col("ts").cast(pl.String),
            pl.col("grid_id"),
            pl.col("accuracy").round(1).cast(pl.String).fill_null(""),
            pl.col("speed").round(2).cast(pl.String).fill_null(""),
            pl.col("battery").round(0).cast(pl.String).fill_null(""),
            pl.when(_mock(df)).then(pl.lit("1")).otherwise(pl.lit("")),
        ],
        separator=",",
    )
    return (
        df.lazy()
        .select("worker_id", "ts", packed.alias("p"))
        .sort("ts", maintain_order=True)
        .unique("worker_id", keep="last", maintain_order=True)
        .collect()
        .rows()
    )


def unpack_position(packed: str) -> dict[str, Any]:
    """A packed position; ``mock`` (8th field, "1") is absent in positions packed before it."""
    lon, lat, ts, grid, acc, speed, battery, *rest = packed.split(",")
    num = lambda v: float(v) if v else None  # noqa: E731
    return {
        "lon": float(lon),
        "lat": float(lat),
        "ts": int(ts),
        "grid_id": grid,
        "accuracy": num(acc),
        "speed": num(speed),
        "battery": num(battery),
        "mock": bool(rest) and rest[0] == "1",
    }


def first_visits(df: pl.DataFrame) -> pl.DataFrame:
    """Earliest visit of each (day, grid) in the batch, with the grid's area chain.

    Columns ``day``, ``grid_id``, ``street_id``, ``district_id``, ``city_id``, ``first_ms``
    (the ``patrols`` table takes ``day``, ``grid_id`` and ``first_ms``).
    """
    return df.group_by("day", *CHAIN, maintain_order=True).agg(first_ms=pl.col("ts").min())


def patrolled_grids(df: pl.DataFrame) -> list[tuple[str, str, str, str, str]]:
    """Distinct (day, grid, street, district, city) visited in the batch."""
    if df.is_empty():
        return []
    return df.lazy().select("day", *CHAIN).unique(maintain_order=True).collect().rows()


def track_slots(df: pl.DataFrame, every_s: int) -> pl.DataFrame:
    """Downsample pings to the earliest one per worker per ``every_s`` slot."""
    return (
        df.lazy()
        .select(
            "worker_id",
            slot=pl.col("ts") // (every_s * 1000),
            ts_ms="ts",
            lon="lon",
            lat="lat",
            grid_id="grid_id",
            accuracy="accuracy",
            speed="speed",
            battery="battery",
            mock=_mock(df),
        )
        .sort("ts_ms", maintain_order=True)
        .unique(["worker_id", "slot"], keep="first", maintain_order=True)
        .collect()
    )


def report_history(df: pl.DataFrame) -> pl.DataFrame:
    """Decoded report rows → ``incident_events`` rows."""
    return df.rename({"ts": "ts_ms"})


def video_history(df: pl.DataFrame) -> pl.DataFrame:
    """Decoded video rows → ``video_alerts`` rows (each entry shows its own revision)."""
    return df.rename({"ts": "ts_ms", "end_ts": "end_ms"}).with_columns(rev_entry=pl.col("entry_id"))


def online_counts(grid_ids: list[str], grids: pl.DataFrame) -> dict[str, int]:
    """Workers per area (every level) from the grids their latest pings fall in."""
    if not grid_ids:
        return {}
    g = pl.DataFrame({"grid_id": grid_ids}).join(grids.select(CHAIN), on="grid_id", how="inner")
    parts = [g.group_by(c).len().rename({c: "area_id"}) for c in CHAIN]
    out = pl.concat(parts)
    return dict(zip(out["area_id"].to_list(), out["len"].to_list(), strict=True))


# The live state of no incident (``LiveState.push_incidents``' "before" of a new one).
EMPTY_STATE = ("",) * 10 + ("0", "", "")
