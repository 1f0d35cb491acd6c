"""The audit, clean and mix pipeline: plain functions, no broker, testable with plain calls. This
module streams the sources (the schema check) and runs the checks of `services/curation/checks/`,
one module each, in this order.

Order: read → schema → empty completions → label agreement → PII → boilerplate → exact and
near duplicates → split (given or held out) → split disjointness → contamination → token lengths
→ minimum size → mixing → canaries. Each check records an `AuditCheck` (value, threshold, verdict)
and `Finding`s that name the source, the row number and the field. Any failed check rejects the
dataset; the curated copy is only written for approved datasets. The submitted sources are read,
never written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.dataset import (
    DatasetSubmitted,
    DataSource,
    Finding,
    MixCount,
    SourceSummary,
)
from services.core.ml.suite_catalogue import Suite
from services.curation.checks.boilerplate import boilerplate
from services.curation.checks.canaries import canaries
from services.curation.checks.contamination import contamination
from services.curation.checks.context import (
    Audit,
    CheckContext,
    Resolver,
    Tokenizer,
    file_sha256,
)
from services.curation.checks.duplicates import duplicates
from services.curation.checks.empty import empty_completions
from services.curation.checks.label_agreement import label_agreement
from services.curation.checks.mix import mix
from services.curation.checks.pii import pii_check
from services.curation.checks.split import disjoint, split
from services.curation.checks.token_length import token_lengths
from services.curation.rows import FormatError, Kind, Row, detect_kind, parse_row
from services.curation.sources import RawRow, SourceError, SourceLimits, read_rows

FINDINGS_IN_EVENT = 1000

KIND_SAMPLE = 100  # rows read ahead per source to tell the row format


@dataclass
class _Open:
    """A source being streamed: its first rows read ahead, the rest still on disk."""

    source: DataSource
    sha: str
    head: list[RawRow]
    stream: Iterator[RawRow]
    rows: int = 0


@dataclass
class Curated:
    """The outcome: approved with splits, or rejected with findings; a report either way."""

    approved: bool
    audit: Audit
    sources: list[SourceSummary]
    mix: list[MixCount]
    splits: dict[str, bytes]
    split_rows: dict[str, int]
    kind: Kind | None
    canaries: list[dict[str, str]]
    token_stats: dict[str, float]
    pii_counts: dict[str, int]

    @property
    def dataset_id(self) -> str:
        """Content hash of the curated splits: same data, same id."""
        digest = hashlib.sha256()
        for name in sorted(self.splits):
            digest.update(f"{name}\0{hashlib.sha256(self.splits[name]).hexdigest()}\n".encode())
        return digest.hexdigest()


def serialize(rows: Sequence[Row]) -> bytes:
    return "".join(row.canonical_json() + "\n" for row in rows).encode("utf-8")


class Curator:
    def __init__(
        self,
        submission: DatasetSubmitted,
        *,
        resolve: Resolver,
        tokenizer: Tokenizer | None,
        suites: Sequence[Suite],
        tokenizer_error: str | None = None,
        limits: SourceLimits | None = None,
    ) -> None:
        limits = (limits or SourceLimits()).tightened(
            submission.curation.max_rows_per_source, submission.curation.max_row_bytes
        )
        self.c = CheckContext(submission, resolve, tokenizer, suites, limits, tokenizer_error=tokenizer_error)
        self.summaries: list[SourceSummary] = []

    # -- reading -------------------------------------------------------------------------------
    def _open(self, source: DataSource) -> _Open:
        """A source opened for streaming, its first rows read ahead to tell the row format."""
        path = self.c.resolve(source)
        # a directory arrives packed: its submitted sha256 is the tar's, not checkable here
        sha = source.sha256 if source.sha256 and path.is_dir() else file_sha256(path)
        if source.sha256 and sha != source.sha256:
            raise SourceError(f"{source.uri}: content does not match the submitted sha256")
        stream = read_rows(path, source.format, self.c.limits)
        return _Open(source, sha, list(itertools.islice(stream, KIND_SAMPLE)), stream)

    def _unreadable(self, source: DataSource, error: SourceError | OSError) -> None:
        message = str(error) if isinstance(error, SourceError) else f"{source.uri}: {error.strerror}"
        self.c.audit.findings.append(Finding(check="source", source=source.uri, message=message))

    def _parse(self, opened: _Open, kind: Kind | None) -> tuple[list[Row], list[Finding], int]:
        """One source's rows, parsed as they stream past (no raw copy of the source is kept).

        Returns the valid rows, the row findings and the number of invalid rows; a source that
        fails part-way (over a limit) raises and contributes nothing."""
        rows: list[Row] = []
        findings: list[Finding] = []
        invalid = 0
        uri = opened.source.uri
        for item in itertools.chain(opened.head, opened.stream):
            opened.rows += 1
            if kind is None:
                continue  # the format is unknown: count the rows, nothing more
            if item.error is not None:
                invalid += 1
                findings.append(
                    Finding(
                        check="schema",
                        source=uri,
                        row=item.number,
                        message=f"row {item.number}: {item.error}",
                    )
                )
                continue
            row, problems = parse_row(
                item.value, kind, source=uri, number=item.number, split=opened.source.split
            )
            findings.extend(problems)
            if row is None:
                invalid += 1
            else:
                rows.append(row)
        opened.head = []
        return rows, findings, invalid

    def _read(self) -> tuple[list[_Open], list[Row]]:
        """Stream every source once: a look-ahead of `KIND_SAMPLE` rows per source decides the
        row format, then each row is parsed as it is read. Peak memory is the parsed rows, not a
        raw copy of every source beside them."""
        opened: list[_Open] = []
        for source in self.c.sub.sources:
            try:
                opened.append(self._open(source))
            except (SourceError, OSError) as error:
                self._unreadable(source, error)
        kind: Kind | None = None
        kind_error: str | None = None
        samples = [r.value for o in opened for r in o.head if isinstance(r.value, dict)]
        if opened:
            try:
                kind = (
                    detect_kind(samples) if self.c.policy.data_format == "auto" else self.c.policy.data_format
                )
            except FormatError as error:
                kind_error = str(error)
        loaded: list[_Open] = []
        rows: list[Row] = []
        invalid = 0
        for current in opened:
            try:
                parsed, findings, bad = self._parse(current, kind)
            except (SourceError, OSError) as error:
                self._unreadable(current.source, error)
                continue
            loaded.append(current)
            rows.extend(parsed)
            self.c.audit.findings.extend(findings)
            invalid += bad
        self.c.audit.check(
            "source",
            len(loaded) == len(self.c.sub.sources),
            detail=f"{len(loaded)} of {len(self.c.sub.sources)} sources readable",
        )
        if not loaded:
            return loaded, []
        if kind is None:
            self.c.audit.check("schema", False, detail=kind_error or "no row format")
            return loaded, []
        self.c.kind = kind
        total = sum(o.rows for o in loaded)
        self.c.total_rows = total
        self.c.audit.fraction(
            "schema",
            invalid,
            total,
            self.c.policy.max_invalid_fraction,
            f"{invalid} of {total} rows fail the {kind} row schema",
        )
        return loaded, rows

    # -- per-row checks ------------------------------------------------------------------------

    # -- mixing --------------------------------------------------------------------------------

    # -- the whole run -------------------------------------------------------------------------
    def _checked(self, rows: list[Row]) -> dict[str, list[Row]]:
        """The per-row checks in order, then the three splits (train, validation, test)."""
        rows = empty_completions(self.c, rows)
        label_agreement(self.c, rows)
        pii_check(self.c, rows)
        rows = boilerplate(self.c, rows)
        rows = duplicates(self.c, rows)
        train, validation, test = split(self.c, rows)
        train, validation = disjoint(self.c, train, validation, test)
        train = contamination(self.c, train)
        train, validation, test = token_lengths(self.c, [train, validation, test])
        self.c.audit.check(
            "min-rows",
            len(train) >= self.c.policy.min_train_rows,
            float(len(train)),
            float(self.c.policy.min_train_rows),
            f"{len(train)} curated task rows for training, {len(validation)} for validation, "
            f"{len(test)} held out for the gates",
        )
        if self.c.tokenizer is None and self.c.tokenizer_error:
            self.c.audit.findings.append(Finding(check="token-length", message=self.c.tokenizer_error))
        return {"train": train, "validation": validation, "test": test}

    def run(self) -> Curated:
        loaded, rows = self._read()
        parts: dict[str, list[Row]] = {"train": [], "validation": [], "test": []}
        mix_counts: list[MixCount] = []
        planted: list[dict[str, str]] = []
        if rows:
            parts = self._checked(rows)
        elif loaded and self.c.kind is not None:
            self.c.audit.check("min-rows", False, 0.0, float(self.c.policy.min_train_rows), "no valid rows")
        kept = Counter((row.source, row.split) for part in parts.values() for row in part)
        self.summaries = [
            SourceSummary(
                uri=o.source.uri,
                format=o.source.format,
                split=o.source.split,
                sha256=o.sha,
                rows=o.rows,
                kept=kept[(o.source.uri, o.source.split)],
            )
            for o in loaded
        ]
        if self.c.audit.passed:
            task_train = parts["train"]
            parts["train"], mix_counts = mix(self.c, task_train)
            held = serialize(parts["validation"]) + serialize(parts["test"])
            parts["train"], planted = canaries(self.c, parts["train"], serialize(task_train) + held)
        approved = self.c.audit.passed  # mixing may still refuse
        return Curated(
            approved=approved,
            audit=self.c.audit,
            sources=self.summaries,
            mix=mix_counts,
            splits={name: serialize(part) for name, part in parts.items()} if approved else {},
            split_rows={name: len(part) for name, part in parts.items()} if approved else {},
            kind=self.c.kind,
            canaries=planted,
            token_stats=self.c.token_stats,
            pii_counts=dict(self.c.pii_counts),
        )


def curate(
    submission: DatasetSubmitted,
    *,
    resolve: Resolver,
    tokenizer: Tokenizer | None,
    suites: Sequence[Suite],
    tokenizer_error: str | None = None,
    limits: SourceLimits | None = None,
) -> Curated:
    return Curator(
        submission,
        resolve=resolve,
        tokenizer=tokenizer,
        suites=suites,
        tokenizer_error=tokenizer_error,
        limits=limits,
    ).run()


def manifest(
    result: Curated, submission: DatasetSubmitted, split_refs: dict[str, Any], tokenizer: Tokenizer | None
) -> dict[str, Any]:
    """The dataset manifest: what was curated from what, how, and what the audit found."""
    return {
        "kind": "tuneline.dataset-manifest/v1",
        "dataset_id": result.dataset_id,
        "submission_id": submission.submission_id,
        "tenant": submission.tenant,
        "task": submission.task,
        "format": result.kind,
        "splits": {name: {"rows": result.split_rows[name], **ref} for name, ref in split_refs.items()},
        "sources": [s.model_dump(mode="json") for s in result.sources],
        "mix": {
            "seed": submission.mix.seed,
            "components": [m.model_dump(mode="json") for m in result.mix],
        },
        "audit": [c.model_dump(mode="json") for c in result.audit.checks],
        "token_stats": result.token_stats,
        "tokenizer": {"name": tokenizer.name, "sha256": tokenizer.sha256} if tokenizer else None,
        "pii_counts": result.pii_counts,
        "canaries": result.canaries,
        "policy": submission.curation.model_dump(mode="json"),
    }


def report(result: Curated, submission: DatasetSubmitted) -> dict[str, Any]:
    return {
        "kind": "tuneline.audit-report/v1",
        "submission_id": submission.submission_id,
        "approved": result.approved,
        "dataset_id": result.dataset_id if result.approved else None,
        "checks": [c.model_dump(mode="json") for c in result.audit.checks],
        "findings": [f.model_dump(mode="json", exclude_defaults=True) for f in result.audit.failed_first()],
        "sources": [s.model_dump(mode="json") for s in result.sources],
        "token_stats": result.token_stats,
        "pii_counts": result.pii_counts,
        "policy": submission.curation.model_dump(mode="json"),
    }


def report_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1).encode()
