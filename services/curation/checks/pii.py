"""pii: e-mail addresses, phone numbers and the like, redacted, kept or rejected as the policy says."""

from __future__ import annotations

from collections import Counter

from services.curation import pii as redaction
from services.curation.checks.context import CheckContext
from services.curation.rows import Row


def pii_check(c: CheckContext, rows: list[Row]) -> None:
    kinds = c.policy.pii_types
    affected = 0
    for row in rows:
        row_counts: Counter[str] = Counter()
        if row.kind == "sft":
            for i, message in enumerate(row.data["messages"]):
                clean, counts = redaction.redact(message["content"], kinds)
                row_counts += counts
                if counts and c.policy.pii_action == "redact":
                    row.data["messages"][i] = {**message, "content": clean}
        else:
            for key in ("prompt", "completion", "chosen", "rejected"):
                if key in row.data:
                    clean, counts = redaction.redact(row.data[key], kinds)
                    row_counts += counts
                    if counts and c.policy.pii_action == "redact":
                        row.data[key] = clean
        if row_counts:
            affected += 1
            c.pii_counts += row_counts
            listed = ", ".join(f"{k} {v}" for k, v in sorted(row_counts.items()))
            action = {"redact": "redacted", "reject": "found", "keep": "kept"}[c.policy.pii_action]
            c.audit.flag("pii", row, f"row {row.number}: {listed} ({action})")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(c.pii_counts.items())) or "none found"
    passed = not (c.policy.pii_action == "reject" and affected)
    c.audit.check(
        "pii",
        passed,
        float(affected),
        None,
        f"{detail}; {affected} rows; action {c.policy.pii_action}",
    )
