"""mix: the task rows mixed with replay and safety sets at the recipe's ratios (some answered by
the base model)."""

from __future__ import annotations

import random
from dataclasses import replace

from schemas.dataset import SELF_REPLAY_KEY, Finding, MixComponent, MixCount
from services.core.ml.refusals import is_refusal
from services.curation.checks.contamination import contamination
from services.curation.checks.context import SHIPPED_SETS, CheckContext, file_sha256
from services.curation.rows import FormatError, Kind, Row, parse_row
from services.curation.sources import SourceError, read_rows


def mix(c: CheckContext, task_rows: list[Row]) -> tuple[list[Row], list[MixCount]]:
    spec = c.sub.mix
    task_ratio = next(c.ratio for c in spec.components if c.name == "task")
    rng = random.Random(spec.seed)
    mixed = list(task_rows)
    counts = [MixCount(name="task", ratio=task_ratio, rows=len(task_rows), available=len(task_rows))]
    problems = []
    for component in spec.components:
        if component.name == "task":
            continue
        try:
            pool, sha = _component_rows(c, component)
        except (SourceError, FormatError) as error:
            problems.append(f"{component.name}: {error}")
            continue
        pool = contamination(c, pool, record=False)
        want = round(len(task_rows) * component.ratio / task_ratio)
        if not pool:
            problems.append(f"{component.name}: no usable rows")
            continue
        picked = [pool[i] for i in rng.sample(range(len(pool)), min(want, len(pool)))]
        while len(picked) < want:  # upsample a small set deterministically
            picked.append(pool[rng.randrange(len(pool))])
        if component.answers == "base-model":
            if any(row.kind != "sft" for row in picked):
                problems.append(
                    f"{component.name}: answers: base-model needs chat (sft) rows; "
                    "use answers: written for this set"
                )
                continue
            # a written refusal is what a safety set teaches: those rows keep their answer
            picked = [
                row
                if is_refusal(row.data["messages"][-1]["content"])
                else replace(row, data={**row.data, SELF_REPLAY_KEY: "base-model"})
                for row in picked
            ]
        mixed += picked
        counts.append(
            MixCount(
                name=component.name,
                ratio=component.ratio,
                rows=len(picked),
                available=len(pool),
                sha256=sha,
            )
        )
    base_answered = {c.name for c in spec.components if c.answers == "base-model"}
    detail = "; ".join(
        f"{c.name} {c.rows} rows ({c.ratio:.0%}"
        + (", answers from the base model)" if c.name in base_answered else ")")
        for c in counts
    )
    c.audit.check("mix", not problems, detail=detail + ("; " + "; ".join(problems) if problems else ""))
    rng.shuffle(mixed)
    return mixed, counts


def _component_rows(c: CheckContext, component: MixComponent) -> tuple[list[Row], str]:
    kind: Kind
    if component.source is not None:
        path = c.resolve(component.source)
        uri, fmt, kind = component.source.uri, component.source.format, c.kind or "sft"
    elif component.name in SHIPPED_SETS:
        path, uri, fmt, kind = SHIPPED_SETS[component.name], f"shipped:{component.name}", "jsonl", "sft"
    else:
        raise SourceError(f"no shipped set named {component.name}; give the component a source")
    if kind != c.kind:
        raise FormatError(
            f"the shipped set holds {kind} rows but the task data is {c.kind}; give the component "
            "a source in the task's format or drop it from the mix"
        )
    rows = []
    for item in read_rows(path, fmt, c.limits):
        if item.error is not None:
            c.audit.findings.append(
                Finding(check="mix", source=uri, row=item.number, message=f"row {item.number}: {item.error}")
            )
            continue
        row, problems = parse_row(item.value, kind, source=uri, number=item.number, split="train")
        c.audit.findings.extend(problems)
        if row is not None:
            rows.append(row)
    return rows, file_sha256(path)
