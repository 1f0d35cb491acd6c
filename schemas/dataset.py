"""Dataset events: submission by an operator, approval or rejection by curation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract, Event
from schemas.gate_policy import GatePolicy
from schemas.recipe import TrainingRecipe
from schemas.refs import ArtifactRef, Name, RouteAlias, Sha256, Tenant


class DataSource(Contract):
    uri: str = Field(min_length=1, description="Local path, artifact key or s3:// URI")
    format: Literal["jsonl", "parquet", "csv", "hf-dataset"] = "jsonl"
    sha256: Sha256 | None = Field(default=None, description="Expected content hash, if known")


class MixComponent(Contract):
    name: Literal["task", "general-replay", "safety", "golden"]
    ratio: float = Field(ge=0, le=1, description="Share of the training split")
    source: DataSource | None = Field(default=None, description="None: the shipped set")


class MixSpec(Contract):
    components: tuple[MixComponent, ...] = (MixComponent(name="task", ratio=1.0),)
    seed: int = 0


class DatasetSubmitted(Event):
    event_type = "dataset.submitted"

    submission_id: str = Field(min_length=1)
    tenant: Tenant
    task: Name
    route: RouteAlias = Field(description="Alias the resulting model will be served under")
    sources: tuple[DataSource, ...] = Field(min_length=1)
    mix: MixSpec = MixSpec()
    recipe: TrainingRecipe
    gate_policy: GatePolicy = GatePolicy()

    def entity_id(self) -> str:
        return self.submission_id


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
    recipe: TrainingRecipe
    gate_policy: GatePolicy = GatePolicy()

    def entity_id(self) -> str:
        return self.dataset_id


class DatasetRejected(Event):
    event_type = "dataset.rejected"

    submission_id: str
    tenant: Tenant
    task: Name
    findings: tuple[Finding, ...] = Field(min_length=1)
    audit: tuple[AuditCheck, ...] = ()
    report: ArtifactRef | None = None

    def entity_id(self) -> str:
        return self.submission_id
