"""Data commands: `simulate`, `geo` (import, rebind), `rebuild-live`, `backfill-summaries`."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import polars as pl
import redis

from pipelines.city import binding, boundaries
from pipelines.city import geography as geo
from pipelines.cli.run import _start_simulator, _stop_event
from pipelines.cli.runtime import (
    FEEDS,
    Runtime,
    check_city,
    installation_redis,
    load_city,
    runtime,
    sql_engine,
    sync_areas,
)
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings
from pipelines.spine import store


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.city import simulator as simulate

    cfg = settings.simulate
    changes = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("speed", args.speed),
            ("rate", args.rate),
            ("malformed_share", args.malformed_share),
        )
        if v is not None
    }
    cfg = dataclasses.replace(cfg, **changes)
    settings = dataclasses.replace(settings, simulate=cfg)
    if getattr(args, "backfill", None):
        return _backfill(settings, args)
    if args.replay:
        with runtime(settings, embedded_ok=False) as rt:
            n = _replay(rt, Path(args.replay))
        print(f"replayed {n} events from {args.replay}")
        return 0
    city = load_city(settings)
    if args.out:
        start = int(args.start * 1000) if args.start else int(time.time() * 1000) - 86_400_000
        events = simulate.generate(city, cfg, flows_for(settings), start, args.events)
        simulate.write_jsonl(Path(args.out), ((f, p) for f, p, _ in events))
        print(f"wrote {len(events)} events to {args.out}")
        return 0
    stop = _stop_event()
    gateway_url = None
    if args.via == "gateway":
        g = settings.gateway
        gateway_url = args.gateway_url or f"http://{g.host}:{g.port}/"
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        t = _start_simulator(rt, city, stop, cfg.speed, gateway_url=gateway_url)
        if args.duration:
            stop.wait(args.duration)
            stop.set()
        t.join()
    return 0


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    """`wangge simulate --backfill SPAN`: the simulated past through the streams, applied by
    worker processes of this command (they join the consumer group, so running
    `wangge pipelines` share the work), then stopped; then the past's warnings."""
    from pipelines.city.simulator.backfill import parse_span
    from pipelines.cli import backfill as bf
    from pipelines.settings import child_environ

    try:
        days = parse_span(args.backfill)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    city = load_city(settings)
    with runtime(settings) as rt:
        s = rt.settings
        check_city(rt, city)
        sync_areas(rt.engine, city)
        why = bf.refusal(s, rt.engine, days, explicit=True, force=bool(args.force))
        if why is not None:
            print(f"backfill refused: {why}", file=sys.stderr)
            return 2
        if rt.embedded:
            print(
                "note: embedded Redis (no REDIS_URL): the history stays in SQL, the live state"
                " ends with this command (`wangge rebuild-live` restores it into a Redis)"
            )
        env = child_environ(REDIS_URL=s.redis.url, DATABASE_URL=s.database_url)
        counts = {"reports": max(s.simulate.backfill_report_workers, 1), "locations": 1, "video": 1}
        # Started once the cameras and the roster are in SQL (a video worker that read an
        # empty camera registry would dead-letter the first alerts as unknown cameras).
        procs: list[Any] = []
        stop = _stop_event()
        bar = bf.ProgressBar()
        print(f"backfill: the last {days:g} days of {city.name} through the pipelines")
        try:
            sim, res = bf.backfill_streams(
                s,
                city,
                rt.r,
                rt.engine,
                days,
                stop=stop.is_set,
                progress=bar,
                wait=bf.watching(procs),
                ready=lambda: procs.extend(bf.spawn_workers(s, env, counts, "backfill")),
            )
        except RuntimeError as exc:
            print(f"\nbackfill failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bf.stop_workers(procs)
        bar.done(res)
        if not stop.is_set():
            span = bf.finish_span(rt.engine, sim, res)
            bf.replay_warnings(s, city, rt.r, rt.engine, span, stop=stop.is_set)
    return 130 if stop.is_set() else 0


def _replay(rt: Runtime, path: Path) -> int:
    from pipelines.city import simulator as simulate
    from pipelines.spine.partitions import publish_feed

    s = rt.settings
    buf: dict[str, list[bytes]] = {f: [] for f in FEEDS}
    n = 0
    for feed, payload in simulate.read_jsonl(path):
        buf[feed].append(payload)
        n += 1
        if len(buf[feed]) >= 5000:
            publish_feed(rt.r, s, feed, buf[feed])
            buf[feed] = []
    for feed, rest in buf.items():
        publish_feed(rt.r, s, feed, rest)
    return n


def cmd_geo(settings: Settings, args: argparse.Namespace) -> int:
    if args.geo_cmd == "import":
        return _geo_import(settings, args)
    if args.geo_cmd == "rebind":
        return _geo_rebind(settings, args)
    city = load_city(settings)
    if args.geo_cmd == "export":
        fc = geo.level_geojson(city, args.level, args.parent, settings.geo.simplify_m)
        Path(args.out).write_bytes(json.dumps(fc, ensure_ascii=False).encode())
        print(f"wrote {len(fc['features'])} {args.level} features to {args.out}")
        return 0
    summary = city.areas.group_by("level").agg(pl.len(), pl.col("area_km2").sum().round(1))
    print(f"{city.name} ({city.city_id})")
    for level in geo.LEVELS:
        row = summary.filter(pl.col("level") == level)
        if row.height:
            print(f"  {level:9s} {row['len'][0]:6d} areas  {row['area_km2'][0]:9.1f} km²")
    return 0


def _geo_import(settings: Settings, args: argparse.Namespace) -> int:
    out = (
        Path(args.out) if args.out else settings.path(settings.geo.cache_dir) / Path(args.file).stem
    )
    try:
        res = boundaries.import_geojson(
            Path(args.file), settings.geo, out, n_grids=args.grids, name=args.name
        )
    except boundaries.GeoImportError as exc:
        shown = exc.problems[:200]
        print(f"import failed: {len(exc.problems)} problem(s) in {args.file}", file=sys.stderr)
        for problem in shown:
            print(f"  {problem}", file=sys.stderr)
        if len(exc.problems) > len(shown):
            print(f"  … (first {len(shown)} shown)", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 2
    for note in res.notes:
        print(f"note: {note}")
    for repair in res.repairs:
        print(f"repaired: {repair.describe()}")
    city = res.city
    print(
        f"imported {city.name} ({city.city_id}): {len(city.ids('district'))} districts, "
        f"{len(city.ids('street'))} streets, {len(city.ids('grid'))} grids → {out}"
        + (f" ({len(res.repairs)} polygons repaired)" if res.repairs else "")
    )
    print(f"use it with: WANGGE_GEO_SOURCE={out}")
    return 0


def _geo_rebind(settings: Settings, args: argparse.Namespace) -> int:
    """Show whose data the database holds; with a flag, bind it to the configured city.

    Redis too: ``redis.url``, or the embedded server's (``runtime.installation_redis``)."""
    with installation_redis(settings) as r:
        return _rebind_with(settings, args, r)


def _rebind_with(settings: Settings, args: argparse.Namespace, r: Any) -> int:
    city = load_city(settings)
    configured = binding.stamp_of(city)
    mode: Literal["discard", "keep"] | None = (
        "discard" if args.discard_data else "keep" if args.keep_data else None
    )
    prefix = settings.redis.prefix
    now_ms = int(time.time() * 1000)
    try:
        with sql_engine(settings) as engine:
            if mode is None:
                bound = binding.bound_stamp(engine)
                print(f"configured city: {configured.describe()}")
                print(f"database holds:  {bound.describe() if bound else 'no city yet'}")
                try:
                    binding.check(engine, r, prefix, city, now_ms)
                except binding.CityMismatch as exc:
                    print(f"\n{exc}", file=sys.stderr)
                    return 1
                print("they match: nothing to do")
                return 0
            actor = f"cli:{getpass.getuser()}"
            report = binding.rebind(engine, r, prefix, city, mode, now_ms=now_ms, actor=actor)
    except binding.RebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    if mode == "keep":
        print("next: `wangge rebuild-live` (live state in Redis from the kept history)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of grids, got {value}")
    return value


def cmd_rebuild_live(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild the live state aside in bounded steps, then switch to it atomically."""
    from pipelines.spine.runner import rebuild_live

    city = load_city(settings)
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        busy = _active_consumers(rt.r, rt.settings)
        if busy:
            print(
                f"rebuild-live: warning: pipeline workers are running ({', '.join(busy)});"
                " what they apply while the state is rebuilt may be missing from it until"
                " the incident changes again — stop them for an exact rebuild",
                file=sys.stderr,
            )
        last: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if done >= total or now - last.get(stage, 0.0) >= 0.5:
                last[stage] = now
                pct = f" ({100 * done // total}%)" if total else ""
                print(f"rebuild-live: {stage} {done}/{total}{pct}", file=sys.stderr, flush=True)

        t = time.perf_counter()
        counts = rebuild_live(rt.settings, city, rt.r, rt.engine, progress=progress)
    print(f"rebuilt live state in {time.perf_counter() - t:.1f}s: {counts}")
    return 0


def _active_consumers(r: redis.Redis, s: Settings, within_ms: int = 10_000) -> list[str]:
    """Consumers of the feed streams that read within the last ``within_ms``."""
    from pipelines.spine.partitions import feed_stream_keys

    out = []
    for key in (k for feed in FEEDS for k in feed_stream_keys(s, feed)):
        try:
            consumers: Any = r.xinfo_consumers(key, s.streams.group)
        except redis.ResponseError:  # no stream or no group yet
            continue
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            idle = int(c.get("inactive", c["idle"]))  # Redis ≥ 7.2: -1 = never read
            if 0 <= idle < within_ms:
                out.append(name)
    return out


def cmd_backfill_summaries(settings: Settings, args: argparse.Namespace) -> int:
    """Fill the lifecycle summary and the reports pipeline's fold state of incidents
    stored before they existed (resumable)."""
    with sql_engine(settings) as engine:
        t = time.perf_counter()
        n = store.backfill_summaries(engine, flows=flows_for(settings), tz=settings.live.timezone)
    print(f"summarised {n} incidents in {time.perf_counter() - t:.1f}s")
    return 0
