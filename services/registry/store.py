"""The registry's database work: record events once, project them, answer queries (sync code)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from schemas.envelope import Envelope
from schemas.evaluation import EvalFailed
from schemas.events import Event
from schemas.queries import (
    AdaptationCard,
    DatasetDetail,
    DatasetSummary,
    EvalDetail,
    EvalRecord,
    GateRecord,
    ModelVersionDetail,
    ModelVersionSummary,
    RunDetail,
    RunSummary,
    Timeline,
    TimelineEntry,
)
from schemas.training import TrainingProgress
from services.registry import cards
from services.registry.projections import project
from services.registry.tables import (
    DatasetRow,
    DeadLetterRow,
    EvalReportRow,
    EventRecord,
    GateDecisionRow,
    ModelVersionRow,
    TrainingRunRow,
)

DUPLICATE = "duplicate"


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadLetter:
    original_subject: str
    service: str
    kind: str
    reason: str
    headers: dict[str, str]
    body: bytes
    dlq_stream_seq: int | None


class NotFound(LookupError):
    pass


class RegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    # -- writes ----------------------------------------------------------------------------
    def record(self, event: Event, envelope: Envelope, *, stream_seq: int | None = None) -> str:
        """Append the event and project it in one transaction; returns the outcome.

        A `ce-id` seen before is a duplicate (redelivery, or a republish outside JetStream's
        duplicate window): nothing changes and the outcome is "duplicate".
        """
        at = datetime.now(UTC)
        with self.sessions() as session:
            if session.scalar(select(EventRecord.id).where(EventRecord.ce_id == envelope.id)):
                return DUPLICATE
            record = EventRecord(
                ce_id=envelope.id,
                type=envelope.type,
                source=envelope.source,
                subject=envelope.subject,
                time=envelope.time,
                correlation_id=envelope.correlation_id,
                causation_id=envelope.causation_id,
                tenant=envelope.tenant,
                traceparent=envelope.traceparent,
                stream_seq=stream_seq,
                payload=event.model_dump(mode="json"),
                recorded_at=at,
            )
            session.add(record)
            try:
                session.flush()
                record.outcome = project(session, event, envelope, at)
                session.commit()
            except IntegrityError:
                # a concurrent replica recorded the same ce-id first
                session.rollback()
                return DUPLICATE
            return record.outcome

    def record_dead_letter(self, letter: DeadLetter) -> bool:
        headers = {k.lower(): v for k, v in letter.headers.items()}
        with self.sessions() as session:
            if letter.dlq_stream_seq is not None and session.scalar(
                select(DeadLetterRow.id).where(DeadLetterRow.dlq_stream_seq == letter.dlq_stream_seq)
            ):
                return False
            session.add(
                DeadLetterRow(
                    dlq_stream_seq=letter.dlq_stream_seq,
                    original_subject=letter.original_subject,
                    service=letter.service,
                    kind=letter.kind,
                    reason=letter.reason,
                    ce_id=headers.get("ce-id"),
                    correlation_id=headers.get("ce-correlationid"),
                    headers=letter.headers,
                    body=letter.body.decode("utf-8", errors="replace"),
                    recorded_at=datetime.now(UTC),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
            return True

    # -- reads -----------------------------------------------------------------------------
    def count_events(self, correlation_id: str | None = None) -> int:
        with self.sessions() as session:
            query = select(func.count(EventRecord.id))
            if correlation_id:
                query = query.where(EventRecord.correlation_id == correlation_id)
            return int(session.scalar(query) or 0)

    def timeline(self, correlation_id: str) -> Timeline:
        with self.sessions() as session:
            rows = session.scalars(
                select(EventRecord)
                .where(EventRecord.correlation_id == correlation_id)
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            return Timeline(
                correlation_id=correlation_id,
                entries=tuple(_entry(i + 1, row) for i, row in enumerate(rows)),
            )

    def lineages(self, *, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent lineages: first and last event, how many, the latest type."""
        with self.sessions() as session:
            query = (
                select(
                    EventRecord.correlation_id,
                    func.min(EventRecord.time),
                    func.max(EventRecord.time),
                    func.count(EventRecord.id),
                )
                .group_by(EventRecord.correlation_id)
                .order_by(func.max(EventRecord.time).desc())
                .limit(limit)
            )
            if tenant:
                query = query.where(EventRecord.tenant == tenant)
            found = []
            for correlation, first, last, count in session.execute(query).all():
                latest = session.scalars(
                    select(EventRecord)
                    .where(EventRecord.correlation_id == correlation)
                    .order_by(EventRecord.time.desc(), EventRecord.id.desc())
                    .limit(1)
                ).one()
                found.append(
                    {
                        "correlation_id": correlation,
                        "first": first.isoformat(),
                        "last": last.isoformat(),
                        "events": int(count),
                        "latest": latest.type,
                        "tenant": latest.tenant,
                    }
                )
            return found

    def events_of_types(self, prefix: str, *, limit: int = 500) -> list[dict[str, Any]]:
        """Events whose type starts with `prefix` (e.g. `tuneline.rollout.`), oldest first, with payloads."""
        with self.sessions() as session:
            rows = session.scalars(
                select(EventRecord)
                .where(EventRecord.type.startswith(prefix))
                .order_by(EventRecord.time.desc(), EventRecord.id.desc())
                .limit(limit)
            ).all()
            return [
                {
                    "type": row.type,
                    "time": row.time.isoformat(),
                    "correlation_id": row.correlation_id,
                    "subject": row.subject,
                    "payload": row.payload,
                }
                for row in reversed(rows)
            ]

    def list_versions(
        self,
        *,
        tenant: str | None = None,
        route: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> tuple[ModelVersionSummary, ...]:
        with self.sessions() as session:
            query = _newest(
                ModelVersionRow, ModelVersionRow.created_at, limit, tenant=tenant, route=route, status=status
            )
            return tuple(_summary(row) for row in session.scalars(query))

    def get_version(self, version_id: str) -> ModelVersionDetail:
        with self.sessions() as session:
            row = _by_id_or_prefix(
                session, ModelVersionRow, ModelVersionRow.version_id, version_id, "model version"
            )
            history = session.scalars(
                select(EventRecord)
                .where(EventRecord.correlation_id == row.correlation_id)
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            return ModelVersionDetail(
                summary=_summary(row),
                model_ref=row.model_ref,
                lineage=row.lineage,
                history=tuple(_entry(i + 1, r) for i, r in enumerate(history)),
            )

    def list_datasets(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> tuple[DatasetSummary, ...]:
        with self.sessions() as session:
            query = _newest(DatasetRow, DatasetRow.updated_at, limit, tenant=tenant, status=status)
            return tuple(_dataset_summary(row) for row in session.scalars(query))

    def get_dataset(self, ident: str) -> DatasetDetail:
        """By submission id, dataset id, or a unique prefix of a dataset id."""
        with self.sessions() as session:
            row = session.get(DatasetRow, ident)
            if row is None:
                matches = session.scalars(
                    select(DatasetRow)
                    .where(DatasetRow.dataset_id.startswith(ident.lower()))
                    .order_by(DatasetRow.updated_at.desc())
                    .limit(50)
                ).all()  # one dataset may come from several submissions: the newest answers
                if len({m.dataset_id for m in matches}) > 1:
                    raise NotFound(f"dataset id prefix {ident!r} is ambiguous; give more characters")
                row = matches[0] if matches else None
            if row is None:
                raise NotFound(f"no dataset or submission {ident!r} in the registry")
            return DatasetDetail(
                summary=_dataset_summary(row),
                manifest=row.manifest,
                report=row.report,
                splits=row.splits,
                audit=row.audit,
                findings=row.findings,
                details=row.details,
            )

    def list_runs(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> tuple[RunSummary, ...]:
        with self.sessions() as session:
            query = _newest(TrainingRunRow, TrainingRunRow.updated_at, limit, tenant=tenant, status=status)
            return tuple(_run_summary(row) for row in session.scalars(query))

    def get_run(self, ident: str) -> RunDetail:
        """By run id or a unique prefix of one."""
        with self.sessions() as session:
            row = _by_id_or_prefix(session, TrainingRunRow, TrainingRunRow.run_id, ident, "training run")
            history = session.scalars(
                select(EventRecord)
                .where(
                    EventRecord.subject.in_([row.run_id, row.version_id or row.run_id]),
                    EventRecord.type != TrainingProgress.ce_type(),
                )
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            return RunDetail(
                summary=_run_summary(row),
                base_sha256=row.base_sha256,
                recipe_sha256=row.recipe_sha256,
                history=tuple(_entry(i + 1, r) for i, r in enumerate(history)),
            )

    def get_evals(self, ident: str) -> EvalDetail:
        """Every evaluation and gate decision of a model version, oldest first."""
        with self.sessions() as session:
            version = _by_id_or_prefix(
                session, ModelVersionRow, ModelVersionRow.version_id, ident, "model version"
            )
            return _eval_detail(session, version.version_id)

    def card(self, ident: str) -> AdaptationCard:
        """The adaptation card, assembled from the version's lineage as recorded here."""
        with self.sessions() as session:
            version = _by_id_or_prefix(
                session, ModelVersionRow, ModelVersionRow.version_id, ident, "model version"
            )
            dataset = None
            if version.dataset_id:
                dataset = session.scalars(
                    select(DatasetRow)
                    .where(DatasetRow.dataset_id == version.dataset_id)
                    .order_by(DatasetRow.updated_at.desc())
                ).first()
            run = session.get(TrainingRunRow, version.run_id) if version.run_id else None
            evals = _eval_detail(session, version.version_id)
            card = cards.assemble(
                version=_summary(version),
                model_ref=version.model_ref,
                lineage=version.lineage,
                dataset=_dataset_card_input(dataset),
                run=_run_summary(run).model_dump(mode="json") if run else None,
                evals=evals,
            )
            return AdaptationCard(version_id=version.version_id, card=card, markdown=cards.markdown(card))

    def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit)).all()
            return [
                {
                    "original_subject": r.original_subject,
                    "service": r.service,
                    "kind": r.kind,
                    "reason": r.reason,
                    "ce_id": r.ce_id,
                    "recorded_at": _utc(r.recorded_at).isoformat(),
                }
                for r in rows
            ]


def _by_id_or_prefix(session: Session, table: Any, key: Any, ident: str, what: str) -> Any:
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


def _version(session: Session, ident: str) -> ModelVersionRow:
    row: ModelVersionRow = _by_id_or_prefix(
        session, ModelVersionRow, ModelVersionRow.version_id, ident, "model version"
    )
    return row


def _eval_detail(session: Session, version_id: str) -> EvalDetail:
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
                created_at=_utc(r.created_at),
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
                created_at=_utc(d.created_at),
                notes=tuple(payloads.get(d.ce_id, {}).get("notes", ())),
            )
            for d in decisions
        ),
        failures=tuple(f.payload for f in failures),
    )


