"""Dataset events: submission by an operator, approval or rejection by curation."""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.curation_policy import CurationPolicy
from schemas.events import Contract, Event
from schemas.gate_policy import GatePolicy
from schemas.recipe import TrainingRecipe
from schemas.refs import NO_CONTROL, ArtifactRef, Name, RouteAlias, Sha256, Tenant

SourceFormat = Literal["jsonl", "parquet", "csv", "hf-dataset"]


class DataSource(Contract):
    uri: str = Field(
        min_length=1,
        max_length=2000,
        pattern=NO_CONTROL,
        description="upload:<sha256>/<name> (sent by `tuneline submit`), artifact:<key>, s3://… "
        "or a local path under the curation service's allowed roots",
    )
    format: SourceFormat = "jsonl"
    sha256: Sha256 | None = Field(default=None, description="Expected content hash, if known")
    split: Literal["train", "validation", "test", "eval"] = Field(
        default="train",
        description="validation: given early-stopping rows; test: given rows only the gates read "
        "(eval: the old name of test); a held-out split not given is drawn from train",
    )


SELF_REPLAY_KEY = "answer_from"
"""Key curation sets to "base-model" on a training-split row whose last answer the training worker
must replace with the base model's own answer (a mix component with `answers: base-model`)."""

CANARY_KEY = "canary"
"""Key curation sets to true on a planted canary row: a training run that trains on only part of
its split (max_steps) still trains on every canary, so the memorization suite probes rows that
were really seen."""


class MixComponent(Contract):
    name: Literal["task", "general-replay", "safety", "safety-refusals", "safety-lookalikes", "golden"] = (
        Field(
            description="task: the submitted data. general-replay, safety: the shipped sets; "
            "safety-refusals and safety-lookalikes are safety's two halves (harmful requests with their "
            "refusals; benign requests with the same trigger words), to weigh one against the other. "
            "golden: your own set (needs a source)"
        )
    )
    ratio: float = Field(ge=0, le=1, description="Share of the training split")
    source: DataSource | None = Field(default=None, description="None: the shipped set")
    answers: Literal["written", "base-model"] = Field(
        default="written",
        description="written: train on the set's own answers. base-model: the training worker first "
        "replaces each of these rows' last answer with the base model's own greedy answer "
        "(self-replay), so the rows hold the adapter to what the base already does instead of "
        "teaching a new style. Rows whose written answer is a refusal keep it (a refusal is what a "
        "safety set teaches). Chat (sft) rows only; not for the task component",
    )


class MixSpec(Contract):
    """Shares of the training split; they sum to 1 and include the task data."""

    components: tuple[MixComponent, ...] = (MixComponent(name="task", ratio=1.0),)
    seed: int = 0

    @model_validator(mode="after")
    def _shares(self) -> Self:
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"mix components must be distinct, got {names}")
        task = [c for c in self.components if c.name == "task"]
        if not task or task[0].ratio <= 0:
            raise ValueError("the mix needs a `task` component with a ratio above 0")
        total = sum(c.ratio for c in self.components)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"mix ratios must sum to 1, they sum to {total:g}")
        if task[0].answers != "written":
            raise ValueError("the `task` component trains on its written answers (answers: written)")
        if any(c.name == "golden" and c.source is None for c in self.components):
            raise ValueError("the `golden` mix component needs a `source` (golden examples are yours)")
        return self


class DatasetSubmitted(Event):
    event_type = "dataset.submitted"

    submission_id: str = Field(min_length=1)
    tenant: Tenant
    task: Name
    route: RouteAlias = Field(description="Alias the resulting model will be served under")
    sources: tuple[DataSource, ...] = Field(min_length=1)
    mix: MixSpec = MixSpec()
    curation: CurationPolicy = CurationPolicy()
    recipe: TrainingRecipe
    gate_policy: GatePolicy = GatePolicy()

    def entity_id(self) -> str:
        return self.submission_id


class SubmissionSpec(Contract):
    """The recipe file of `tuneline submit data.jsonl --recipe recipe.yaml`.

    Everything about a submission except its data: task, route, training recipe, mix, curation
    thresholds and release gates.
    """

    task: Name
    route: RouteAlias
    tenant: Tenant | None = Field(default=None, description="None: the CLI's tenant")
    training: TrainingRecipe
    mix: MixSpec = MixSpec()
    curation: CurationPolicy = CurationPolicy()
    gates: GatePolicy = GatePolicy()


class SplitInfo(Contract):
    name: Name
    rows: int = Field(ge=0)
    artifact: ArtifactRef


class AuditCheck(Contract):
    name: Name
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


class Finding(Contract):
    check: Name
    message: str
    row: int | None = Field(default=None, description="1-based row number in its source")
    field: str | None = None
    source: str | None = None
    related_rows: tuple[int, ...] = Field(
        default=(), description="Other rows involved, e.g. the rest of a duplicate group"
    )


class SourceSummary(Contract):
    uri: str
    format: SourceFormat
    split: Literal["train", "eval"]
    sha256: Sha256
    rows: int = Field(ge=0, description="Rows read")
    kept: int = Field(ge=0, description="Rows in the curated splits")


class MixCount(Contract):
    name: Name
    ratio: float
    rows: int = Field(ge=0)
    available: int = Field(ge=0, description="Rows the component's set holds")
    sha256: Sha256 | None = None


class DatasetApproved(Event):
    event_type = "dataset.approved"

    submission_id: str
    dataset_id: Sha256
    tenant: Tenant
    task: Name
    route: RouteAlias
    manifest: ArtifactRef
    splits: tuple[SplitInfo, ...] = Field(min_length=1)
    audit: tuple[AuditCheck, ...] = ()
    findings: tuple[Finding, ...] = Field(
        default=(), description="The first findings (dropped or redacted rows); all are in `report`"
    )
    findings_total: int = Field(default=0, ge=0)
    report: ArtifactRef | None = None
    sources: tuple[SourceSummary, ...] = ()
    mix: tuple[MixCount, ...] = ()
    recipe: TrainingRecipe
    gate_policy: GatePolicy = GatePolicy()

    def entity_id(self) -> str:
        return self.dataset_id


class DatasetRejected(Event):
    event_type = "dataset.rejected"

    submission_id: str
    tenant: Tenant
    task: Name
    findings: tuple[Finding, ...] = Field(
        min_length=1, description="The failed checks first, then row findings; all are in `report`"
    )
    findings_total: int = Field(default=0, ge=0)
    audit: tuple[AuditCheck, ...] = ()
    report: ArtifactRef | None = None
    sources: tuple[SourceSummary, ...] = ()

    def entity_id(self) -> str:
        return self.submission_id
