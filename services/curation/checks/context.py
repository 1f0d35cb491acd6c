"""What every curation check works with: the submission and its policy, the audit it records its
verdicts in, the base model's tokenizer and the registered eval suites. Each check is a plain
function of a `CheckContext` and rows, in its own module, testable without a broker."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.curation_policy import CurationPolicy
from schemas.dataset import AuditCheck, DatasetSubmitted, DataSource, Finding
from services.core.artifacts import sha256_file
from services.core.ml.suite_catalogue import Suite, item_text
from services.curation.contamination import ContaminationIndex, build_index
from services.curation.rows import Kind, Row
from services.curation.sources import SourceLimits

SHIPPED_SETS = {
    "general-replay": Path(__file__).parents[1] / "data" / "general_replay.jsonl",
    "safety": Path(__file__).parents[1] / "data" / "safety.jsonl",
    "safety-refusals": Path(__file__).parents[1] / "data" / "safety_refusals.jsonl",
    "safety-lookalikes": Path(__file__).parents[1] / "data" / "safety_lookalikes.jsonl",
}
Resolver = Callable[[DataSource], Path]


@dataclass
class Tokenizer:
    """The base model's tokenizer, with the token overhead of its chat template."""

    name: str
    sha256: str
    encode_lengths: Callable[[list[str]], list[int]]
    overhead_per_message: int = 0

    @classmethod
    def from_hf(cls, name: str, sha256: str, tokenizer: Any) -> Tokenizer:
        def lengths(texts: list[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

        overhead = 0
        if getattr(tokenizer, "chat_template", None):
            empty = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
            rendered = tokenizer.apply_chat_template(empty, tokenize=False)
            overhead = -(-lengths([rendered])[0] // 2)  # per message, rounded up
        return cls(name, sha256, lengths, overhead)


@dataclass
class Audit:
    checks: list[AuditCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def check(
        self,
        name: str,
        passed: bool,
        value: float | None = None,
        threshold: float | None = None,
        detail: str = "",
    ) -> bool:
        self.checks.append(
            AuditCheck(name=name, passed=passed, value=value, threshold=threshold, detail=detail)
        )
        return passed

    def fraction(self, name: str, count: int, total: int, limit: float, detail: str) -> bool:
        value = count / total if total else 0.0
        return self.check(name, value <= limit + 1e-12, round(value, 6), limit, detail)

    def flag(self, check: str, row: Row, message: str, field: str | None = None, **extra: Any) -> None:
        """A finding about one row: its source, its 1-based number and, where known, the field."""
        self.findings.append(
            Finding(check=check, source=row.source, row=row.number, field=field, message=message, **extra)
        )

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failed_first(self) -> list[Finding]:
        """Findings for the event: one per failed check first, then row findings."""
        summary = [
            Finding(check=c.name, message=f"check {c.name} failed: {c.detail}")
            for c in self.checks
            if not c.passed
        ]
        return summary + self.findings


@dataclass
class CheckContext:
    """One curation run's inputs and the state its checks share."""

    sub: DatasetSubmitted
    resolve: Resolver
    tokenizer: Tokenizer | None
    suites: Sequence[Suite]
    limits: SourceLimits
    tokenizer_error: str | None = None
    audit: Audit = field(default_factory=Audit)
    kind: Kind | None = None
    pii_counts: Counter[str] = field(default_factory=Counter)
    token_stats: dict[str, float] = field(default_factory=dict)
    total_rows: int = 0

    @property
    def policy(self) -> CurationPolicy:
        return self.sub.curation

    @functools.cached_property
    def index(self) -> ContaminationIndex:
        """The n-grams of every registered eval suite's items, built once per run."""
        items = ((s.name, str(item["id"]), item_text(item)) for s in self.suites for item in s.items())
        return build_index(items, self.policy.contamination_ngram)


def drop(rows: list[Row], bad: set[int]) -> list[Row]:
    """`rows` without the positions in `bad`."""
    return [row for i, row in enumerate(rows) if i not in bad]


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative name and content, in name order)."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode() + b"\0")
        digest.update(child.read_bytes())
    return digest.hexdigest()
