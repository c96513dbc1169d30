"""Command and dispatch (指挥调度): the units incidents go to and the standard flows.

``units``: the departments and bodies incidents are dispatched to (公安, 消防, 城管, …),
imported from a CSV like the roster and seeded for the demo city. ``flows``: one standard
processing flow per category (and severity where needed) — each stage's deadline, the unit
type responsible, what must be recorded to leave it, and the escalation path — read from
a TOML file the city edits (``[dispatch] flows``), validated at start.
"""
