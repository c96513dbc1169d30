"""The city at a past moment, as pure functions of SQL history rows and the moment.

Every function here takes rows already read (``incident_events``, ``video_alerts``,
``track_points``, ``patrols``, ``warnings`` + ``warning_actions``) and the moment ``at``
(epoch ms, UTC) and returns what the live state held then, in the live state's own
shapes (``state.LiveState``'s hashes: ``area_id`` → n, ``"area_id|x"`` → n; packed
positions; ticker items). No Redis, no SQL, no clock.

The incident rule is the pipelines' own: ``aggregate.incident_states`` over the events
that had happened by ``at`` (the same function ``rebuild-live`` runs over all of them),
and the counters are the effects the live-state script applies for those states
(``scripts._INCIDENTS_LUA``): open/open_cat/open_sev per area of an open incident, day
counters per accepted event, overdue once the deadline has passed (the clock job's sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from pipelines.dispatch.flows import Flows
from pipelines.spine import aggregate as agg
from pipelines.spine.events import stream_order
from pipelines.spine.scripts import INCIDENT_FIELDS
from pipelines.warnings.lifecycle import Warning, live_counts
from pipelines.warnings.model import OPEN_STATUSES
from pipelines.warnings.store import warning_of

CHAIN = ("grid", "street", "district", "city")
FEEDS = ("reports", "locations", "video")
LEVEL_RANK = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}
# A warning's status after each action (``warnings.store``: the engine's open / clear,
# people's acknowledge / dispatch / resolve / dismiss).
STATUS_AFTER = {
    "open": "new",
    "acknowledge": "acknowledged",
    "dispatch": "dispatched",
    "resolve": "resolved",
    "dismiss": "dismissed",
    "clear": "cleared",
}


def _strings(rows: list[tuple[Any, ...]], names: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={n: pl.String for n in names}, orient="row")


# ------------------------------------------------------------------ incidents


# An incident's state as the picture holds it (``P:inc:<id>``'s fields, as text); a
# checkpoint keeps these (``history.checkpoints``)
STATE_COLUMNS = ("incident_id", *INCIDENT_FIELDS)


def incidents_at(
    events: pl.DataFrame,
    at_ms: int,
    city_id: str,
    tz: str,
    flows: Flows,
    settled: pl.DataFrame | None = None,
    base: pl.DataFrame | None = None,
    lo_ms: int | None = None,
    later: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Each incident's live state at ``at`` (``INCIDENT_FIELDS`` as text, like the
    ``P:inc:<id>`` hash) plus ``overdue`` ("1": open with its deadline passed, as the
    clock job's sweep marks it), from the incidents' accepted events (any window that
    holds every event of each incident up to ``at``).

    ``settled``: ``incidents`` rows of incidents with no event after ``at`` (their
    ``acc`` kept in ``tz``): their state then is the one the pipelines keep on the row
    (``aggregate.row_states``, equal to ``incident_states`` over all their events), so
    only the incidents still changing after ``at`` need their events.

    ``base``: the states (``STATE_COLUMNS``) at an earlier moment ``H`` of the incidents
    a picture held then (a checkpoint). ``events`` and ``settled`` then hold the incidents
    touched in ``(H, at]``, whose states replace theirs; the others' state is the one at
    ``H`` (nothing happened to them since), and those still held at ``at`` are kept: open
    then, or touched since ``lo_ms`` (the window's start) — the rule of
    ``state.concerned_ids``, as a function of the state. ``later``: the events in
    ``(H, at]`` of incidents whose state at ``H`` is whole (its ``acc`` not emptied),
    folded onto it: all their events before are before these, so the status is
    ``closed`` once either has a close, else the last new step; ``ts`` the last new
    event; ``acc`` the old items then the new; the rest is their first event's.

    ``lo_ms`` given, an incident not touched since keeps an empty ``acc``: none of its
    events counts at ``at`` (day counters and hour buckets reach back to ``lo_ms`` at
    most), and a checkpoint then keeps only what can count. Rows come in incident id
    order."""
    happened = events.filter(pl.col("ts_ms") <= at_ms)
    states = agg.incident_states(happened, city_id, tz, flows)
    if settled is not None:
        states |= agg.row_states(settled, city_id, flows)
    df = _strings([(i, *st) for i, st in states.items()], STATE_COLUMNS)
    if base is not None and later is not None and later.height:
        df = pl.concat(
            [df, _fold(base, later.filter(pl.col("ts_ms") <= at_ms), city_id, tz, flows)]
        )
    if base is not None:
        kept = base.filter(~pl.col("incident_id").is_in(df["incident_id"].implode()))
        df = pl.concat([kept.select(STATE_COLUMNS), df])
    if lo_ms is not None:
        recent = pl.col("ts").cast(pl.Int64) >= lo_ms
        if base is not None:
            df = df.filter((pl.col("open") == "1") | recent)
        df = df.with_columns(acc=pl.when(recent).then(pl.col("acc")).otherwise(pl.lit("")))
    df = df.sort("incident_id")
    over = (pl.col("open") == "1") & (pl.col("dl").cast(pl.Int64) <= at_ms)
    return df.with_columns(overdue=pl.when(over).then(pl.lit("1")).otherwise(pl.lit("0")))


