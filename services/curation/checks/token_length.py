"""token-length: rows longer than max_seq_len in the base model's own tokens (chat template
included) are dropped."""

from __future__ import annotations

import statistics

from services.curation.checks.context import CheckContext
from services.curation.rows import Row


def token_lengths(c: CheckContext, splits: list[list[Row]]) -> list[list[Row]]:
    """Every split without its rows over max_seq_len (one check over all of them)."""
    if c.tokenizer is None:
        c.audit.check("token-length", False, detail=f"base model tokenizer unavailable: {c.tokenizer_error}")
        return splits
    limit = c.policy.max_seq_len or c.sub.recipe.max_seq_len
    everything = [row for rows in splits for row in rows]
    lengths = _lengths(c, everything)
    over = {i for i, n in enumerate(lengths) if n > limit}
    for i in sorted(over):
        row = everything[i]
        c.audit.flag(
            "token-length", row, f"row {row.number}: {lengths[i]} tokens > max_seq_len {limit} (dropped)"
        )
    if lengths:
        ordered = sorted(lengths)
        c.token_stats = {
            "rows": len(lengths),
            "total": sum(lengths),
            "min": ordered[0],
            "mean": round(statistics.fmean(lengths), 1),
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1],
            "max_seq_len": limit,
        }
    stats = ", ".join(f"{k} {v}" for k, v in c.token_stats.items() if k in {"p50", "p95", "max"})
    c.audit.fraction(
        "token-length",
        len(over),
        len(everything),
        c.policy.max_overlong_fraction,
        f"{c.tokenizer.name} tokens: {stats}; {len(over)} rows over {limit} dropped",
    )
    dropped = {id(everything[i]) for i in over}
    return [[row for row in rows if id(row) not in dropped] for rows in splits]


def _lengths(c: CheckContext, rows: list[Row]) -> list[int]:
    assert c.tokenizer is not None
    if not rows:
        return []
    if rows[0].kind == "preference":
        prompts = c.tokenizer.encode_lengths([r.data["prompt"] for r in rows])
        chosen = c.tokenizer.encode_lengths([r.data["chosen"] for r in rows])
        rejected = c.tokenizer.encode_lengths([r.data["rejected"] for r in rows])
        overhead = 2 * c.tokenizer.overhead_per_message
        return [p + max(ch, rj) + overhead for p, ch, rj in zip(prompts, chosen, rejected, strict=True)]
    counts = [len(r.data["messages"]) if r.kind == "sft" else 2 for r in rows]
    body = c.tokenizer.encode_lengths([r.full_text() for r in rows])
    per_message = c.tokenizer.overhead_per_message
    return [b + n * per_message for b, n in zip(body, counts, strict=True)]
