"""Open311 services: our report categories, their attributes (the service definitions)
and the mapping of our lifecycle to Open311 status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.spine.events import CATEGORIES

# ------------------------------------------------------------------ services (our categories)

# code → (zh-CN name, English name, group (zh-CN), keywords)
SERVICES: dict[str, tuple[str, str, str, str]] = {
    "dispute": ("矛盾纠纷", "Disputes", "平安建设", "纠纷,邻里,物业,劳资,dispute"),
    "safety_hazard": ("安全隐患", "Safety hazards", "安全生产", "隐患,燃气,电气,hazard"),
    "public_order": ("治安", "Public order", "平安建设", "治安,斗殴,盗窃,public order"),
    "sanitation": ("环境卫生", "Sanitation", "城市管理", "垃圾,卫生,污水,sanitation"),
    "city_management": ("城市管理", "City management", "城市管理", "违停,占道,设施,city"),
    "livelihood": ("民生服务", "Livelihood services", "民生服务", "民生,救助,服务,livelihood"),
    "fire": ("消防", "Fire", "安全生产", "火灾,烟雾,消防,fire"),
    "other": ("其他", "Other", "民生服务", "其他,other"),
}
assert set(SERVICES) == set(CATEGORIES)

SEVERITY_VALUES = [
    ("1", "轻微 minor"),
    ("2", "一般 moderate"),
    ("3", "较重 serious"),
    ("4", "严重 critical"),
]
HAZARDS = [
    ("gas", "燃气 gas"),
    ("electric", "电气 electrical"),
    ("structure", "建筑结构 structure"),
    ("other", "其他 other"),
]


@dataclass(frozen=True)
class Attribute:
    code: str
    description: str
    datatype: str
    required: bool
    order: int
    values: tuple[tuple[str, str], ...] = ()
    datatype_description: str | None = None


def attributes(code: str) -> list[Attribute]:
    """The attributes of a service (the spec's service definition)."""
    out = [
        Attribute(
            "severity",
            "严重程度 How serious is it? (default: 一般 moderate)",
            "singlevaluelist",
            False,
            1,
            tuple(SEVERITY_VALUES),
        )
    ]
    if code == "fire":
        out.append(
            Attribute(
                "people_trapped",
                "是否有人员被困 Are people trapped? (yes: critical)",
                "singlevaluelist",
                True,
                2,
                (("yes", "是 yes"), ("no", "否 no")),
            )
        )
    if code == "safety_hazard":
        out.append(
            Attribute(
                "hazard_type",
                "隐患类型 Kind of hazard",
                "singlevaluelist",
                False,
                2,
                tuple(HAZARDS),
            )
        )
    return out


# ------------------------------------------------------------------ lifecycle → Open311 status

STATUS_NOTES: dict[str, str] = {
    "received": "已接收，正在受理 (received, being registered)",
    "reported": "已上报，待受理 (reported)",
    "accepted": "已受理 (accepted)",
    "dispatched": "已派遣 (dispatched)",
    "handling": "处置中 (handling)",
    "escalated": "已上报升级 (escalated)",
    "returned": "退回重办 (returned for rework)",
    "resolved": "已办结，待核查 (resolved, awaiting verification)",
    "verified": "已核查，待结案 (verified, awaiting closure)",
    "closed": "已结案 (closed)",
}


def open311_status(step: str) -> tuple[str, str]:
    """Our lifecycle step → (Open311 status, status_notes). Only closure (结案) closes a
    request: a resolved incident can still be returned by its verification."""
    return ("closed" if step == "closed" else "open", STATUS_NOTES.get(step, step))


def _services_body() -> list[dict[str, Any]]:
    return [
        {
            "service_code": code,
            "service_name": zh,
            "description": f"{zh} {en}",
            "metadata": True,
            "type": "realtime",
            "keywords": kw,
            "group": group,
        }
        for code, (zh, en, group, kw) in SERVICES.items()
    ]


def _definition(code: str) -> dict[str, Any]:
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": a.code,
                "datatype": a.datatype,
                "required": a.required,
                "datatype_description": a.datatype_description,
                "order": a.order,
                "description": a.description,
                "values": [{"key": k, "name": n} for k, n in a.values],
            }
            for a in attributes(code)
        ],
    }
