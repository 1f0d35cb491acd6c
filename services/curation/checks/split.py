"""split and split-disjointness: the held-out split (given or drawn) and no train row sharing its prompts."""

from __future__ import annotations

import random

from services.curation.checks.context import CheckContext, drop
from services.curation.dedupe import normalize
from services.curation.rows import Row


def split(c: CheckContext, rows: list[Row]) -> tuple[list[Row], list[Row]]:
    given = [row for row in rows if row.split == "eval"]
    train = [row for row in rows if row.split != "eval"]
    if given:
        return train, given
    rng = random.Random(c.policy.split_seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    size = min(c.policy.max_eval_rows, max(1, round(len(train) * c.policy.eval_fraction)))
    if len(train) < 2:
        return train, []
    held = set(order[:size])
    return [r for i, r in enumerate(train) if i not in held], [r for i, r in enumerate(train) if i in held]


def disjoint(c: CheckContext, train: list[Row], evals: list[Row]) -> list[Row]:
    eval_prompts = {normalize(row.prompt_text()): row for row in evals}
    eval_texts = {normalize(row.full_text()) for row in evals}
    leaked = set()
    for i, row in enumerate(train):
        other = eval_prompts.get(normalize(row.prompt_text()))
        if other is not None or normalize(row.full_text()) in eval_texts:
            leaked.add(i)
            where = f"eval row {other.number}" if other else "an eval row"
            c.audit.flag(
                "split-disjointness",
                row,
                f"row {row.number}: same prompt as {where} (removed from train)",
            )
    kept = drop(train, leaked)
    c.audit.check(
        "split-disjointness",
        True,
        float(len(leaked)),
        0.0,
        f"train {len(kept)} rows, eval {len(evals)} rows; {len(leaked)} train rows overlapping "
        "eval removed; 0 overlaps remain",
    )
    return kept
