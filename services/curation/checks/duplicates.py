"""duplicates: exact and near (MinHash, then a token diff) duplicate groups; one row of each kept,
held-out rows first."""

from __future__ import annotations

from services.curation.checks.context import CheckContext
from services.curation.dedupe import NearRule, exact_groups, near_groups
from services.curation.rows import Row


def duplicates(c: CheckContext, rows: list[Row]) -> list[Row]:
    # held-out rows first: when a train row duplicates a given test or validation row, that one is kept
    order = sorted(range(len(rows)), key=lambda i: (rows[i].split == "train", i))
    ordered = [rows[i] for i in order]
    texts = [row.full_text() for row in ordered]
    exact = exact_groups(texts)
    drop: set[int] = set()
    for group in exact:
        _report_group(c, "exact duplicate", ordered, group)
        drop.update(group[1:])
    remaining = [i for i in range(len(ordered)) if i not in drop]
    rule = NearRule(
        threshold=c.policy.near_duplicate_threshold,
        shingle_chars=c.policy.shingle_chars,
        max_edit_fraction=c.policy.near_duplicate_max_edit_fraction,
        num_perm=c.policy.minhash_permutations,
    )
    near = near_groups([texts[i] for i in remaining], rule)
    near_dropped = 0
    for group in near:
        members = [remaining[i] for i in group]
        _report_group(c, "near-duplicate", ordered, members)
        drop.update(members[1:])
        near_dropped += len(members) - 1
    exact_dropped = len(drop) - near_dropped
    c.audit.fraction(
        "duplicates",
        len(drop),
        len(rows),
        c.policy.max_duplicate_fraction,
        f"{len(exact)} exact groups ({exact_dropped} rows dropped), {len(near)} near-duplicate groups "
        f"(same fields, ≤ {rule.max_edit_fraction:.0%} of words edited; {near_dropped} rows dropped); "
        "one row of each kept",
    )
    return [row for i, row in enumerate(ordered) if i not in drop]


def _report_group(c: CheckContext, what: str, rows: list[Row], group: list[int]) -> None:
    kept = rows[group[0]]
    for i in group[1:]:
        row = rows[i]
        c.audit.flag(
            "duplicates",
            row,
            f"row {row.number}: {what} of row {kept.number}"
            + (f" in {kept.source}" if kept.source != row.source else "")
            + f" (dropped; group of {len(group)})",
            related_rows=tuple(rows[j].number for j in group if j != i),
        )
