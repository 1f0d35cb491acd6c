"""Request/reply contracts of the services' queries (`tuneline.rpc.<service>.<query>`).

Every query is paired with its request and reply models in `QUERIES` (as `schemas/catalogue.py`
pairs events with subjects); `services.core.messaging.rpc.ask` sends a request and validates the reply
into the paired model, so a caller never reads an unchecked dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from schemas.checkpoints import CheckpointScreen, CheckpointScreenRequest
from schemas.events import Contract
from schemas.gate_policy import GatePolicy
from schemas.refs import ModelRef
from schemas.subjects import TENANT_QUERIES, rpc_subject


class TimelineQuery(Contract):
    correlation_id: str = Field(min_length=1)


class TimelineEntry(Contract):
    position: int
    ce_id: str
    type: str
    source: str
    subject: str
    time: datetime
    recorded_at: datetime
    causation_id: str | None
    tenant: str
    summary: str


class Timeline(Contract):
    correlation_id: str
    entries: tuple[TimelineEntry, ...]


class ModelVersionsQuery(Contract):
    tenant: str | None = None
    route: str | None = None
    status: str | None = Field(
        default=None, description="candidate | evaluated | gates-passed | gates-failed | production | …"
    )
    limit: int = Field(default=100, ge=1, le=1000)


class ModelVersionSummary(Contract):
    version_id: str
    tenant: str
    route: str | None
    status: str
    produced_by: str
    base_name: str
    base_sha256: str
    adapter_sha256: str | None
    method: str | None
    quantization: str
    dataset_id: str | None
    run_id: str | None
    created_at: datetime


class ModelVersionList(Contract):
    versions: tuple[ModelVersionSummary, ...]


class ModelVersionQuery(Contract):
    version_id: str = Field(min_length=1)


class ModelVersionDetail(Contract):
    summary: ModelVersionSummary
    model_ref: dict[str, Any]
    lineage: dict[str, Any]
    history: tuple[TimelineEntry, ...]


class DatasetsQuery(Contract):
    tenant: str | None = None
    status: str | None = Field(default=None, description="submitted | approved | rejected")
    limit: int = Field(default=100, ge=1, le=1000)


class DatasetSummary(Contract):
    submission_id: str
    dataset_id: str | None
    tenant: str
    task: str
    route: str | None
    status: str
    correlation_id: str
    updated_at: datetime


class DatasetList(Contract):
    datasets: tuple[DatasetSummary, ...]


class DatasetQuery(Contract):
    id: str = Field(min_length=4, description="Dataset id (or a unique prefix of it) or submission id")


class DatasetDetail(Contract):
    summary: DatasetSummary
    manifest: dict[str, Any] | None
    report: dict[str, Any] | None
    splits: list[Any] | None
    audit: list[Any] | None
    findings: list[Any] | None
    details: dict[str, Any] | None


class ApprovedDatasetQuery(Contract):
    """The route's last approved dataset, as approved: what a retrain resubmits."""

    route: str = Field(min_length=1)
    tenant: str = Field(min_length=1)


class ApprovedDataset(Contract):
    event_id: str = Field(description="The dataset.approved event's id")
    correlation_id: str
    approved: dict[str, Any] = Field(description="The dataset.approved payload, as recorded")


class RunsQuery(Contract):
    tenant: str | None = None
    status: str | None = Field(default=None, description="started | running | completed | failed | cancelled")
    limit: int = Field(default=100, ge=1, le=1000)


class RunSummary(Contract):
    run_id: str
    tenant: str
    dataset_id: str | None
    method: str | None
    base_name: str | None
    status: str
    step: int | None
    total_steps: int | None
    loss: float | None
    eval_loss: float | None
    tokens_per_second: float | None
    eta_seconds: float | None
    attempts: int
    version_id: str | None
    error: str | None
    correlation_id: str
    updated_at: datetime


class RunList(Contract):
    runs: tuple[RunSummary, ...]


class RunQuery(Contract):
    run_id: str = Field(min_length=4, description="Run id or a unique prefix of it")


class RunDetail(Contract):
    summary: RunSummary
    base_sha256: str | None
    recipe_sha256: str | None
    history: tuple[TimelineEntry, ...] = Field(description="The run's own events, progress excluded")


class EvalsQuery(Contract):
    version_id: str = Field(min_length=4, description="Model version id (or a unique prefix of it)")


class EvalRecord(Contract):
    ce_id: str
    suites: list[Any]
    report: dict[str, Any] | None
    created_at: datetime
    source: str | None = Field(default=None, description="ce-source of the eval.completed event")


class GateRecord(Contract):
    ce_id: str
    passed: bool
    source: str | None = Field(default=None, description="ce-source of the verdict event")
    gates: list[Any]
    policy: dict[str, Any]
    created_at: datetime
    notes: tuple[str, ...] = Field(default=(), description="Gates that did not apply, and why")


