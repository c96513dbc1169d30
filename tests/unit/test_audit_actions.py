"""Every action the platform writes to the audit log is in the registry
(``audit.ACTIONS``) and has a word in both languages on the audit page: found in the code
(every ``audit.append`` / ``audit.record`` / ``….audit(…)`` / ``accounts._update`` /
``csvimport.write_register`` call),
so an action added anywhere is covered without editing this test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from dashboard.i18n import CATALOG
from pipelines.access import audit
from pipelines.dispatch import matrix
from pipelines.warnings.store import ACTIONS as WARNING_ACTIONS

ROOT = Path(__file__).resolve().parents[2]
# Functions that hand their own ``action`` parameter on (their callers are checked).
PASS_THROUGH = {"record", "audit", "_update", "write_register"}
# An action built from another registry: its literal prefix → that registry's actions.
FAMILIES = {"warning_": set(WARNING_ACTIONS), "incident.": set(matrix.ACTIONS)}


def _action_args(call: ast.Call, in_audit: bool) -> list[ast.expr]:
    """The expressions a call passes as an audit action (none: not an audit call);
    ``in_audit``: the call is in ``pipelines/access/audit.py`` (``append`` unqualified)."""
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
    if in_audit and isinstance(f, ast.Name):
        owner = "audit"
    kw = [k.value for k in call.keywords if k.arg == "action"]
    if (owner == "audit" and name in ("append", "record")) or name == "write_register":
        return kw
    if name == "audit" and isinstance(f, ast.Attribute) and call.args:  # the guard's method
        return [call.args[0]]
    if name == "_update" and len(call.args) >= 4:
        return [call.args[3]]
    return []


def written_actions() -> tuple[set[str], set[str], list[str]]:
    """(literal actions, f-string prefixes, places passing something else on)."""
    literal: set[str] = set()
    prefixes: set[str] = set()
    other: list[str] = []
    for path in sorted([*ROOT.glob("pipelines/**/*.py"), *ROOT.glob("dashboard/**/*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        in_audit = path == ROOT / "pipelines/access/audit.py"
        if in_audit:  # the key marker's row is a dict of fields: {"action": MARKER, …}
            for d in ast.walk(tree):
                if isinstance(d, ast.Dict):
                    for k, v in zip(d.keys, d.values, strict=True):
                        if (
                            isinstance(k, ast.Constant)
                            and k.value == "action"
                            and isinstance(v, ast.Name)
                            and v.id.isupper()
                        ):
                            literal.add(getattr(audit, v.id))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                for arg in _action_args(node, in_audit):
                    where = f"{path.relative_to(ROOT)}:{node.lineno} in {fn.name}"
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        literal.add(arg.value)
                    elif in_audit and isinstance(arg, ast.Name) and arg.id.isupper():
                        literal.add(getattr(audit, arg.id))  # a constant of the module
                    elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                        prefixes.add(str(arg.values[0].value))
                    elif fn.name not in PASS_THROUGH:
                        other.append(where)
    return literal, prefixes, other


def test_every_action_written_is_in_the_registry() -> None:
    literal, prefixes, other = written_actions()
    assert len(literal) >= 20  # the scan finds the calls
    assert not other, f"actions the scan cannot read: {other}"
    assert literal <= set(audit.ACTIONS), sorted(literal - set(audit.ACTIONS))
    # and nothing in the registry that nobody writes
    family = {a for a in audit.ACTIONS if any(a.startswith(p) for p in FAMILIES)}
    assert set(audit.ACTIONS) - family <= literal, sorted(set(audit.ACTIONS) - family - literal)
    assert prefixes == set(FAMILIES), prefixes
    for prefix, members in FAMILIES.items():
        registered = {a[len(prefix) :] for a in audit.ACTIONS if a.startswith(prefix)}
        assert members <= registered, (prefix, sorted(members - registered))
        # what else carries the prefix is written literally (``incident.refused``)
        assert registered - members <= {a[len(prefix) :] for a in literal if a.startswith(prefix)}


@pytest.mark.parametrize("action", sorted(audit.ACTIONS))
def test_every_action_has_a_word_in_both_languages(action: str) -> None:
    zh, en = CATALOG[f"audit.action.{action}"]
    assert re.search(r"[\u4e00-\u9fff]", zh), zh  # Chinese first
    assert en and en.isascii() and not re.search(r"[\u4e00-\u9fff]", en), en
    assert audit.ACTIONS[action]  # and what it means


def test_the_audit_page_has_no_word_for_an_action_nobody_writes() -> None:
    words = {k.removeprefix("audit.action.") for k in CATALOG if k.startswith("audit.action.")}
    assert words == set(audit.ACTIONS)
