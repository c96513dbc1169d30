"""The rule registry and how the engine runs it.

* ``RULES`` is the registry: ``name → rule(inputs, cfg, now_ms) -> list[Finding]``. A rule
  is pure: it sees only the frames in :class:`RuleInputs` (prepared by the engine), the
  settings and the clock value. Adding a rule = one function + its settings + a test row.
* ``POST`` holds post-processing steps over all findings (``fusion``: a report and a video
  alert of the same grid, compatible category/label and close in time are one situation).
* Rules over days (``recurrence``) run every ``recurrence_every_s``; :func:`run_rules`
  takes which rules are due and :func:`post_process` carries the others' last findings."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from pipelines.warnings.model import Finding, Rule, RuleConfig, RuleInputs
from pipelines.warnings.rules.fusion import fuse
from pipelines.warnings.rules.patrol import rule_idle, rule_left_grid, rule_patrol_gap
from pipelines.warnings.rules.reports import rule_recurrence, rule_surge, rule_threshold
from pipelines.warnings.rules.sla import rule_sla
from pipelines.warnings.rules.system import rule_system
from pipelines.warnings.rules.video import rule_video_cluster

RULES: dict[str, Rule] = {
    "threshold": rule_threshold,
    "surge": rule_surge,
    "sla": rule_sla,
    "patrol_gap": rule_patrol_gap,
    "video_cluster": rule_video_cluster,
    "recurrence": rule_recurrence,
    "left_grid": rule_left_grid,
    "idle": rule_idle,
    "system": rule_system,
}


POST: dict[str, Callable[[list[Finding], RuleInputs, RuleConfig, int], list[Finding]]] = {
    "fusion": fuse,
}


def run_rules(
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    rules: Mapping[str, Rule],
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[Finding]], dict[str, float]]:
    """Run the given rules: (findings per rule, seconds per rule)."""
    found: dict[str, list[Finding]] = {}
    timings: dict[str, float] = {}
    for name, rule in rules.items():
        t0 = timer()
        found[name] = rule(inputs, cfg, now_ms)
        timings[name] = timer() - t0
    return found, timings


def post_process(
    findings: list[Finding],
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[list[Finding], dict[str, float]]:
    """The post steps (fusion) over every rule's findings; (findings, seconds per step)."""
    timings: dict[str, float] = {}
    for name, step in POST.items():
        t0 = timer()
        findings = step(findings, inputs, cfg, now_ms)
        timings[name] = timer() - t0
    return findings, timings


def evaluate(
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    rules: Mapping[str, Rule] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[list[Finding], dict[str, float]]:
    """Run every rule, then the post steps; (findings, seconds per rule/step)."""
    found, timings = run_rules(inputs, cfg, now_ms, RULES if rules is None else rules, timer)
    findings, post = post_process(
        [f for fs in found.values() for f in fs], inputs, cfg, now_ms, timer
    )
    return findings, {**timings, **post}
