"""Who may see what: one table, role × kind of data, read by every check and every test.

The table is the written policy (the README's "Accounts, scope and audit" shows the same
table). Every kind is bounded by the role's area scope as well: ``may(role, kind)`` says
whether the role may see that kind of data *at all*; the area check
(:func:`pipelines.access.accounts.scope_allows`) says where.

In command-centre terms:

* city leaders see the whole city in aggregate (counts, KPIs, maps, coverage), incidents,
  warnings and scorecards, never an individual grid worker's position, name or track;
* only the district and street command centres, who dispatch and supervise workers, see
  individual workers (live positions and ids, names, tracks) and act on warnings;
* supervision staff read scorecards and export them (and the aggregates behind them);
* the administrator manages accounts and reads the audit log, nothing else;
* a wall screen is a read-only kiosk of aggregates.

Pages are bound to kinds in :data:`PAGES`: a role may open a page when it may see the
page's kind; a kiosk role (the wall) opens kiosk pages only.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = (
    "city_leader",
    "district_commander",
    "street_operator",
    "supervisor",
    "admin",
    "wall",
)

KINDS: dict[str, str] = {
    "aggregates": "counts, KPIs, trends, coverage, clusters and the maps of an area",
    "positions": "live positions and ids of individual grid workers",
    "names": "names of grid workers and what each one did (activity, work log)",
    "tracks": "a grid worker's track: replay and CSV export",
    "incidents": "individual incidents: ids, locations, details, timelines",
    "warnings": "the early-warning list, its details and evidence",
    "warning_actions": "acknowledge, dispatch, resolve or dismiss a warning",
    "incident_actions": (
        "accept, dispatch, return, escalate, resolve, verify, close or merge an incident"
    ),
    "scorecards": "scorecards per area and per worker, and the incidents behind a number",
    "exports": "scorecard exports (XLSX, CSV, PDF)",
    "audit": "the audit log",
    "users": "accounts: create, change role or scope, disable, wall tokens",
}

_C = frozenset  # a short name for the table below

# role → the kinds it may see (inside its scope). The one source of truth.
TABLE: dict[str, frozenset[str]] = {
    "city_leader": _C({"aggregates", "incidents", "warnings", "scorecards", "exports"}),
    "district_commander": _C(
        {
            "aggregates",
            "positions",
            "names",
            "tracks",
            "incidents",
            "warnings",
            "warning_actions",
            "incident_actions",
            "scorecards",
            "exports",
        }
    ),
    "street_operator": _C(
        {
            "aggregates",
            "positions",
            "names",
            "tracks",
            "incidents",
            "warnings",
            "warning_actions",
            "incident_actions",
            "scorecards",
        }
    ),
    "supervisor": _C({"aggregates", "incidents", "warnings", "scorecards", "exports"}),
    "admin": _C({"audit", "users"}),
    "wall": _C({"aggregates"}),
}

# Roles that are a screen, not a person: they open kiosk pages only.
KIOSK_ROLES = frozenset({"wall"})


class UnknownKind(KeyError):
    """A kind that is not in :data:`KINDS` (a typo in a check must not silently deny)."""


def may(role: str | None, kind: str) -> bool:
    """May ``role`` see ``kind`` (inside its scope)? Unknown roles may see nothing."""
    if kind not in KINDS:
        raise UnknownKind(kind)
    return role is not None and kind in TABLE.get(role, frozenset())


def roles_for(kind: str) -> frozenset[str]:
    """The roles that may see ``kind``."""
    return frozenset(r for r in ROLES if may(r, kind))


# ------------------------------------------------------------------ pages


@dataclass(frozen=True)
class Page:
    name: str
    paths: tuple[str, ...]  # the path itself, or a prefix when it ends with "/" (not "/")
    kind: str  # the kind of data the page is about
    kiosk: bool = False  # a kiosk role may open it

    def matches(self, path: str) -> bool:
        return any(
            path == p or (len(p) > 1 and p.endswith("/") and path.startswith(p)) for p in self.paths
        )


PAGES: tuple[Page, ...] = (
    Page("panorama", ("/", "/area/"), "aggregates"),
    Page("work", ("/work", "/work/"), "aggregates"),
    Page("warnings", ("/warnings", "/warnings/"), "warnings"),
    Page("incidents", ("/incidents", "/incidents/"), "incidents"),
    Page("assessment", ("/assessment", "/assessment/"), "scorecards"),
    Page("wall", ("/wall", "/wall/"), "aggregates", kiosk=True),
    Page("audit", ("/admin/audit",), "audit"),
)
PAGE = {p.name: p for p in PAGES}


def page_of(path: str) -> Page | None:
    """The page a URL path belongs to, or None (an unknown path: the "not found" page)."""
    for page in PAGES:
        if page.matches(path):
            return page
    return None


def may_open(role: str | None, page: Page | str) -> bool:
    """May ``role`` open the page (named, or a :class:`Page`)?"""
    p = PAGE[page] if isinstance(page, str) else page
    if role in KIOSK_ROLES and not p.kiosk:
        return False
    return may(role, p.kind)


def home(role: str | None) -> str:
    """Where a role lands after signing in: the first page it may open."""
    for page in PAGES:
        if may_open(role, page):
            return page.paths[0]
    return "/login"