class EvalDetail(Contract):
    version_id: str
    evaluations: tuple[EvalRecord, ...] = Field(
        description="Oldest first: the first is the release evaluation"
    )
    decisions: tuple[GateRecord, ...]
    failures: tuple[dict[str, Any], ...] = Field(default=(), description="eval.failed payloads")


class CardQuery(Contract):
    version_id: str = Field(min_length=4)


class AdaptationCard(Contract):
    version_id: str
    card: dict[str, Any] = Field(description="The card as data (tuneline.adaptation-card/v1)")
    markdown: str


class SuiteInfo(Contract):
    name: str
    kind: str
    scorer: str
    origin: str
    sha256: str
    items: int


class SuiteList(Contract):
    suites: tuple[SuiteInfo, ...]


class SuiteRegistration(Contract):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    upload: str = Field(description="upload:<sha256>/<name> of the JSONL file (sent by the CLI)")
    scorer: str
    kind: str = "custom"


class SuiteScoreRequest(Contract):
    """Score one version on one suite, as evaluation scores it (merging's greedy-soup trials)."""

    candidate: ModelRef
    suite: str = Field(
        min_length=1, description="A catalogue suite, or target (the dataset's held-out split)"
    )
    policy: GatePolicy = Field(default_factory=GatePolicy, description="How the target suite is scored")


class SuiteScore(Contract):
    suite: str
    score: float = Field(description="The candidate's score in points (0-100)")


class QueryError(Contract):
    error: str
    code: str = Field(description="not-found | bad-request | internal")


class DeadLettersQuery(Contract):
    limit: int = Field(default=50, ge=1, le=1000, description="At most N, newest first")


class DeadLetterSummary(Contract):
    original_subject: str
    service: str
    kind: str
    reason: str
    ce_id: str | None
    recorded_at: datetime


class DeadLetterList(Contract):
    dead_letters: tuple[DeadLetterSummary, ...]


class SuitesQuery(Contract):
    """Every suite evaluation knows: shipped and registered."""


Request = TypeVar("Request", bound=BaseModel)
Reply = TypeVar("Reply", bound=BaseModel)


@dataclass(frozen=True)
class QuerySpec(Generic[Request, Reply]):
    """One query: who answers it, its name, and the models of its request and its reply."""

    service: str
    name: str
    request: type[Request]
    reply: type[Reply]

    @property
    def subject(self) -> str:
        return rpc_subject(self.service, self.name)

    @property
    def tenant_scoped(self) -> bool:
        """A tenant operator may ask it, for its own tenant's records only."""
        return self.service == "registry" and self.name in TENANT_QUERIES


TIMELINE = QuerySpec("registry", "timeline", TimelineQuery, Timeline)
MODELS_LIST = QuerySpec("registry", "models.list", ModelVersionsQuery, ModelVersionList)
MODELS_GET = QuerySpec("registry", "models.get", ModelVersionQuery, ModelVersionDetail)
DATASETS_LIST = QuerySpec("registry", "datasets.list", DatasetsQuery, DatasetList)
DATASETS_GET = QuerySpec("registry", "datasets.get", DatasetQuery, DatasetDetail)
DATASETS_APPROVED = QuerySpec("registry", "datasets.approved", ApprovedDatasetQuery, ApprovedDataset)
RUNS_LIST = QuerySpec("registry", "runs.list", RunsQuery, RunList)
RUNS_GET = QuerySpec("registry", "runs.get", RunQuery, RunDetail)
EVALS_GET = QuerySpec("registry", "evals.get", EvalsQuery, EvalDetail)
CARDS_GET = QuerySpec("registry", "cards.get", CardQuery, AdaptationCard)
DEAD_LETTERS_LIST = QuerySpec("registry", "dead-letters.list", DeadLettersQuery, DeadLetterList)
SUITES_LIST = QuerySpec("evaluation", "suites.list", SuitesQuery, SuiteList)
SUITES_ADD = QuerySpec("evaluation", "suites.add", SuiteRegistration, SuiteInfo)
SUITES_SCORE = QuerySpec("evaluation", "suites.score", SuiteScoreRequest, SuiteScore)
CHECKPOINTS_SCREEN = QuerySpec("evaluation", "checkpoints.screen", CheckpointScreenRequest, CheckpointScreen)

QUERIES: dict[str, QuerySpec[Any, Any]] = {
    q.subject: q
    for q in (
        TIMELINE,
        MODELS_LIST,
        MODELS_GET,
        DATASETS_LIST,
        DATASETS_GET,
        DATASETS_APPROVED,
        RUNS_LIST,
        RUNS_GET,
        EVALS_GET,
        CARDS_GET,
        DEAD_LETTERS_LIST,
        SUITES_LIST,
        SUITES_ADD,
        SUITES_SCORE,
        CHECKPOINTS_SCREEN,
    )
}
