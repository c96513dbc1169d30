"""Paced producer for the latency bench (run as ``python -m tests.bench._producer``).

Reads ``(feed, payload)`` lines written by :func:`pipelines.city.simulator.write_jsonl` and
XADDs them in file order at ``--rate`` events/s: every ``--tick`` seconds the events
due so far go out in one pipelined round trip, one stream per feed. Writes a JSON
summary (sent, elapsed, achieved rate, worst tick lateness) to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from pipelines.city.simulator import read_jsonl
from pipelines.spine.streams import FIELD

ROOT = Path(__file__).resolve().parents[2]


def spawn_producer(
    redis_url: str,
    prefix: str,
    events_file: Path,
    out: Path,
    count: int,
    rate: float,
    skip: int = 0,
    tick: float | None = None,
) -> subprocess.Popen[bytes]:
    """Start this producer as its own process (the benches' load generator)."""
    cmd = [sys.executable, "-m", "tests.bench._producer", "--redis", redis_url]
    cmd += ["--prefix", prefix, "--events", str(events_file), "--skip", str(skip)]
    cmd += ["--count", str(count), "--rate", str(rate), "--out", str(out)]
    if tick is not None:
        cmd += ["--tick", str(tick)]
    return subprocess.Popen(cmd, cwd=ROOT)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--tick", type=float, default=0.01)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    events = list(itertools.islice(read_jsonl(a.events), a.skip, a.skip + a.count))
    streams = {f: f"{a.prefix}:{f}" for f in ("reports", "locations", "video")}
    r = redis.Redis.from_url(a.redis)
    r.ping()
    sent = 0
    worst_late = 0.0
    t0 = time.perf_counter()
    next_tick = t0
    while sent < len(events):
        now = time.perf_counter()
        worst_late = max(worst_late, now - next_tick)
        due = min(len(events), int((now - t0) * a.rate))
        if due > sent:
            pipe = r.pipeline(transaction=False)
            for feed, payload in events[sent:due]:
                pipe.xadd(streams[feed], {FIELD: payload})
            pipe.execute()
            sent = due
        next_tick += a.tick
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:  # fell behind: do not try to catch up tick by tick
            next_tick = time.perf_counter()
    elapsed = time.perf_counter() - t0
    summary = {
        "sent": sent,
        "elapsed_s": elapsed,
        "rate": sent / elapsed if elapsed else 0.0,
        "worst_tick_late_ms": worst_late * 1000,
    }
    with open(a.out, "w") as fh:
        json.dump(summary, fh)
    r.close()


if __name__ == "__main__":
    main()
