"""Small flow files for tests: every category gets a severity-1 flow (so the file is
valid), with stage hours a test names; tests derive their expectations from these hours.

``doc(flow(...), ...)`` is a parsed flow document (for ``flows.parse_flows``);
``write(path, doc)`` writes it as TOML and ``settings_for(path)`` names it in settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipelines.settings import DispatchSettings, Settings
from pipelines.spine.events import CATEGORIES

STAGES = ("accept", "dispatch", "handle", "verify", "close")
DEFAULT_HOURS = (1.0, 2.0, 10.0, 4.0, 3.0)  # 20 h in all


def flow(
    fid: str,
    category: str,
    hours: tuple[float, float, float, float, float] = DEFAULT_HOURS,
    min_severity: int = 1,
    name_zh: str | None = None,
    name_en: str | None = None,
) -> dict[str, Any]:
    return {
        "id": fid,
        "category": category,
        "name_zh": name_zh or fid.replace("_", "") + "流程",
        "name_en": name_en or fid.replace("_", " ") + " flow",
        "min_severity": min_severity,
        "escalation": ["grid", "community", "street", "district"],
        "escalate_after_hours": 4.0,
        "stages": {
            s: {"hours": float(h), "unit": "street"} for s, h in zip(STAGES, hours, strict=True)
        },
    }


def doc(*flows: dict[str, Any]) -> dict[str, Any]:
    """The flows given, plus a default severity-1 flow for every category they leave out."""
    covered = {f["category"] for f in flows if f["min_severity"] == 1}
    rest = [flow(f"t_{c}", c) for c in CATEGORIES if c not in covered]
    return {"flow": [*flows, *rest]}


def to_toml(d: dict[str, Any]) -> str:
    out: list[str] = []
    for f in d["flow"]:
        out.append("[[flow]]")
        for k in ("id", "category", "name_zh", "name_en"):
            out.append(f'{k} = "{f[k]}"')
        out.append(f"min_severity = {f['min_severity']}")
        out.append("escalation = [" + ", ".join(f'"{x}"' for x in f["escalation"]) + "]")
        out.append(f"escalate_after_hours = {f['escalate_after_hours']}")
        for s, spec in f["stages"].items():
            out += [f"[flow.stages.{s}]", f"hours = {spec['hours']}", f'unit = "{spec["unit"]}"']
        out.append("")
    return "\n".join(out)


def write(path: Path, d: dict[str, Any]) -> Path:
    path.write_text(to_toml(d), encoding="utf-8")
    return path


def settings_for(path: Path, base: Settings | None = None) -> Settings:
    base = base or Settings()
    return dataclasses.replace(base, dispatch=DispatchSettings(flows=str(path)))