def _fold(
    base: pl.DataFrame, later: pl.DataFrame, city_id: str, tz: str, flows: Flows
) -> pl.DataFrame:
    """``base`` states (whole) with their incidents' later events folded on
    (``incidents_at``'s ``later``)."""
    new = agg.incident_states(later, city_id, tz, flows)
    got = _strings(
        [(i, st[0], st[1], st[-1]) for i, st in new.items()], ("incident_id", "s", "t", "a")
    )
    closed = (pl.col("open") == "0") | (pl.col("s") == "closed")
    return (
        base.select(STATE_COLUMNS)
        .join(got, on="incident_id", how="inner")
        .with_columns(
            status=pl.when(closed).then(pl.lit("closed")).otherwise(pl.col("s")),
            ts=pl.col("t"),
            open=pl.when(closed).then(pl.lit("0")).otherwise(pl.lit("1")),
            acc=pl.col("acc") + pl.col("a"),
        )
        .select(STATE_COLUMNS)
    )


def incident_effects(incidents: pl.DataFrame) -> pl.DataFrame:
    """One row per accepted event of each incident (its ``acc`` items): ``entry``,
    ``step``, ``ts``, local ``day``, epoch ``minute`` and ``hour``, ``level``, with the
    incident's category and area chain (what the live script counts each event under)."""
    items = (
        incidents.select("cat", *CHAIN, item=pl.col("acc").str.split(";"))
        .explode("item")
        .filter(pl.col("item").is_not_null() & (pl.col("item") != ""))
    )
    names = ("entry", "step", "ts", "day", "minute", "hour", "level")
    parts = pl.col("item").str.split_exact(",", len(names) - 1).struct.rename_fields(names)
    return (
        items.with_columns(parts)
        .unnest("item")
        .with_columns(pl.col("ts").cast(pl.Int64), pl.col("hour").cast(pl.Int64))
    )


def per_area(df: pl.DataFrame, by: str | None = None) -> dict[str, int]:
    """Rows counted at each area of their chain (grid, street, district, city): area → n,
    or ``"area|<by>"`` → n. Zero never appears (the live hashes drop zeros too)."""
    if df.is_empty():
        return {}
    parts = [
        df.select(
            key=pl.col(c) if by is None else pl.concat_str([pl.col(c), pl.col(by)], separator="|")
        )
        for c in CHAIN
    ]
    counted = pl.concat(parts).drop_nulls().group_by("key").len()
    return dict(zip(counted["key"].to_list(), counted["len"].to_list(), strict=True))


# ------------------------------------------------------------------ video alerts


