"""Importing a register from a CSV file (the roster, the units): read by line, all or nothing.

:func:`read_rows` reads a header and the lines under it and reports what is wrong with
the file's shape (no header, missing columns, a line with too many or too few fields)
by line number; each register checks its own values. :func:`write_register` writes the
valid rows in one transaction — replacing the whole register or adding and updating by
key — and audits the import.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table

from pipelines.access import audit
from pipelines.spine import store


@dataclass(frozen=True)
class RowError:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.message}"


def read_rows(
    text: str, columns: Sequence[str], required: Sequence[str]
) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """``(line number, {column: stripped value})`` per non-blank line, and shape errors.

    The header is required and its columns may come in any order (case-insensitive);
    ``columns`` not in the header are left out of each row. An Excel UTF-8 BOM is skipped.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return [], [RowError(1, "-", "empty file")]
    missing = [c for c in required if c not in header]
    if missing:
        return [], [RowError(1, ",".join(missing), "missing column")]
    col = {c: header.index(c) for c in columns if c in header}
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            errors.append(RowError(line, "-", f"{len(values)} fields, expected {len(header)}"))
            continue
        rows.append((line, {c: values[i].strip() for c, i in col.items()}))
    if not rows and not errors:
        errors.append(RowError(1, "-", "no rows"))
    return rows, errors


def write_register(
    engine: Engine,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
    replace: bool,
    actor: str,
    action: str,
    now_ms: int,
) -> int:
    """Write the rows in one transaction (all or nothing) and audit the import.

    ``replace``: the file is the whole register (rows not in it are removed); otherwise
    rows are added or updated by ``key``.
    """
    with engine.begin() as conn:
        if replace:
            conn.execute(table.delete())
            store.insert_ignore(conn, table, rows)
        else:
            store.upsert(conn, table, rows, [key])
    audit.record(
        engine,
        actor=actor,
        action=action,
        target=table.name,
        detail={"rows": len(rows), "replace": replace},
        now_ms=now_ms,
    )
    return len(rows)
