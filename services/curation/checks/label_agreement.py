"""label-agreement: Cohen's (2 raters) or Fleiss' (3+) kappa over rows every rater labelled."""

from __future__ import annotations

from services.curation.agreement import cohen_kappa, fleiss_kappa
from services.curation.checks.context import CheckContext
from services.curation.rows import Row


def label_agreement(c: CheckContext, rows: list[Row]) -> None:
    annotated = [row for row in rows if row.annotations]
    if not annotated:
        c.audit.check("label-agreement", True, detail="no rows carry annotations")
        return
    raters = sorted({name for row in annotated for name, _ in row.annotations})
    complete = [row for row in annotated if len(row.annotations) == len(raters)]
    for row in annotated:
        if len(row.annotations) != len(raters):
            c.audit.flag(
                "label-agreement",
                row,
                f"row {row.number}: {len(row.annotations)} of {len(raters)} raters "
                "labelled it (left out of kappa)",
                field="annotations",
            )
    if len(raters) < 2 or not complete:
        c.audit.check(
            "label-agreement",
            False,
            detail=f"annotations need at least 2 raters on the same rows ({raters})",
        )
        return
    labels = [[str(label) for _, label in row.annotations] for row in complete]
    if len(raters) == 2:
        kappa, method = cohen_kappa([a for a, _ in labels], [b for _, b in labels]), "Cohen"
    else:
        kappa, method = fleiss_kappa(labels), "Fleiss"
    disagreements = sum(len(set(item)) > 1 for item in labels)
    c.audit.check(
        "label-agreement",
        kappa >= c.policy.min_kappa,
        round(kappa, 4),
        c.policy.min_kappa,
        f"{method}' kappa over {len(complete)} rows and {len(raters)} raters; "
        f"{disagreements} rows with disagreement",
    )