def alerts_at(alerts: pl.DataFrame, at_ms: int, city_id: str, tz: str) -> pl.DataFrame:
    """Video alerts raised by ``at`` with their live effects (``aggregate.alert_rows``'
    day, area chain, label, epoch minute and hour): ``alert_id``, ``day``, the area chain,
    ``label``, ``minute``, ``hour``, ``ts``. An alert shows its newest stored revision
    (revisions are updated in place)."""
    raised = alerts.filter(pl.col("ts_ms") <= at_ms).rename({"ts_ms": "ts"})
    df = agg.with_time_keys(raised, tz)
    return df.select(
        "alert_id",
        "day",
        pl.col("grid_id").alias("grid"),
        pl.col("street_id").alias("street"),
        pl.col("district_id").alias("district"),
        pl.lit(city_id, pl.String).alias("city"),
        "label",
        "minute",
        "hour",
        "ts",
    )


# ------------------------------------------------------------------ tickers


def tickers_at(
    events: pl.DataFrame,
    alerts: pl.DataFrame,
    at_ms: int,
    city_id: str,
    length: int,
) -> dict[str, list[dict[str, Any]]]:
    """The newest ``length`` report events and video alerts by ``at`` per street,
    district and city, newest first (the order ``rebuild-live`` pushes: time, then
    stream order), as the ticker items the live list holds. Lines are only written for
    the items kept."""
    cols = ("entry_id", "ts_ms", "street_id", "district_id")
    ev = events.filter(pl.col("ts_ms") <= at_ms).with_row_index("_row")
    al = alerts.filter(pl.col("ts_ms") <= at_ms).with_row_index("_row")
    df = pl.concat(
        [
            ev.select("_row", *cols, _kind=pl.lit("r")),
            al.select("_row", *cols, _kind=pl.lit("v")),
        ]
    )
    if df.is_empty():
        return {}
    df = df.with_columns(stream_order(), city=pl.lit(city_id))
    keep = ("_row", "_kind", "ts_ms", "_ems", "_eseq")
    parts = [df.select(*keep, area=a) for a in ("street_id", "district_id", "city")]
    newest = (
        pl.concat(parts)
        .sort(["area", "ts_ms", "_ems", "_eseq"], descending=[False, True, True, True])
        .group_by("area", maintain_order=True)
        .head(length)
    )
    said = newest.filter(pl.col("_kind") == "r")["_row"].unique()
    told = ev.filter(pl.col("_row").is_in(said.implode()))
    by_entry = agg.report_tickers(told)  # entry ids are unique: one stream entry, one event
    lines = {("r", i): by_entry[e] for i, e in told.select("_row", "entry_id").iter_rows()}
    shown = newest.filter(pl.col("_kind") == "v")["_row"].unique()
    picked = al.filter(pl.col("_row").is_in(shown.implode()))
    ticks = agg.alert_rows(picked, city_id, "UTC")
    for i, a in picked.select("_row", "alert_id").iter_rows():
        lines[("v", i)] = ticks[a][-1]
    out: dict[str, list[dict[str, Any]]] = {}
    for area, kind, i in newest.select("area", "_kind", "_row").iter_rows():
        out.setdefault(area, []).append(orjson.loads(lines[(kind, i)]))
    return out


# ------------------------------------------------------------------ workers


def positions_at(points: pl.DataFrame, at_ms: int) -> dict[str, tuple[int, str]]:
    """Each worker's latest stored track point by ``at``: worker → (ts, packed position)
    (``aggregate.latest_positions``' encoding). Track points are kept one per worker and
    slot (``pipelines.persist_tracks_every_s``), so a position can lag the last ping by up
    to one slot."""
    seen = points.filter(pl.col("ts_ms") <= at_ms).rename({"ts_ms": "ts"})
    return {w: (ts, p) for w, ts, p in agg.latest_positions(seen)}


def online_at(
    positions: Mapping[str, tuple[int, str]], at_ms: int, online_minutes: int, grids: pl.DataFrame
) -> dict[str, int]:
    """Workers online per area at ``at`` (last position within ``online_minutes``), counted
    in the grid of that position (the clock job's rule)."""
    since = at_ms - online_minutes * 60_000
    cells = [p.split(",")[3] for ts, p in positions.values() if ts >= since]
    return agg.online_counts(cells, grids)


