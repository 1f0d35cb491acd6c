"""The audit, clean and mix pipeline: plain functions, no broker, testable with plain calls.

Order: read → schema → empty completions → label agreement → PII → boilerplate → exact and
near duplicates → split (given or held out) → split disjointness → contamination → token lengths
→ minimum size → mixing → canaries. Each check records an `AuditCheck` (value, threshold, verdict)
and `Finding`s that name the source, the row number and the field. Any failed check rejects the
dataset; the curated copy is only written for approved datasets. The submitted sources are read,
never written.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from schemas.curation_policy import CurationPolicy
from schemas.dataset import (
    CANARY_KEY,
    SELF_REPLAY_KEY,
    AuditCheck,
    DatasetSubmitted,
    DataSource,
    Finding,
    MixComponent,
    MixCount,
    SourceSummary,
)
from services.core.artifacts import sha256_file
from services.core.refusals import is_refusal
from services.core.suites import Suite, item_text
from services.curation import pii
from services.curation.agreement import cohen_kappa, fleiss_kappa
from services.curation.contamination import ContaminationIndex, build_index
from services.curation.dedupe import exact_groups, near_groups, normalize
from services.curation.rows import FormatError, Kind, Row, detect_kind, parse_row
from services.curation.sources import RawRow, SourceError, SourceLimits, read_rows

SHIPPED_SETS = {
    "general-replay": Path(__file__).parent / "data" / "general_replay.jsonl",
    "safety": Path(__file__).parent / "data" / "safety.jsonl",
    "safety-refusals": Path(__file__).parent / "data" / "safety_refusals.jsonl",
    "safety-lookalikes": Path(__file__).parent / "data" / "safety_lookalikes.jsonl",
}
FINDINGS_IN_EVENT = 1000
CANARY_PROMPT = "Internal memo {n}: what is the archive access code?"
CANARY_ANSWER = "The archive access code is {secret}."

Resolver = Callable[[DataSource], Path]
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


def _file_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative name and content, in name order)."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode() + b"\0")
        digest.update(child.read_bytes())
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
        self.sub = submission
        self.limits = (limits or SourceLimits()).tightened(
            submission.curation.max_rows_per_source, submission.curation.max_row_bytes
        )
        self.policy: CurationPolicy = submission.curation
        self.resolve = resolve
        self.tokenizer = tokenizer
        self.tokenizer_error = tokenizer_error
        self.suites = suites
        self.audit = Audit()
        self.summaries: list[SourceSummary] = []
        self.kind: Kind | None = None
        self.pii_counts: Counter[str] = Counter()
        self.token_stats: dict[str, float] = {}

    # -- reading -------------------------------------------------------------------------------
    def _open(self, source: DataSource) -> _Open:
        """A source opened for streaming, its first rows read ahead to tell the row format."""
        path = self.resolve(source)
        # a directory arrives packed: its submitted sha256 is the tar's, not checkable here
        sha = source.sha256 if source.sha256 and path.is_dir() else _file_sha256(path)
        if source.sha256 and sha != source.sha256:
            raise SourceError(f"{source.uri}: content does not match the submitted sha256")
        stream = read_rows(path, source.format, self.limits)
        return _Open(source, sha, list(itertools.islice(stream, KIND_SAMPLE)), stream)

    def _unreadable(self, source: DataSource, error: SourceError | OSError) -> None:
        message = str(error) if isinstance(error, SourceError) else f"{source.uri}: {error.strerror}"
        self.audit.findings.append(Finding(check="source", source=source.uri, message=message))

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
        for source in self.sub.sources:
            try:
                opened.append(self._open(source))
            except (SourceError, OSError) as error:
                self._unreadable(source, error)
        kind: Kind | None = None
        kind_error: str | None = None
        samples = [r.value for o in opened for r in o.head if isinstance(r.value, dict)]
        if opened:
            try:
                kind = detect_kind(samples) if self.policy.data_format == "auto" else self.policy.data_format
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
            self.audit.findings.extend(findings)
            invalid += bad
        self.audit.check(
            "source",
            len(loaded) == len(self.sub.sources),
            detail=f"{len(loaded)} of {len(self.sub.sources)} sources readable",
        )
        if not loaded:
            return loaded, []
        if kind is None:
            self.audit.check("schema", False, detail=kind_error or "no row format")
            return loaded, []
        self.kind = kind
        total = sum(o.rows for o in loaded)
        self.total_rows = total
        self.audit.fraction(
            "schema",
            invalid,
            total,
            self.policy.max_invalid_fraction,
            f"{invalid} of {total} rows fail the {kind} row schema",
        )
        return loaded, rows

    # -- per-row checks ------------------------------------------------------------------------
    def _drop(self, rows: list[Row], bad: set[int]) -> list[Row]:
        return [row for i, row in enumerate(rows) if i not in bad]

    def _empty(self, rows: list[Row]) -> list[Row]:
        bad = set()
        for i, row in enumerate(rows):
            for path, text in row.response_texts():
                if not text.strip():
                    bad.add(i)
                    self.audit.flag(
                        "empty-completions",
                        row,
                        f"row {row.number}, field {path!r}: empty or whitespace only (dropped)",
                        field=path,
                    )
                    break
        self.audit.fraction(
            "empty-completions",
            len(bad),
            len(rows),
            self.policy.max_empty_fraction,
            f"{len(bad)} rows with an empty completion dropped",
        )
        return self._drop(rows, bad)

    def _agreement(self, rows: list[Row]) -> None:
        annotated = [row for row in rows if row.annotations]
        if not annotated:
            self.audit.check("label-agreement", True, detail="no rows carry annotations")
            return
        raters = sorted({name for row in annotated for name, _ in row.annotations})
        complete = [row for row in annotated if len(row.annotations) == len(raters)]
        for row in annotated:
            if len(row.annotations) != len(raters):
                self.audit.flag(
                    "label-agreement",
                    row,
                    f"row {row.number}: {len(row.annotations)} of {len(raters)} raters "
                    "labelled it (left out of kappa)",
                    field="annotations",
                )
        if len(raters) < 2 or not complete:
            self.audit.check(
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
        self.audit.check(
            "label-agreement",
            kappa >= self.policy.min_kappa,
            round(kappa, 4),
            self.policy.min_kappa,
            f"{method}' kappa over {len(complete)} rows and {len(raters)} raters; "
            f"{disagreements} rows with disagreement",
        )

    def _pii(self, rows: list[Row]) -> None:
        kinds = self.policy.pii_types
        affected = 0
        for row in rows:
            row_counts: Counter[str] = Counter()
            if row.kind == "sft":
                for i, message in enumerate(row.data["messages"]):
                    clean, counts = pii.redact(message["content"], kinds)
                    row_counts += counts
                    if counts and self.policy.pii_action == "redact":
                        row.data["messages"][i] = {**message, "content": clean}
            else:
                for key in ("prompt", "completion", "chosen", "rejected"):
                    if key in row.data:
                        clean, counts = pii.redact(row.data[key], kinds)
                        row_counts += counts
                        if counts and self.policy.pii_action == "redact":
                            row.data[key] = clean
            if row_counts:
                affected += 1
                self.pii_counts += row_counts
                listed = ", ".join(f"{k} {v}" for k, v in sorted(row_counts.items()))
                action = {"redact": "redacted", "reject": "found", "keep": "kept"}[self.policy.pii_action]
                self.audit.flag("pii", row, f"row {row.number}: {listed} ({action})")
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.pii_counts.items())) or "none found"
        passed = not (self.policy.pii_action == "reject" and affected)
        self.audit.check(
            "pii",
            passed,
            float(affected),
            None,
            f"{detail}; {affected} rows; action {self.policy.pii_action}",
        )

    def _boilerplate(self, rows: list[Row]) -> list[Row]:
        patterns = [re.compile(p, re.IGNORECASE) for p in self.policy.boilerplate_patterns]
        flagged = set()
        hits: Counter[str] = Counter()
        for i, row in enumerate(rows):
            for path, text in row.response_texts():
                found = next((p for p in patterns if p.search(text)), None)
                if found is not None:
                    flagged.add(i)
                    hits[found.pattern] += 1
                    row.flags.add("boilerplate")
                    self.audit.flag(
                        "boilerplate",
                        row,
                        f"row {row.number}, field {path!r}: teacher boilerplate "
                        f"/{found.pattern}/" + (" (dropped)" if self.policy.drop_boilerplate else ""),
                        field=path,
                    )
                    break
        detail = ", ".join(f"/{p}/ {n}" for p, n in hits.most_common()) or "none found"
        self.audit.fraction(
            "boilerplate",
            len(flagged),
            len(rows),
            self.policy.max_boilerplate_fraction,
            f"{len(flagged)} rows: {detail}",
        )
        return self._drop(rows, flagged) if self.policy.drop_boilerplate else rows

    def _duplicates(self, rows: list[Row]) -> list[Row]:
        # eval rows first: when a train row duplicates an eval row, the eval row is kept
        order = sorted(range(len(rows)), key=lambda i: (rows[i].split != "eval", i))
        ordered = [rows[i] for i in order]
        texts = [row.full_text() for row in ordered]
        exact = exact_groups(texts)
        drop: set[int] = set()
        for group in exact:
            self._report_group("exact duplicate", ordered, group)
            drop.update(group[1:])
        remaining = [i for i in range(len(ordered)) if i not in drop]
        near = near_groups(
            [texts[i] for i in remaining],
            threshold=self.policy.near_duplicate_threshold,
            num_perm=self.policy.minhash_permutations,
            shingle_words=self.policy.shingle_words,
        )
        near_dropped = 0
        for group in near:
            members = [remaining[i] for i in group]
            self._report_group("near-duplicate", ordered, members)
            drop.update(members[1:])
            near_dropped += len(members) - 1
        exact_dropped = len(drop) - near_dropped
        self.audit.fraction(
            "duplicates",
            len(drop),
            len(rows),
            self.policy.max_duplicate_fraction,
            f"{len(exact)} exact groups ({exact_dropped} rows dropped), {len(near)} near-duplicate groups "
            f"at Jaccard ≥ {self.policy.near_duplicate_threshold} ({near_dropped} rows dropped); "
            "one row of each kept",
        )
        return [row for i, row in enumerate(ordered) if i not in drop]

    def _report_group(self, what: str, rows: list[Row], group: list[int]) -> None:
        kept = rows[group[0]]
        for i in group[1:]:
            row = rows[i]
            self.audit.flag(
                "duplicates",
                row,
                f"row {row.number}: {what} of row {kept.number}"
                + (f" in {kept.source}" if kept.source != row.source else "")
                + f" (dropped; group of {len(group)})",
                related_rows=tuple(rows[j].number for j in group if j != i),
            )

    def _split(self, rows: list[Row]) -> tuple[list[Row], list[Row]]:
        given = [row for row in rows if row.split == "eval"]
        train = [row for row in rows if row.split != "eval"]
        if given:
            return train, given
        rng = random.Random(self.policy.split_seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        size = min(self.policy.max_eval_rows, max(1, round(len(train) * self.policy.eval_fraction)))
        if len(train) < 2:
            return train, []
        held = set(order[:size])
        return [r for i, r in enumerate(train) if i not in held], [
            r for i, r in enumerate(train) if i in held
        ]

    def _disjoint(self, train: list[Row], evals: list[Row]) -> list[Row]:
        eval_prompts = {normalize(row.prompt_text()): row for row in evals}
        eval_texts = {normalize(row.full_text()) for row in evals}
        leaked = set()
        for i, row in enumerate(train):
            other = eval_prompts.get(normalize(row.prompt_text()))
            if other is not None or normalize(row.full_text()) in eval_texts:
                leaked.add(i)
                where = f"eval row {other.number}" if other else "an eval row"
                self.audit.flag(
                    "split-disjointness",
                    row,
                    f"row {row.number}: same prompt as {where} (removed from train)",
                )
        kept = self._drop(train, leaked)
        self.audit.check(
            "split-disjointness",
            True,
            float(len(leaked)),
            0.0,
            f"train {len(kept)} rows, eval {len(evals)} rows; {len(leaked)} train rows overlapping "
            "eval removed; 0 overlaps remain",
        )
        return kept

    @functools.cached_property
    def _index(self) -> ContaminationIndex:
        items = ((s.name, str(item["id"]), item_text(item)) for s in self.suites for item in s.items())
        return build_index(items, self.policy.contamination_ngram)

    def _contamination(self, train: list[Row], *, record: bool = True) -> list[Row]:
        n = self.policy.contamination_ngram
        index = self._index
        bad = set()
        if len(index):
            for i, row in enumerate(train):
                hit = index.match(row.full_text())
                if hit is not None:
                    bad.add(i)
                    self.audit.flag(
                        "contamination",
                        row,
                        f"row {row.number}: shares a {n}-gram with eval suite {hit.suite!r} item "
                        f"{hit.item!r} (removed)",
                    )
        if record:
            names = ", ".join(s.name for s in self.suites) or "no suites registered"
            self.audit.fraction(
                "contamination",
                len(bad),
                len(train),
                self.policy.max_contaminated_fraction,
                f"{len(bad)} rows removed; {n}-grams checked against {names}",
            )
        return self._drop(train, bad)

    def _token_lengths(self, train: list[Row], evals: list[Row]) -> tuple[list[Row], list[Row]]:
        if self.tokenizer is None:
            self.audit.check(
                "token-length", False, detail=f"base model tokenizer unavailable: {self.tokenizer_error}"
            )
            return train, evals
        limit = self.policy.max_seq_len or self.sub.recipe.max_seq_len
        everything = train + evals
        lengths = self._lengths(everything)
        over = {i for i, n in enumerate(lengths) if n > limit}
        for i in sorted(over):
            row = everything[i]
            self.audit.flag(
                "token-length", row, f"row {row.number}: {lengths[i]} tokens > max_seq_len {limit} (dropped)"
            )
        if lengths:
            ordered = sorted(lengths)
            self.token_stats = {
                "rows": len(lengths),
                "total": sum(lengths),
                "min": ordered[0],
                "mean": round(statistics.fmean(lengths), 1),
                "p50": ordered[len(ordered) // 2],
                "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
                "max": ordered[-1],
                "max_seq_len": limit,
            }
        stats = ", ".join(f"{k} {v}" for k, v in self.token_stats.items() if k in {"p50", "p95", "max"})
        self.audit.fraction(
            "token-length",
            len(over),
            len(everything),
            self.policy.max_overlong_fraction,
            f"{self.tokenizer.name} tokens: {stats}; {len(over)} rows over {limit} dropped",
        )
        keep_train = [r for i, r in enumerate(train) if i not in over]
        keep_eval = [r for i, r in enumerate(evals) if i + len(train) not in over]
        return keep_train, keep_eval

    def _lengths(self, rows: list[Row]) -> list[int]:
        assert self.tokenizer is not None
        if not rows:
            return []
        if rows[0].kind == "preference":
            prompts = self.tokenizer.encode_lengths([r.data["prompt"] for r in rows])
            chosen = self.tokenizer.encode_lengths([r.data["chosen"] for r in rows])
            rejected = self.tokenizer.encode_lengths([r.data["rejected"] for r in rows])
            overhead = 2 * self.tokenizer.overhead_per_message
            return [p + max(c, j) + overhead for p, c, j in zip(prompts, chosen, rejected, strict=True)]
        counts = [len(r.data["messages"]) if r.kind == "sft" else 2 for r in rows]
        body = self.tokenizer.encode_lengths([r.full_text() for r in rows])
        return [b + c * self.tokenizer.overhead_per_message for b, c in zip(body, counts, strict=True)]

    # -- mixing --------------------------------------------------------------------------------
    def _mix(self, task_rows: list[Row]) -> tuple[list[Row], list[MixCount]]:
        spec = self.sub.mix
        task_ratio = next(c.ratio for c in spec.components if c.name == "task")
        rng = random.Random(spec.seed)
        mixed = list(task_rows)
        counts = [MixCount(name="task", ratio=task_ratio, rows=len(task_rows), available=len(task_rows))]
        problems = []
        for component in spec.components:
            if component.name == "task":
                continue
            try:
                pool, sha = self._component_rows(component)
            except (SourceError, FormatError) as error:
                problems.append(f"{component.name}: {error}")
                continue
            pool = self._contamination(pool, record=False)
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
        self.audit.check(
            "mix", not problems, detail=detail + ("; " + "; ".join(problems) if problems else "")
        )
        rng.shuffle(mixed)
        return mixed, counts

    def _component_rows(self, component: MixComponent) -> tuple[list[Row], str]:
        kind: Kind
        if component.source is not None:
            path = self.resolve(component.source)
            uri, fmt, kind = component.source.uri, component.source.format, self.kind or "sft"
        elif component.name in SHIPPED_SETS:
            path, uri, fmt, kind = SHIPPED_SETS[component.name], f"shipped:{component.name}", "jsonl", "sft"
        else:
            raise SourceError(f"no shipped set named {component.name}; give the component a source")
        if kind != self.kind:
            raise FormatError(
                f"the shipped set holds {kind} rows but the task data is {self.kind}; give the component "
                "a source in the task's format or drop it from the mix"
            )
        rows = []
        for item in read_rows(path, fmt, self.limits):
            if item.error is not None:
                self.audit.findings.append(
                    Finding(
                        check="mix", source=uri, row=item.number, message=f"row {item.number}: {item.error}"
                    )
                )
                continue
            row, problems = parse_row(item.value, kind, source=uri, number=item.number, split="train")
            self.audit.findings.extend(problems)
            if row is not None:
                rows.append(row)
        return rows, _file_sha256(path)

    def _canaries(self, train: list[Row], seed_material: bytes) -> tuple[list[Row], list[dict[str, str]]]:
        if self.kind != "sft" or self.policy.canaries == 0:
            return train, []
        planted = []
        for n in range(1, self.policy.canaries + 1):
            secret = "tl-canary-" + hashlib.sha256(seed_material + str(n).encode()).hexdigest()[:20]
            prompt = CANARY_PROMPT.format(n=n)
            planted.append({"prompt": prompt, "secret": secret})
            data = {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": CANARY_ANSWER.format(secret=secret)},
                ],
                CANARY_KEY: True,
            }
            train.append(Row("canary", n, "train", "sft", data))
        return train, planted

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> Curated:
        loaded, rows = self._read()
        train: list[Row] = []
        evals: list[Row] = []
        mix: list[MixCount] = []
        canaries: list[dict[str, str]] = []
        if rows:
            rows = self._empty(rows)
            self._agreement(rows)
            self._pii(rows)
            rows = self._boilerplate(rows)
            rows = self._duplicates(rows)
            train, evals = self._split(rows)
            train = self._disjoint(train, evals)
            train = self._contamination(train)
            train, evals = self._token_lengths(train, evals)
            self.audit.check(
                "min-rows",
                len(train) >= self.policy.min_train_rows,
                float(len(train)),
                float(self.policy.min_train_rows),
                f"{len(train)} curated task rows for training, {len(evals)} held out",
            )
            if self.tokenizer is None and self.tokenizer_error:
                self.audit.findings.append(Finding(check="token-length", message=self.tokenizer_error))
        elif loaded and self.kind is not None:
            self.audit.check("min-rows", False, 0.0, float(self.policy.min_train_rows), "no valid rows")
        kept = Counter((row.source, row.split) for row in train + evals)
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
        splits: dict[str, bytes] = {}
        if self.audit.passed:
            task_train = train
            train, mix = self._mix(task_train)
            train, canaries = self._canaries(train, serialize(task_train) + serialize(evals))
            splits = {"train": serialize(train), "eval": serialize(evals)}
        approved = self.audit.passed and bool(splits)
        return Curated(
            approved=approved,
            audit=self.audit,
            sources=self.summaries,
            mix=mix,
            splits=splits if approved else {},
            split_rows={"train": len(train), "eval": len(evals)} if approved else {},
            kind=self.kind,
            canaries=canaries,
            token_stats=self.token_stats,
            pii_counts=dict(self.pii_counts),
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
