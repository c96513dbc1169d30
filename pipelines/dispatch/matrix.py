"""Who may do what to an incident: the role × scope × stage matrix, one table.

An action moves an incident from one of the lifecycle statuses in :data:`FROM` by writing
the lifecycle step :data:`STEP_OF` (``verify_fail`` returns it; ``merge`` closes it as a
duplicate of another). A role may take the actions of :data:`ROLE_ACTIONS` on incidents
inside its area scope whose current level is one of :data:`ROLE_LEVELS` (an incident
escalated to the district belongs to the district's command centre); a grid worker acts
through the gateway, only on the tasks assigned to it. What an action must carry is
:data:`RECORDS` plus the ``requires`` of the flow stage it ends. The README's "Command and
dispatch" section shows this table; ``tests/unit/test_dispatch_matrix.py`` checks every cell.
"""

from __future__ import annotations

from pipelines.spine.events import LEVELS

ACTIONS = (
    "accept",  # 受理
    "dispatch",  # 派遣
    "handle",  # 处置 (work started)
    "return",  # 退回
    "escalate",  # 上报升级
    "resolve",  # 办结
    "verify_pass",  # 核查通过
    "verify_fail",  # 核查不通过 → returned
    "close",  # 结案
    "merge",  # 合并重复 (closed as a duplicate of another incident)
)
# Every status but closed.
OPEN = frozenset(
    {
        "reported",
        "accepted",
        "dispatched",
        "handling",
        "resolved",
        "verified",
        "returned",
        "escalated",
    }
)

# action → the statuses it may be taken from
FROM: dict[str, frozenset[str]] = {
    "accept": frozenset({"reported", "escalated"}),
    "dispatch": frozenset({"accepted", "returned"}),
    "handle": frozenset({"dispatched"}),
    "return": frozenset({"reported", "accepted", "dispatched", "handling"}),
    "escalate": frozenset({"reported", "accepted", "dispatched", "handling"}),
    "resolve": frozenset({"handling"}),
    "verify_pass": frozenset({"resolved"}),
    "verify_fail": frozenset({"resolved"}),
    "close": frozenset({"verified"}),
    "merge": OPEN,
}
# action → the lifecycle step it writes
STEP_OF: dict[str, str] = {
    "accept": "accepted",
    "dispatch": "dispatched",
    "handle": "handling",
    "return": "returned",
    "escalate": "escalated",
    "resolve": "resolved",
    "verify_pass": "verified",
    "verify_fail": "returned",
    "close": "closed",
    "merge": "closed",
}
# action → the flow stage it ends (its ``requires`` apply); None: it ends no stage
ENDS_STAGE: dict[str, str | None] = {
    "accept": "accept",
    "dispatch": "dispatch",
    "handle": None,
    "return": None,
    "escalate": None,
    "resolve": "handle",
    "verify_pass": "verify",
    "verify_fail": None,
    "close": "close",
    "merge": None,
}
GRID_WORKER = "grid_worker"  # a phone acting through the gateway (not an account role)
_ALL = frozenset(ACTIONS)
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "street_operator": _ALL,
    "district_commander": _ALL,
    GRID_WORKER: frozenset({"handle", "resolve", "verify_pass", "verify_fail"}),
}
ROLE_LEVELS: dict[str, tuple[str, ...]] = {
    "street_operator": ("grid", "community", "street"),
    "district_commander": LEVELS,
    GRID_WORKER: LEVELS,  # bound to its own tasks instead
}
# What each action must carry besides the flow stage's ``requires`` ("target": a unit or a
# worker to dispatch to).
RECORDS: dict[str, tuple[str, ...]] = {
    "accept": (),
    "dispatch": ("target",),
    "handle": (),
    "return": ("reason",),
    "escalate": ("reason",),
    "resolve": (),
    "verify_pass": (),
    "verify_fail": ("reason",),
    "close": (),
    "merge": ("duplicate_of",),
}
# A flow requirement → the request field that satisfies it.
REQUIREMENT_FIELD: dict[str, str] = {
    "note": "note",
    "photo": "photo_url",
    "onsite_check": "onsite_by",
    "level": "level",
}


def may_act(role: str | None, action: str) -> bool:
    return role is not None and action in ROLE_ACTIONS.get(role, frozenset())


def acting_roles() -> frozenset[str]:
    """The account roles that may take any action (the gateway's worker is not one)."""
    return frozenset(r for r, acts in ROLE_ACTIONS.items() if acts and r != GRID_WORKER)


def statuses_for(action: str) -> frozenset[str]:
    return FROM[action]