def patrolled_at(patrols: pl.DataFrame, at_ms: int, day: str) -> set[str]:
    """Grids first visited on local ``day`` by ``at``."""
    got = patrols.filter((pl.col("day") == day) & (pl.col("first_ms") <= at_ms))
    return set(got["grid_id"].to_list())


# ------------------------------------------------------------------ warnings


def warnings_at(rows: pl.DataFrame, actions: pl.DataFrame, at_ms: int) -> list[Warning]:
    """The warnings open at ``at``, each with its level, status and escalation then
    (``actions``: every action of these warnings, also those after ``at``).

    A warning's story is its actions (``warning_actions``) up to ``at`` in order: ``open``
    (its first level in the note), ``level`` (a change of level, the new one in the note),
    ``escalate`` (the area in the note), then people's and the engine's status changes. A
    warning without actions (written before they were kept) is open from its first to its
    closing time at its stored level."""
    acts: dict[str, list[tuple[int, int, str, str | None]]] = {}
    told = set(actions["warning_id"].to_list())  # warnings with a story at all
    happened = actions.filter(pl.col("at_ms") <= at_ms)
    for wid, i, at, action, note in happened.select(
        "warning_id", "id", "at_ms", "action", "note"
    ).iter_rows():
        acts.setdefault(wid, []).append((int(at), int(i), action, note))
    out: list[Warning] = []
    for row in rows.filter(pl.col("first_seen_ms") <= at_ms).iter_rows(named=True):
        story = sorted(acts.get(row["warning_id"], []))
        level, status, escalated, esc_ms = row["level"], None, None, None
        if not story and row["warning_id"] in told:
            continue  # its first action (open) came after the moment
        if not story:
            closed = row["closed_ms"]
            status = "new" if closed is None or int(closed) > at_ms else "cleared"
        for at, _i, action, note in story:
            if action in ("open", "level") and note in LEVEL_RANK:
                level = note
            if action == "escalate":
                escalated, esc_ms = note, at
            status = STATUS_AFTER.get(action, status)
        if status not in OPEN_STATUSES:
            continue
        out.append(
            warning_of(
                row,
                level=level,
                status=status,
                last_seen_ms=min(int(row["last_seen_ms"]), at_ms),
                escalated_to=escalated,
                escalated_ms=esc_ms,
            )
        )
    return out


def warning_tables(
    warnings: Iterable[Warning], ancestors: Callable[[str], Sequence[str]]
) -> tuple[dict[str, int], dict[str, int]]:
    """``warn_count`` ("area|level" → n) and ``warn_level`` (area → highest rank, 1 blue …
    4 red) of these open warnings, each counted at its area and every ancestor (what
    ``LiveState.set_warnings`` writes)."""
    counts = live_counts(warnings, ancestors)
    flat = {f"{a}|{lv}": n for a, by in counts.items() for lv, n in by.items() if n}
    top = {
        a: max((LEVEL_RANK[lv] for lv, n in by.items() if n), default=0) for a, by in counts.items()
    }
    return flat, {a: v for a, v in top.items() if v}


# ------------------------------------------------------------------ the whole picture


@dataclass
class Picture:
    """What the live state held at ``at_ms``, in its own shapes (see ``HistoricState``)."""

    at_ms: int
    day: str
    live: dict[str, dict[str, int]] = field(default_factory=dict)  # open, overdue, online …
    days: dict[str, dict[str, int]] = field(default_factory=dict)  # this day's metrics
    hours: dict[int, dict[str, int]] = field(default_factory=dict)  # epoch hour → "r|a" → n
    tickers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    incidents: pl.DataFrame = field(default_factory=pl.DataFrame)
    positions: dict[str, tuple[int, str]] = field(default_factory=dict)
    patrolled: set[str] = field(default_factory=set)
    warnings: list[Warning] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rows:
    """The history rows one reconstruction needs (``HistoricState`` reads them)."""

    events: pl.DataFrame  # incident_events up to at of the incidents concerned not settled
    alerts: pl.DataFrame  # video_alerts of the window
    points: pl.DataFrame  # track_points of the window
    patrols: pl.DataFrame  # patrols of the day
    warnings: pl.DataFrame  # warnings alive at at
    actions: pl.DataFrame  # their actions
    # incidents rows of the incidents concerned with no event after at (``incidents_at``)
    settled: pl.DataFrame | None = None
    # a checkpoint's states and the window's start (``incidents_at``'s base and lo_ms)
    base: pl.DataFrame | None = None
    lo_ms: int | None = None
    # the events since the checkpoint of incidents whose state there is whole (folded on)
    later: pl.DataFrame | None = None


