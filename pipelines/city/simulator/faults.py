"""Malformed events injected into the live feeds (the dead-letter paths)."""

from __future__ import annotations

from typing import Any

import orjson

from pipelines.city.simulator.mixes import BAD_KINDS, HOUR_MS, make_bad
from pipelines.city.simulator.state import _SimState


class _Faults(_SimState):
    def _template(self, feed: str, payload: bytes, ts: int) -> tuple[str, dict[str, Any]]:
        """A fresh good event (new ids) to derive a bad one from."""
        ev = orjson.loads(payload)
        if feed == "reports":
            ev.update(
                event_id=self._next_event_id(),
                incident_id=self._next_incident_id(),
                step="reported",
                level="grid",
            )
        elif feed == "video":
            ev["alert_id"] = self._next_alert_id()
        ev["ts"] = ts
        return feed, ev

    def _bad_from(
        self, kind: str, feed: str, payload: bytes, ts: int, min_age_ms: int
    ) -> tuple[str, bytes, str] | None:
        reason = dict(BAD_KINDS)[kind]
        if kind == "duplicate":
            if not self._recent:
                return None
            f, p = self._recent[int(self.rng.integers(0, len(self._recent)))]
            return f, p, reason
        if kind == "bad_transition":
            old = [ev for c, ev in self._closed if c <= ts - min_age_ms]
            if not old:
                return None
            ev = dict(old[int(self.rng.integers(0, len(old)))])
            ev["event_id"] = self._next_event_id()
            ev["step"] = ("dispatched", "reported", "handling")[int(self.rng.integers(0, 3))]
            ev["ts"] = max(ts, int(ev["ts"]) + 1)
            return "reports", orjson.dumps(ev), reason
        if kind == "unknown_category" and feed == "locations":
            if not len(self.camera_ids):
                return None
            feed, ev = "video", self._alert(0, "smoke_fire", 0.9, ts, True)
        else:
            feed, ev = self._template(feed, payload, ts)
        f, p = make_bad(kind, feed, ev)
        return f, p, reason

    def _live_bad(self, ts: int, feed: str, payload: bytes) -> tuple[str, bytes, str] | None:
        """The next bad event in the kind cycle (skipping kinds not possible yet)."""
        for _ in range(len(BAD_KINDS)):
            kind = BAD_KINDS[self._bad_counter % len(BAD_KINDS)][0]
            self._bad_counter += 1
            got = self._bad_from(kind, feed, payload, ts, HOUR_MS)
            if got is not None:
                return got
        return None
