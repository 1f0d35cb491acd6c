"""Registry rows as the contract's read models (summaries, details, timeline entries), and the
lookups by id or unique prefix that the store's queries share. Sync code, inside a session."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.evaluation import EvalFailed
from schemas.queries import (
    DatasetSummary,
    EvalDetail,
    EvalRecord,
    GateRecord,
    ModelVersionSummary,
    RunSummary,
    TimelineEntry,
)
from services.registry.tables import (
    DatasetRow,
    EvalReportRow,
    EventRecord,
    GateDecisionRow,
    ModelVersionRow,
    TrainingRunRow,
)


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class NotFound(LookupError):
    pass


def by_id_or_prefix(session: Session, table: Any, key: Any, ident: str, what: str) -> Any:
    """The row whose key is `ident`, or the only one whose key starts with it."""
    row = session.get(table, ident)
    if row is None:
        matches = session.scalars(select(table).where(key.startswith(ident)).limit(2)).all()
        if len(matches) > 1:
            raise NotFound(f"{what} id prefix {ident!r} is ambiguous; give more characters")
        row = matches[0] if matches else None
    if row is None:
        raise NotFound(f"{what} {ident!r} is not in the registry")
    return row


def eval_detail(session: Session, version_id: str) -> EvalDetail:
    reports = session.scalars(
        select(EvalReportRow).where(EvalReportRow.version_id == version_id).order_by(EvalReportRow.created_at)
    ).all()
    decisions = session.scalars(
        select(GateDecisionRow)
        .where(GateDecisionRow.version_id == version_id)
        .order_by(GateDecisionRow.created_at)
    ).all()
    recorded = {
        r.ce_id: r
        for r in session.scalars(
            select(EventRecord).where(
                EventRecord.ce_id.in_([d.ce_id for d in decisions] + [r.ce_id for r in reports])
            )
        )
    }
    payloads = {ce_id: r.payload for ce_id, r in recorded.items()}
    failures = session.scalars(
        select(EventRecord)
        .where(EventRecord.subject == version_id, EventRecord.type == EvalFailed.ce_type())
        .order_by(EventRecord.time)
    ).all()
    return EvalDetail(
        version_id=version_id,
        evaluations=tuple(
            EvalRecord(
                ce_id=r.ce_id,
                suites=r.suites,
                report=r.report,
                created_at=utc(r.created_at),
                source=recorded[r.ce_id].source if r.ce_id in recorded else None,
            )
            for r in reports
        ),
        decisions=tuple(
            GateRecord(
                ce_id=d.ce_id,
                passed=d.passed,
                source=recorded[d.ce_id].source if d.ce_id in recorded else None,
                gates=d.gates,
                policy=d.policy,
                created_at=utc(d.created_at),
                notes=tuple(payloads.get(d.ce_id, {}).get("notes", ())),
            )
            for d in decisions
        ),
        failures=tuple(f.payload for f in failures),
    )


def dataset_card_input(row: DatasetRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "dataset_id": row.dataset_id,
        "submission_id": row.submission_id,
        "task": row.task,
        "manifest": row.manifest,
        "report": row.report,
        "splits": row.splits,
        "audit": row.audit,
        "details": row.details,
    }


def newest(table: Any, newest_first: Any, limit: int, **equal_to: str | None) -> Any:
    """SELECT rows of `table`, newest first, keeping those whose columns equal the given values
    (a None value does not filter)."""
    query = select(table).order_by(newest_first.desc()).limit(limit)
    for column, value in equal_to.items():
        if value:
            query = query.where(getattr(table, column) == value)
    return query


def summary_text(row: EventRecord) -> str:
    """One short line about the payload for timelines."""
    payload = row.payload
    keys = ("task", "run_id", "dataset_id", "step", "loss", "route", "phase", "error", "reason")
    parts = [f"{k}={payload[k]}" for k in keys if payload.get(k) not in (None, "", [])]
    if "candidate" in payload and isinstance(payload["candidate"], dict):
        parts.append(f"base={payload['candidate'].get('base', {}).get('name')}")
    text = " ".join(parts)
    return text if len(text) <= 160 else text[:157] + "…"


def timeline_entry(position: int, row: EventRecord) -> TimelineEntry:
    return TimelineEntry(
        position=position,
        ce_id=row.ce_id,
        type=row.type,
        source=row.source,
        subject=row.subject,
        time=utc(row.time),
        recorded_at=utc(row.recorded_at),
        causation_id=row.causation_id,
        tenant=row.tenant,
        summary=summary_text(row) or json.dumps(row.payload)[:160],
    )


def version_summary(row: ModelVersionRow) -> ModelVersionSummary:
    return ModelVersionSummary(
        version_id=row.version_id,
        tenant=row.tenant,
        route=row.route,
        status=row.status,
        produced_by=row.produced_by,
        base_name=row.base_name,
        base_sha256=row.base_sha256,
        adapter_sha256=row.adapter_sha256,
        method=row.method,
        quantization=row.quantization,
        dataset_id=row.dataset_id,
        run_id=row.run_id,
        created_at=utc(row.created_at),
    )


def run_summary(row: TrainingRunRow) -> RunSummary:
    return RunSummary(
        run_id=row.run_id,
        tenant=row.tenant,
        dataset_id=row.dataset_id,
        method=row.method,
        base_name=row.base_name,
        status=row.status,
        step=row.step,
        total_steps=row.total_steps,
        loss=row.loss,
        eval_loss=row.eval_loss,
        tokens_per_second=row.tokens_per_second,
        eta_seconds=row.eta_seconds,
        attempts=row.attempts or 0,
        version_id=row.version_id,
        error=row.error,
        correlation_id=row.correlation_id,
        updated_at=utc(row.updated_at),
    )


def dataset_summary(row: DatasetRow) -> DatasetSummary:
    return DatasetSummary(
        submission_id=row.submission_id,
        dataset_id=row.dataset_id,
        tenant=row.tenant,
        task=row.task,
        route=row.route,
        status=row.status,
        correlation_id=row.correlation_id,
        updated_at=utc(row.updated_at),
    )
