"""Projects recorded events into datasets, runs, model versions, reports, gates and deployments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas import candidate, dataset, evaluation, rollout, training
from schemas.envelope import Envelope
from schemas.events import Event
from services.registry.tables import (
    DatasetRow,
    DeploymentRow,
    EvalReportRow,
    GateDecisionRow,
    ModelVersionRow,
    TrainingRunRow,
)

Projector = Callable[[Session, Any, Envelope, datetime], str]
PROJECTED = "projected"
RECORDED_ONLY = "recorded"
SUPERSEDED = "superseded"


def _dump(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_dump(v) for v in value]
    return value.model_dump(mode="json") if value is not None else None


def _dataset(session: Session, submission_id: str, env: Envelope, at: datetime) -> DatasetRow:
    row = session.get(DatasetRow, submission_id)
    if row is None:
        row = DatasetRow(
            submission_id=submission_id,
            tenant=env.tenant,
            task="",
            status="submitted",
            correlation_id=env.correlation_id,
            updated_at=at,
        )
        session.add(row)
    row.updated_at = at
    return row


def dataset_submitted(s: Session, e: dataset.DatasetSubmitted, env: Envelope, at: datetime) -> str:
    row = _dataset(s, e.submission_id, env, at)
    row.task, row.route = e.task, e.route  # status stays: a late submission never undoes a decision
    return PROJECTED


def dataset_approved(s: Session, e: dataset.DatasetApproved, env: Envelope, at: datetime) -> str:
    row = _dataset(s, e.submission_id, env, at)
    row.task, row.route, row.status = e.task, e.route, "approved"
    row.dataset_id = e.dataset_id
    row.manifest = _dump(e.manifest)
    row.splits = _dump(e.splits)
    row.audit = _dump(e.audit)
    row.findings = _dump(e.findings)
    row.report = _dump(e.report)
    row.details = {
        "findings_total": e.findings_total,
        "sources": _dump(e.sources),
        "mix": _dump(e.mix),
        "method": e.recipe.method,
        "base_model": e.recipe.base_model,
    }
    return PROJECTED


def dataset_rejected(s: Session, e: dataset.DatasetRejected, env: Envelope, at: datetime) -> str:
    row = _dataset(s, e.submission_id, env, at)
    row.task, row.status = e.task, "rejected"
    row.findings = _dump(e.findings)
    row.audit = _dump(e.audit)
    row.report = _dump(e.report)
    row.details = {"findings_total": e.findings_total, "sources": _dump(e.sources)}
    return PROJECTED


def _run(s: Session, run_id: str, env: Envelope, at: datetime) -> TrainingRunRow:
    row = s.get(TrainingRunRow, run_id)
    if row is None:
        row = TrainingRunRow(
            run_id=run_id,
            tenant=env.tenant,
            status="started",
            attempts=0,
            correlation_id=env.correlation_id,
            updated_at=at,
        )
        s.add(row)
    row.updated_at = at
    return row


_TERMINAL_RUN = {"completed", "failed", "cancelled"}


def training_started(s: Session, e: training.TrainingStarted, env: Envelope, at: datetime) -> str:
    row = _run(s, e.run_id, env, at)
    row.dataset_id, row.method, row.recipe_sha256 = e.dataset_id, e.method, e.recipe_sha256
    row.base_name, row.base_sha256 = e.base.name, e.base.sha256
    row.attempts = max(row.attempts or 0, e.attempt)
    if row.status not in _TERMINAL_RUN:
        row.status = "running"
    return PROJECTED


def training_progress(s: Session, e: training.TrainingProgress, env: Envelope, at: datetime) -> str:
    row = _run(s, e.run_id, env, at)
    if row.step is not None and e.step < row.step:
        return RECORDED_ONLY  # progress arrived out of order: keep the furthest step
    row.step, row.total_steps = e.step, e.total_steps
    # an evaluation's progress carries no training loss or throughput: keep the last known ones
    row.loss = e.loss if e.loss is not None else row.loss
    row.eval_loss = e.eval_loss if e.eval_loss is not None else row.eval_loss
    row.tokens_per_second = e.tokens_per_second if e.tokens_per_second is not None else row.tokens_per_second
    row.eta_seconds = e.eta_seconds if e.eta_seconds is not None else row.eta_seconds
    if row.status not in _TERMINAL_RUN:
        row.status = "running"
    return PROJECTED


def training_failed(s: Session, e: training.TrainingFailed, env: Envelope, at: datetime) -> str:
    row = _run(s, e.run_id, env, at)
    if row.status == "completed":
        return RECORDED_ONLY
    row.status, row.error = "failed", e.error
    return PROJECTED


def training_cancelled(s: Session, e: training.TrainingCancelled, env: Envelope, at: datetime) -> str:
    row = _run(s, e.run_id, env, at)
    if row.status == "completed":
        return RECORDED_ONLY
    row.status = "cancelled"
    return PROJECTED


def candidate_ready(s: Session, e: candidate.CandidateReady, env: Envelope, at: datetime) -> str:
    ref = e.candidate
    version_id = ref.version_id()
    if e.lineage.run_id is not None and e.produced_by == "training":
        winner = s.scalars(
            select(ModelVersionRow.version_id).where(ModelVersionRow.run_id == e.lineage.run_id)
        ).first()
        if winner is not None and winner != version_id:
            return SUPERSEDED  # the first candidate.ready of a run wins
        run = _run(s, e.lineage.run_id, env, at)
        run.status, run.version_id = "completed", version_id
    if s.get(ModelVersionRow, version_id) is not None:
        return RECORDED_ONLY
    s.add(
        ModelVersionRow(
            version_id=version_id,
            tenant=e.tenant,
            route=e.route,
            status="candidate",
            produced_by=e.produced_by,
            base_name=ref.base.name,
            base_sha256=ref.base.sha256,
            adapter_sha256=ref.adapter.artifact.sha256 if ref.adapter else None,
            weights_sha256=ref.weights.sha256 if ref.weights else None,
            method=ref.method or (ref.adapter.method if ref.adapter else ref.merge.method),
            quantization=ref.quantization.method,
            dataset_id=ref.dataset.dataset_id if ref.dataset else e.lineage.dataset_id,
            run_id=e.lineage.run_id,
            model_ref=ref.model_dump(mode="json"),
            lineage=e.lineage.model_dump(mode="json"),
            correlation_id=env.correlation_id,
            created_at=at,
            updated_at=at,
        )
    )
    return PROJECTED


def _set_status(s: Session, version_id: str, status: str, at: datetime) -> None:
    row = s.get(ModelVersionRow, version_id)
    if row is not None:
        row.status, row.updated_at = status, at


def eval_completed(s: Session, e: evaluation.EvalCompleted, env: Envelope, at: datetime) -> str:
    version_id = e.candidate.version_id()
    s.add(
        EvalReportRow(
            ce_id=env.id,
            version_id=version_id,
            suites=_dump(e.suites),
            report=_dump(e.report),
            created_at=at,
        )
    )
    _set_status(s, version_id, "evaluated", at)
    return PROJECTED


def eval_failed(s: Session, e: evaluation.EvalFailed, env: Envelope, at: datetime) -> str:
    _set_status(s, e.candidate.version_id(), "eval-failed", at)
    return PROJECTED


def _gates(passed: bool) -> Projector:
    def project(s: Session, e: evaluation._GateVerdict, env: Envelope, at: datetime) -> str:
        version_id = e.candidate.version_id()
        s.add(
            GateDecisionRow(
                ce_id=env.id,
                version_id=version_id,
                passed=passed,
                gates=_dump(e.gates),
                policy=_dump(e.policy),
                card=_dump(e.card),
                created_at=at,
            )
        )
        _set_status(s, version_id, "gates-passed" if passed else "gates-failed", at)
        return PROJECTED

    return project


_ROLLOUT_STATUS = {
    "rollout.started": "shadow",
    "rollout.promoted": "production",
    "rollout.rolled-back": "rolled-back",
}


def rollout_event(s: Session, e: rollout._RolloutEvent, env: Envelope, at: datetime) -> str:
    detail = e.model_dump(mode="json")
    s.add(
        DeploymentRow(
            ce_id=env.id,
            route=e.route,
            tenant=e.tenant,
            rollout_id=getattr(e, "rollout_id", None),
            event=e.event_type,
            candidate_version=e.candidate_version,
            stable_version=e.stable_version,
            phase=getattr(e, "phase", None),
            traffic_percent=getattr(e, "traffic_percent", None),
            detail=detail,
            created_at=at,
        )
    )
    if isinstance(e, rollout.RolloutStep):
        _set_status(s, e.candidate_version, e.phase, at)
    elif e.event_type in _ROLLOUT_STATUS:
        _set_status(s, e.candidate_version, _ROLLOUT_STATUS[e.event_type], at)
    if isinstance(e, rollout.RolloutPromoted) and e.stable_version:
        _set_status(s, e.stable_version, "retired", at)
    if isinstance(e, rollout.RolloutRolledBack) and e.stable_version:
        _set_status(s, e.stable_version, "production", at)  # what the route serves again
    return PROJECTED


PROJECTORS: dict[type[Event], Projector] = {
    dataset.DatasetSubmitted: dataset_submitted,
    dataset.DatasetApproved: dataset_approved,
    dataset.DatasetRejected: dataset_rejected,
    training.TrainingStarted: training_started,
    training.TrainingProgress: training_progress,
    training.TrainingFailed: training_failed,
    training.TrainingCancelled: training_cancelled,
    candidate.CandidateReady: candidate_ready,
    evaluation.EvalCompleted: eval_completed,
    evaluation.EvalFailed: eval_failed,
    evaluation.GatesPassed: _gates(passed=True),
    evaluation.GatesFailed: _gates(passed=False),
    rollout.RolloutStarted: rollout_event,
    rollout.RolloutStep: rollout_event,
    rollout.RolloutPromoted: rollout_event,
    rollout.RolloutRolledBack: rollout_event,
    rollout.RolloutPaused: rollout_event,
}


def project(session: Session, event: Event, envelope: Envelope, at: datetime) -> str:
    """Apply `event` to the projections; events with no projection are only recorded."""
    projector = PROJECTORS.get(type(event))
    if projector is None:
        return RECORDED_ONLY
    return projector(session, event, envelope, at)
