"""Curation policy: which audit checks run and the thresholds that approve or reject a dataset.

Every threshold has a documented default; a submission's recipe may tighten or loosen any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract

PiiType = Literal["email", "phone", "credit_card", "ip_address", "iban", "secret"]
PII_TYPES: tuple[PiiType, ...] = ("email", "phone", "credit_card", "ip_address", "iban", "secret")

DEFAULT_BOILERPLATE = (
    r"as an ai language model",
    r"as a large language model",
    r"certainly! here",
    r"sure! here('s| is)",
    r"i'm sorry, but as an ai",
    r"i hope this helps",
    r"i cannot browse the internet",
    r"my knowledge cutoff",
)


class CurationPolicy(Contract):
    """Audit thresholds. A fraction is measured over the rows of the submitted task data."""

    data_format: Literal["auto", "sft", "preference", "feedback"] = Field(
        default="auto",
        description="auto: decided by the columns (prompt/completion or messages → sft; "
        "prompt/chosen/rejected → preference; prompt/completion/label → feedback)",
    )
    max_rows_per_source: int | None = Field(
        default=None,
        ge=1,
        description="Most rows read from one source; can only lower the server's "
        "TUNELINE_CURATION_MAX_ROWS (None: the server's limit)",
    )
    max_row_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Largest row; a larger one is a finding and is never parsed. Can only lower the "
        "server's TUNELINE_CURATION_MAX_ROW_BYTES (None: the server's limit)",
    )
    max_invalid_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Rows failing the row schema; above this: rejected"
    )
    max_empty_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Empty/whitespace completions (dropped); above: rejected"
    )
    max_seq_len: int | None = Field(
        default=None, ge=16, description="Token limit per row; None: the training recipe's max_seq_len"
    )
    max_overlong_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Rows over max_seq_len (dropped); above this: rejected"
    )
    near_duplicate_threshold: float = Field(
        default=0.5,
        ge=0.3,
        le=0.95,
        description="MinHash LSH Jaccard threshold (character shingles) at which two rows are compared "
        "as near-duplicate candidates; a candidate pair is a duplicate only when it names the same "
        "fields and few of its words differ",
    )
    minhash_permutations: int = Field(default=128, ge=16, le=1024)
    shingle_chars: int = Field(default=5, ge=3, le=10, description="Characters per MinHash shingle")
    near_duplicate_max_edit_fraction: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="At most this fraction of the longer row's words may differ (2 words always may)",
    )
    shingle_words: int = Field(
        default=3,
        ge=1,
        le=10,
        description="No longer used (near-duplicates compare character shingles, `shingle_chars`); "
        "kept so that recorded submissions still validate",
    )
    max_duplicate_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Exact + near duplicates (one of each group kept); above: rejected",
    )
    pii_action: Literal["redact", "reject", "keep"] = Field(
        default="redact", description="What to do with PII and secrets found in the task data"
    )
    pii_types: tuple[PiiType, ...] = Field(default=PII_TYPES, description="Detectors that run")
    contamination_ngram: int = Field(default=13, ge=4, le=50, description="Word n-gram size")
    max_contaminated_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Rows overlapping an eval suite (removed); above: rejected"
    )
    eval_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="Test split's share when no test source is given (gates only)"
    )
    max_eval_rows: int = Field(default=1000, ge=1, description="Cap on the created test split")
    validation_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Validation split's share of what remains, when no validation source is given "
        "(early stopping, checkpoint choice; never read by the gates)",
    )
    max_validation_rows: int = Field(default=500, ge=1, description="Cap on the created validation split")
    split_seed: int = Field(default=0, description="Seed of the drawn splits")
    min_kappa: float = Field(
        default=0.70, ge=-1, le=1, description="Cohen's (2 raters) / Fleiss' (3+) kappa; below: rejected"
    )
    boilerplate_patterns: tuple[str, ...] = Field(
        default=DEFAULT_BOILERPLATE, description="Case-insensitive regexes of teacher boilerplate"
    )
    max_boilerplate_fraction: float = Field(
        default=0.10, ge=0, le=1, description="Rows with boilerplate (flagged, kept); above: rejected"
    )
    drop_boilerplate: bool = Field(default=False, description="Also remove flagged rows")
    canaries: int = Field(
        default=3, ge=0, le=100, description="Canary rows planted in the training split (memorization eval)"
    )
    min_train_rows: int = Field(default=8, ge=1, description="Fewer curated task rows: rejected")