def picture(
    rows: Rows,
    at_ms: int,
    *,
    city_id: str,
    grids: pl.DataFrame,
    tz: str,
    flows: Flows,
    online_minutes: int,
    ticker_length: int,
    ancestors: Callable[[str], Sequence[str]],
    window_ms: int,
) -> Picture:
    """The whole live picture at ``at`` from history rows (pure).

    ``window_ms``: how far back hourly buckets reach (the live hour buckets' lifetime);
    day counters are those of ``at``'s local day."""
    day = agg.local_day(at_ms, tz)
    pic = Picture(at_ms=at_ms, day=day)
    inc = incidents_at(
        rows.events, at_ms, city_id, tz, flows, rows.settled, rows.base, rows.lo_ms, rows.later
    )
    pic.incidents = inc
    opened = inc.filter(pl.col("open") == "1")
    pic.live["open"] = per_area(opened)
    pic.live["open_cat"] = per_area(opened, "cat")
    pic.live["open_sev"] = per_area(opened, "sev")
    pic.live["overdue"] = per_area(opened.filter(pl.col("overdue") == "1"))
    eff = incident_effects(inc)
    today = eff.filter(pl.col("day") == day)
    reported = today.filter(pl.col("step") == "reported")
    closed = today.filter(pl.col("step") == "closed")
    pic.days["reports"] = per_area(reported)
    pic.days["reports_cat"] = per_area(reported, "cat")
    pic.days["resolved"] = per_area(today.filter(pl.col("step") == "resolved"))
    pic.days["closed"] = per_area(closed)
    pic.days["closed_level"] = per_area(closed, "level")
    al = alerts_at(rows.alerts, at_ms, city_id, tz)
    al_today = al.filter(pl.col("day") == day)
    pic.days["video"] = per_area(al_today)
    pic.days["video_label"] = per_area(al_today, "label")
    first_hour = (at_ms - window_ms) // 3_600_000
    for kind, frame in (("r", eff.filter(pl.col("step") == "reported")), ("v", al)):
        recent = frame.filter(pl.col("hour") >= first_hour)
        for key, n in per_area(recent, "hour").items():
            area, hour = key.rsplit("|", 1)
            pic.hours.setdefault(int(hour), {})[f"{kind}|{area}"] = n
    if rows.settled is None:  # every event of the incidents concerned is here
        pic.tickers = tickers_at(rows.events, rows.alerts, at_ms, city_id, ticker_length)
    pic.positions = positions_at(rows.points, at_ms)
    pic.live["online"] = online_at(pic.positions, at_ms, online_minutes, grids)
    pic.patrolled = patrolled_at(rows.patrols, at_ms, day)
    chain = grids.select(agg.CHAIN).rename(dict(zip(agg.CHAIN, CHAIN, strict=True)))
    visited = chain.filter(pl.col("grid").is_in(list(pic.patrolled)))
    pic.days["coverage"] = per_area(visited)
    pic.warnings = warnings_at(rows.warnings, rows.actions, at_ms)
    pic.live["warn_count"], pic.live["warn_level"] = warning_tables(pic.warnings, ancestors)
    # freshness: the picture is complete as of the moment (every feed "applied" then)
    pic.meta = {"tick_ms": str(at_ms), **{f"last_{f}_ms": str(at_ms) for f in FEEDS}}
    return pic
