"""Standard processing flows (标准处置流程): one definition of "on time" per kind of event.

A flow applies to one category from a minimum severity up (the flow with the highest
``min_severity`` not above an incident's severity wins). It has the five stages an
incident passes after its report, each ending at a lifecycle step:

=========  =========================  ===================
stage      runs from … to             lifecycle step
=========  =========================  ===================
accept     reported → accepted        受理
dispatch   accepted → dispatched      派遣
handle     dispatched → resolved      处置 → 办结
verify     resolved → verified        核查
close      verified → closed          结案
=========  =========================  ===================

For each stage: its deadline in hours, the unit type responsible (a code of
:data:`pipelines.dispatch.units.UNIT_TYPES`) and what must be recorded to leave it
(:data:`REQUIREMENTS`). Each flow has an escalation path (levels from
``events.LEVELS``, lowest first) and how long an incident may sit at one level before it
is due to move up.

The shipped defaults (``default_flows.toml`` beside this module) cover every category;
a city copies and edits the file and names it in ``[dispatch] flows``. :func:`load_flows`
checks the whole file and reports every problem with where it is, so a bad edit stops
the start with one readable list instead of a half-applied flow.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.dispatch.units import UNIT_TYPES
from pipelines.settings import Settings
from pipelines.spine.events import CATEGORIES, LEVELS, SEVERITIES

HOUR_MS = 3_600_000
DEFAULT_FILE = Path(__file__).with_name("default_flows.toml")

# Stage → the lifecycle step that ends it, in order.
STAGES: dict[str, str] = {
    "accept": "accepted",
    "dispatch": "dispatched",
    "handle": "resolved",
    "verify": "verified",
    "close": "closed",
}
# What an action may be required to record before an incident leaves a stage.
REQUIREMENTS: dict[str, tuple[str, str]] = {
    "note": ("处置说明", "a note on what was done"),
    "photo": ("现场照片链接", "a link to a photo"),
    "onsite_check": ("网格员现场核查", "a grid worker's on-site check"),
    "level": ("办结层级", "the level at which it was resolved"),
}
# The stage an incident is in, by its current lifecycle step (a closed one is in none). An
# escalated incident waits to be accepted at its new level; a returned one to be dispatched
# again (or accepted again, where it was returned before being accepted).
STAGE_OF_STEP: dict[str, str | None] = {
    "reported": "accept",
    "escalated": "accept",
    "accepted": "dispatch",
    "returned": "dispatch",
    "dispatched": "handle",
    "handling": "handle",
    "resolved": "verify",
    "verified": "close",
    "closed": None,
}
MAX_HOURS = 24.0 * 90  # a stage deadline beyond 90 days is a typo, not a flow

_FLOW_KEYS = {"id", "category", "name_zh", "name_en", "min_severity", "escalation"}
_FLOW_KEYS |= {"escalate_after_hours", "stages"}
_STAGE_KEYS = {"hours", "unit", "requires"}


class FlowError(ValueError):
    """The flow file is invalid; ``problems`` lists every problem with where it is."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class Stage:
    name: str
    hours: float
    unit: str
    requires: tuple[str, ...]

    @property
    def ends_at(self) -> str:
        """The lifecycle step that ends this stage."""
        return STAGES[self.name]


@dataclass(frozen=True)
class Flow:
    id: str
    category: str
    name_zh: str
    name_en: str
    min_severity: int
    escalation: tuple[str, ...]
    escalate_after_hours: float
    stages: tuple[Stage, ...]  # in STAGES order

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def total_hours(self) -> float:
        """Report → closure: the sum of the stage deadlines."""
        return sum(s.hours for s in self.stages)

    def hours_until(self, step: str) -> float:
        """Hours from the report until ``step`` is due (the stages up to the one it ends)."""
        total = 0.0
        for s in self.stages:
            total += s.hours
            if s.ends_at == step:
                return total
        raise KeyError(step)

    def stage_of(self, status: str) -> Stage | None:
        """The stage an incident with this lifecycle status is in (None once closed)."""
        name = STAGE_OF_STEP.get(status)
        return None if name is None else self.stage(name)

    def stage_due_ms(
        self, status: str, entered_ms: int, override_ms: int | None = None
    ) -> int | None:
        """When the current stage is due: ``entered_ms`` (when the incident entered the
        stage) plus the stage's hours, or a deadline set by the dispatching action
        (``override_ms``, for the handle stage only). None once closed."""
        stage = self.stage_of(status)
        if stage is None:
            return None
        if stage.name == "handle" and override_ms is not None:
            return int(override_ms)
        return int(entered_ms + stage.hours * HOUR_MS)

    def closure_due_ms(self, reported_ms: int) -> int:
        """When the incident is due to be closed: its report plus every stage's hours."""
        return int(reported_ms + self.total_hours * HOUR_MS)

    def next_level(self, level: str) -> str | None:
        """The level an incident escalates to from ``level`` (None at the top)."""
        if level not in self.escalation:
            return self.escalation[0] if self.escalation else None
        i = self.escalation.index(level)
        return self.escalation[i + 1] if i + 1 < len(self.escalation) else None


@dataclass(frozen=True)
class Flows:
    flows: tuple[Flow, ...]
    source: str

    def select(self, category: str, severity: int) -> Flow:
        """The flow for an incident: its category's, with the highest min_severity ≤ severity."""
        best: Flow | None = None
        for f in self.flows:
            fits = f.category == category and f.min_severity <= severity
            if fits and (best is None or f.min_severity > best.min_severity):
                best = f
        if best is None:  # load_flows guarantees a severity-1 flow for every category
            raise KeyError(f"no flow for {category!r}")
        return best

    def by_id(self, flow_id: str) -> Flow:
        for f in self.flows:
            if f.id == flow_id:
                return f
        raise KeyError(flow_id)


