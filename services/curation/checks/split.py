"""split and split-disjointness: the validation and test splits (given or drawn), and no row sharing
its prompt with a later split."""

from __future__ import annotations

import random

from services.curation.checks.context import CheckContext, drop
from services.curation.dedupe import normalize
from services.curation.rows import Row


def _draw(rng: random.Random, rows: list[Row], fraction: float, cap: int) -> tuple[list[Row], list[Row]]:
    """(rest, drawn): a seeded random share of `rows`, at least one when there are two or more."""
    if len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    rng.shuffle(order)
    held = set(order[: min(cap, max(1, round(len(rows) * fraction)))])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def split(c: CheckContext, rows: list[Row]) -> tuple[list[Row], list[Row], list[Row]]:
    """(train, validation, test). A split given as a source is kept as given (`eval` is the old
    name of `test`); a missing one is drawn from the training rows: test first, then validation.
    Training reads train and validation (early stopping, checkpoint choice); only the gates read
    test."""
    test = [row for row in rows if row.split in ("test", "eval")]
    validation = [row for row in rows if row.split == "validation"]
    train = [row for row in rows if row.split == "train"]
    rng = random.Random(c.policy.split_seed)
    if not test:
        train, test = _draw(rng, train, c.policy.eval_fraction, c.policy.max_eval_rows)
    if not validation:
        train, validation = _draw(rng, train, c.policy.validation_fraction, c.policy.max_validation_rows)
    return train, validation, test


def disjoint(
    c: CheckContext, train: list[Row], validation: list[Row], test: list[Row]
) -> tuple[list[Row], list[Row]]:
    """(train, validation) with every row sharing a prompt or text with a later split removed:
    train against validation and test, validation against test."""
    train, from_train = _without(c, train, validation + test, "train")
    validation, from_validation = _without(c, validation, test, "validation")
    c.audit.check(
        "split-disjointness",
        True,
        float(from_train + from_validation),
        0.0,
        f"train {len(train)}, validation {len(validation)}, test {len(test)} rows; {from_train} train "
        f"and {from_validation} validation rows overlapping a held-out split removed; 0 overlaps remain",
    )
    return train, validation


def _without(c: CheckContext, rows: list[Row], held: list[Row], name: str) -> tuple[list[Row], int]:
    held_prompts = {normalize(row.prompt_text()): row for row in held}
    held_texts = {normalize(row.full_text()) for row in held}
    leaked = set()
    for i, row in enumerate(rows):
        other = held_prompts.get(normalize(row.prompt_text()))
        if other is not None or normalize(row.full_text()) in held_texts:
            leaked.add(i)
            where = f"held-out row {other.number}" if other else "a held-out row"
            c.audit.flag(
                "split-disjointness", row, f"row {row.number}: same prompt as {where} (removed from {name})"
            )
    return drop(rows, leaked), len(leaked)
