"""empty-completions: rows whose completion (or any response) is empty or whitespace only are dropped."""

from __future__ import annotations

from services.curation.checks.context import CheckContext, drop
from services.curation.rows import Row


def empty_completions(c: CheckContext, rows: list[Row]) -> list[Row]:
    bad = set()
    for i, row in enumerate(rows):
        for path, text in row.response_texts():
            if not text.strip():
                bad.add(i)
                c.audit.flag(
                    "empty-completions",
                    row,
                    f"row {row.number}, field {path!r}: empty or whitespace only (dropped)",
                    field=path,
                )
                break
    c.audit.fraction(
        "empty-completions",
        len(bad),
        len(rows),
        c.policy.max_empty_fraction,
        f"{len(bad)} rows with an empty completion dropped",
    )
    return drop(rows, bad)