def flows_for(settings: Settings) -> Flows:
    """The flows a deployment runs on (``[dispatch] flows``, or the shipped defaults),
    read once per file version (the file is checked at start, so this does not fail on a
    running system unless the file is broken while it runs)."""
    path = settings.path(settings.dispatch.flows) if settings.dispatch.flows else DEFAULT_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return _flows_cached(str(path), mtime)


@functools.lru_cache(maxsize=8)
def _flows_cached(path: str, _mtime: int) -> Flows:
    return load_flows(path)


def load_flows(path: str | Path | None = None) -> Flows:
    """Read and check a flow file (``None`` or ``""``: the shipped defaults)."""
    file = Path(path) if path else DEFAULT_FILE
    source = str(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlowError(source, ["file not found"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FlowError(source, [f"not valid TOML: {exc}"]) from None
    return parse_flows(data, source)


def parse_flows(data: dict[str, Any], source: str = "<flows>") -> Flows:
    """Check a parsed flow document; raise :class:`FlowError` listing every problem."""
    problems: list[str] = []
    extra = set(data) - {"flow"}
    if extra:
        problems.append(f"unknown top-level keys {sorted(extra)} (only [[flow]] tables)")
    raw = data.get("flow", [])
    if not isinstance(raw, list) or not raw:
        raise FlowError(source, [*problems, "no [[flow]] tables"])
    flows: list[Flow] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw, start=1):
        where = f"flow #{i}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            where = f"flow {item['id']!r}"
        flow = _parse_flow(item, where, problems)
        if flow is None:
            continue
        key = f"{flow.category}/{flow.min_severity}"
        if flow.id in seen:
            problems.append(f"{where}: id used twice")
        if key in {f"{f.category}/{f.min_severity}" for f in flows}:
            problems.append(
                f"{where}: a second flow for {flow.category} from severity {flow.min_severity}"
            )
        seen[flow.id] = i
        flows.append(flow)
    # A flow refused above still names its category: report only what is really missing.
    covered = {
        item.get("category")
        for item in raw
        if isinstance(item, dict) and item.get("min_severity", 1) == 1
    }
    for category in CATEGORIES:
        if category not in covered:
            problems.append(f"category {category!r} has no flow from severity 1")
    if problems:
        raise FlowError(source, problems)
    return Flows(tuple(flows), source)


def _parse_flow(item: Any, where: str, problems: list[str]) -> Flow | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: not a table")
        return None
    start = len(problems)
    unknown = set(item) - _FLOW_KEYS
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    fid = item.get("id")
    if not isinstance(fid, str) or not fid.strip():
        problems.append(f"{where}: id is required")
    category = item.get("category")
    if category not in CATEGORIES:
        problems.append(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    names = [item.get("name_zh"), item.get("name_en")]
    if not all(isinstance(n, str) and n.strip() for n in names):
        problems.append(f"{where}: name_zh and name_en are required")
    sev = item.get("min_severity", 1)
    if isinstance(sev, bool) or sev not in SEVERITIES:
        problems.append(f"{where}: min_severity must be one of {SEVERITIES}")
    escalation = item.get("escalation", list(LEVELS))
    if (
        not isinstance(escalation, list)
        or not escalation
        or any(lvl not in LEVELS for lvl in escalation)
        or [LEVELS.index(lvl) for lvl in escalation]
        != sorted({LEVELS.index(x) for x in escalation})
    ):
        problems.append(
            f"{where}: escalation must list levels of {LEVELS}, lowest first, once each"
        )
    after = _hours(item.get("escalate_after_hours"), f"{where}: escalate_after_hours", problems)
    stages = _parse_stages(item.get("stages"), where, problems)
    if len(problems) > start:
        return None
    return Flow(
        id=str(fid),
        category=str(category),
        name_zh=str(names[0]),
        name_en=str(names[1]),
        min_severity=int(sev),
        escalation=tuple(escalation),
        escalate_after_hours=after,
        stages=stages,
    )


def _parse_stages(raw: Any, where: str, problems: list[str]) -> tuple[Stage, ...]:
    if not isinstance(raw, dict):
        problems.append(f"{where}: [stages] is required with {', '.join(STAGES)}")
        return ()
    unknown = set(raw) - set(STAGES)
    if unknown:
        problems.append(f"{where}: unknown stages {sorted(unknown)} (stages: {', '.join(STAGES)})")
    out: list[Stage] = []
    for name in STAGES:
        here = f"{where}: stage {name!r}"
        spec = raw.get(name)
        if not isinstance(spec, dict):
            problems.append(f"{here}: missing")
            continue
        unknown = set(spec) - _STAGE_KEYS
        if unknown:
            problems.append(f"{here}: unknown keys {sorted(unknown)}")
        hours = _hours(spec.get("hours"), f"{here}: hours", problems)
        unit = spec.get("unit")
        if unit not in UNIT_TYPES:
            problems.append(f"{here}: unit {unit!r} is not a unit type ({', '.join(UNIT_TYPES)})")
        requires = spec.get("requires", [])
        if not isinstance(requires, list) or any(r not in REQUIREMENTS for r in requires):
            problems.append(f"{here}: requires must list items of {', '.join(REQUIREMENTS)}")
            requires = []
        out.append(Stage(name, hours, str(unit), tuple(requires)))
    return tuple(out)


def _hours(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where} must be a number of hours")
        return 0.0
    if not math.isfinite(value) or not 0 < value <= MAX_HOURS:
        problems.append(f"{where} must be more than 0 and at most {MAX_HOURS:g}")
        return 0.0
    return float(value)