def _dataset_card_input(row: DatasetRow | None) -> dict[str, Any] | None:
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


def _newest(table: Any, newest_first: Any, limit: int, **equal_to: str | None) -> Any:
    """SELECT rows of `table`, newest first, keeping those whose columns equal the given values
    (a None value does not filter)."""
    query = select(table).order_by(newest_first.desc()).limit(limit)
    for column, value in equal_to.items():
        if value:
            query = query.where(getattr(table, column) == value)
    return query


def _summary_text(row: EventRecord) -> str:
    """One short line about the payload for timelines."""
    payload = row.payload
    keys = ("task", "run_id", "dataset_id", "step", "loss", "route", "phase", "error", "reason")
    parts = [f"{k}={payload[k]}" for k in keys if payload.get(k) not in (None, "", [])]
    if "candidate" in payload and isinstance(payload["candidate"], dict):
        parts.append(f"base={payload['candidate'].get('base', {}).get('name')}")
    text = " ".join(parts)
    return text if len(text) <= 160 else text[:157] + "…"


def _entry(position: int, row: EventRecord) -> TimelineEntry:
    return TimelineEntry(
        position=position,
        ce_id=row.ce_id,
        type=row.type,
        source=row.source,
        subject=row.subject,
        time=_utc(row.time),
        recorded_at=_utc(row.recorded_at),
        causation_id=row.causation_id,
        tenant=row.tenant,
        summary=_summary_text(row) or json.dumps(row.payload)[:160],
    )


def _summary(row: ModelVersionRow) -> ModelVersionSummary:
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
        created_at=_utc(row.created_at),
    )


def _run_summary(row: TrainingRunRow) -> RunSummary:
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
        updated_at=_utc(row.updated_at),
    )


def _dataset_summary(row: DatasetRow) -> DatasetSummary:
    return DatasetSummary(
        submission_id=row.submission_id,
        dataset_id=row.dataset_id,
        tenant=row.tenant,
        task=row.task,
        route=row.route,
        status=row.status,
        correlation_id=row.correlation_id,
        updated_at=_utc(row.updated_at),
    )
