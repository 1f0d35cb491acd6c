"""contamination: train rows sharing an n-gram with any registered eval suite item are removed."""

from __future__ import annotations

from services.curation.checks.context import CheckContext, drop
from services.curation.rows import Row


def contamination(c: CheckContext, train: list[Row], *, record: bool = True) -> list[Row]:
    n = c.policy.contamination_ngram
    index = c.index
    bad = set()
    if len(index):
        for i, row in enumerate(train):
            hit = index.match(row.full_text())
            if hit is not None:
                bad.add(i)
                c.audit.flag(
                    "contamination",
                    row,
                    f"row {row.number}: shares a {n}-gram with eval suite {hit.suite!r} item "
                    f"{hit.item!r} (removed)",
                )
    if record:
        names = ", ".join(s.name for s in c.suites) or "no suites registered"
        c.audit.fraction(
            "contamination",
            len(bad),
            len(train),
            c.policy.max_contaminated_fraction,
            f"{len(bad)} rows removed; {n}-grams checked against {names}",
        )
    return drop(train, bad)
