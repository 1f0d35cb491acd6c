"""boilerplate: a teacher's stock phrases ("As an AI language model"), flagged, counted and,
as the policy says, dropped."""

from __future__ import annotations

import re
from collections import Counter

from services.curation.checks.context import CheckContext, drop
from services.curation.rows import Row


def boilerplate(c: CheckContext, rows: list[Row]) -> list[Row]:
    patterns = [re.compile(p, re.IGNORECASE) for p in c.policy.boilerplate_patterns]
    flagged = set()
    hits: Counter[str] = Counter()
    for i, row in enumerate(rows):
        for path, text in row.response_texts():
            found = next((p for p in patterns if p.search(text)), None)
            if found is not None:
                flagged.add(i)
                hits[found.pattern] += 1
                row.flags.add("boilerplate")
                c.audit.flag(
                    "boilerplate",
                    row,
                    f"row {row.number}, field {path!r}: teacher boilerplate "
                    f"/{found.pattern}/" + (" (dropped)" if c.policy.drop_boilerplate else ""),
                    field=path,
                )
                break
    detail = ", ".join(f"/{p}/ {n}" for p, n in hits.most_common()) or "none found"
    c.audit.fraction(
        "boilerplate",
        len(flagged),
        len(rows),
        c.policy.max_boilerplate_fraction,
        f"{len(flagged)} rows: {detail}",
    )
    return drop(rows, flagged) if c.policy.drop_boilerplate else rows
