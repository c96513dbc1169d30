"""The pure warning lifecycle: one open warning per key, updated not repeated; levels blue /
yellow / orange / red; cleared after ``hysteresis_s`` without its condition; escalated up
the area hierarchy every ``escalate_after_s`` while unacknowledged; live counts per area."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.warnings.model import MAX_EVIDENCE, OPEN_STATUSES, RANK, Finding, RuleConfig


@dataclass(frozen=True)
class Warning:
    warning_id: str
    key: str
    rule: str
    area_id: str
    level: str
    status: str
    first_seen_ms: int
    last_seen_ms: int
    evidence: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    escalated_to: str | None = None
    escalated_ms: int | None = None


def warning_id(key: str, first_seen_ms: int) -> str:
    digest = hashlib.sha1(f"{key}|{first_seen_ms}".encode()).hexdigest()[:12]
    return f"W{first_seen_ms:x}{digest}"


def _merge_evidence(new: Iterable[str], old: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for x in (*new, *old):
        if x not in out:
            out.append(x)
        if len(out) >= MAX_EVIDENCE:
            break
    return tuple(out)


def update_open(
    open_warnings: Iterable[Warning],
    findings: Sequence[Finding],
    now_ms: int,
    cfg: RuleConfig,
    ancestors: Callable[[str], Sequence[str]] | None = None,
    quiet: Collection[str] = (),
) -> tuple[list[Warning], list[Warning], list[Warning]]:
    """(new, updated, cleared) after one evaluation.

    * a finding matching no open warning but one of the ``quiet`` keys (recently resolved
      or dismissed by a person) opens nothing: a dismissed warning does not bounce back;

    * a finding whose key (or one of its aliases) matches an open warning updates it:
      last_seen = now, level = max, evidence merged (newest first, ≤ 50), summary replaced;
      otherwise it opens a new warning;
    * an open warning not seen for ``hysteresis_s`` is cleared;
    * a warning still ``new`` (unacknowledged) is escalated one step up ``ancestors`` for
      every full ``escalate_after_s`` since it opened (street → district → city).
    """
    by_key: dict[str, Warning] = {}
    for w in open_warnings:
        for k in (w.key, *w.aliases):
            by_key.setdefault(k, w)
    current: dict[str, Warning] = {}  # warning_id → state after this tick
    seen: set[str] = set()
    new: list[Warning] = []
    for f in findings:
        target = next((by_key[k] for k in (f.key, *f.aliases) if k in by_key), None)
        if target is None:
            if quiet and any(k in quiet for k in (f.key, *f.aliases)):
                continue
            w = Warning(
                warning_id=warning_id(f.key, now_ms),
                key=f.key,
                rule=f.rule,
                area_id=f.area_id,
                level=f.level,
                status="new",
                first_seen_ms=now_ms,
                last_seen_ms=now_ms,
                evidence=tuple(f.evidence[:MAX_EVIDENCE]),
                summary=f.summary,
                aliases=tuple(k for k in f.aliases if k != f.key),
            )
            new.append(w)
            for k in (f.key, *f.aliases):
                by_key[k] = w
            continue
        base = current.get(target.warning_id, target)
        aliases = tuple(
            dict.fromkeys(k for k in (*base.aliases, f.key, *f.aliases) if k != base.key)
        )
        w = replace(
            base,
            last_seen_ms=now_ms,
            level=max(base.level, f.level, key=RANK.__getitem__),
            evidence=_merge_evidence(f.evidence, base.evidence),
            summary=f.summary,
            aliases=aliases,
            rule=f.rule if f.rule == "fusion" else base.rule,
        )
        current[w.warning_id] = w
        seen.add(w.warning_id)
        for k in (f.key, *f.aliases):
            by_key.setdefault(k, w)
    updated: list[Warning] = []
    cleared: list[Warning] = []
    olds = {w.warning_id: w for w in by_key.values() if w.status in OPEN_STATUSES}
    new_ids = {w.warning_id for w in new}
    for wid, old in sorted(olds.items()):
        if wid in new_ids:
            continue
        w = current.get(wid, old)
        if wid not in seen and now_ms - w.last_seen_ms >= cfg.hysteresis_s * 1000:
            cleared.append(replace(w, status="cleared"))
            continue
        esc = escalate(w, now_ms, cfg, ancestors)
        if wid in seen or esc is not w:
            updated.append(esc)
    return new, updated, cleared


def escalate(
    w: Warning,
    now_ms: int,
    cfg: RuleConfig,
    ancestors: Callable[[str], Sequence[str]] | None,
) -> Warning:
    """Escalated one step per full ``escalate_after_s`` while unacknowledged (pure)."""
    if w.status != "new" or ancestors is None or cfg.escalate_after_s <= 0:
        return w
    chain = list(ancestors(w.area_id))[1:]
    if not chain:
        return w
    steps = min(len(chain), (now_ms - w.first_seen_ms) // (cfg.escalate_after_s * 1000))
    if steps <= 0:
        return w
    target = chain[int(steps) - 1]
    if target == w.escalated_to:
        return w
    return replace(w, escalated_to=target, escalated_ms=now_ms)


def live_counts(
    warnings: Iterable[Warning], ancestors: Callable[[str], Sequence[str]]
) -> dict[str, dict[str, int]]:
    """area → {level: open warnings}, each warning counted at its area and every ancestor."""
    out: dict[str, dict[str, int]] = {}
    for w in warnings:
        if w.status not in OPEN_STATUSES:
            continue
        for a in ancestors(w.area_id):
            by = out.setdefault(a, {})
            by[w.level] = by.get(w.level, 0) + 1
    return out
