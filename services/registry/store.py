"""The registry's database work: record events once, project them, answer queries (sync code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from schemas.dataset import DatasetApproved
from schemas.envelope import Envelope
from schemas.events import Event
from schemas.queries import (
    AdaptationCard,
    ApprovedDataset,
    DatasetDetail,
    DatasetSummary,
    EvalDetail,
    ModelVersionDetail,
    ModelVersionSummary,
    RunDetail,
    RunSummary,
    Timeline,
)
from schemas.serving import ServingWindow
from schemas.training import TrainingProgress
from services.registry import cards
from services.registry.projections import project
from services.registry.tables import (
    DatasetRow,
    DeadLetterRow,
    EventRecord,
    ModelVersionRow,
    TrainingRunRow,
)
from services.registry.views import (
    NotFound,
    by_id_or_prefix,
    dataset_card_input,
    dataset_summary,
    eval_detail,
    newest,
    run_summary,
    timeline_entry,
    utc,
    version_summary,
)

DUPLICATE = "duplicate"


@dataclass(frozen=True)
class DeadLetter:
    original_subject: str
    service: str
    kind: str
    reason: str
    headers: dict[str, str]
    body: bytes
    dlq_stream_seq: int | None


TELEMETRY = (ServingWindow.ce_type(),)
"""Event types recorded for the record but shown as no lineage of their own."""


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
                entries=tuple(timeline_entry(i + 1, row) for i, row in enumerate(rows)),
            )

    def lineages(self, *, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent lineages: first and last event, how many, the latest type. Telemetry
        (`serving.window`, one every few seconds per replica) is no lineage and is left out."""
        with self.sessions() as session:
            query = (
                select(
                    EventRecord.correlation_id,
                    func.min(EventRecord.time),
                    func.max(EventRecord.time),
                    func.count(EventRecord.id),
                )
                .where(EventRecord.type.not_in(TELEMETRY))
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
                    .where(EventRecord.correlation_id == correlation, EventRecord.type.not_in(TELEMETRY))
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
            query = newest(
                ModelVersionRow, ModelVersionRow.created_at, limit, tenant=tenant, route=route, status=status
            )
            return tuple(version_summary(row) for row in session.scalars(query))

    def get_version(self, version_id: str) -> ModelVersionDetail:
        with self.sessions() as session:
            row = by_id_or_prefix(
                session, ModelVersionRow, ModelVersionRow.version_id, version_id, "model version"
            )
            history = session.scalars(
                select(EventRecord)
                .where(EventRecord.correlation_id == row.correlation_id)
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            return ModelVersionDetail(
                summary=version_summary(row),
                model_ref=row.model_ref,
                lineage=row.lineage,
                history=tuple(timeline_entry(i + 1, r) for i, r in enumerate(history)),
            )

    def list_datasets(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> tuple[DatasetSummary, ...]:
        with self.sessions() as session:
            query = newest(DatasetRow, DatasetRow.updated_at, limit, tenant=tenant, status=status)
            return tuple(dataset_summary(row) for row in session.scalars(query))

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
                summary=dataset_summary(row),
                manifest=row.manifest,
                report=row.report,
                splits=row.splits,
                audit=row.audit,
                findings=row.findings,
                details=row.details,
            )

    def approved_dataset(self, route: str, tenant: str) -> ApprovedDataset:
        """The newest dataset.approved for the tenant's route, with its payload as recorded."""
        with self.sessions() as session:
            rows = session.scalars(
                select(EventRecord)
                .where(EventRecord.type == DatasetApproved.ce_type(), EventRecord.tenant == tenant)
                .order_by(EventRecord.time.desc(), EventRecord.id.desc())
                .limit(1000)
            )
            row = next((r for r in rows if r.payload.get("route") == route), None)
            if row is None:
                raise NotFound(
                    f"route {route!r} of tenant {tenant!r} has no approved dataset on record; "
                    "submit one with `tuneline datasets submit`"
                )
            return ApprovedDataset(
                event_id=row.ce_id, correlation_id=row.correlation_id, approved=row.payload
            )

    def list_runs(
        self, *, tenant: str | None = None, status: str | None = None, limit: int = 100
    ) -> tuple[RunSummary, ...]:
        with self.sessions() as session:
            query = newest(TrainingRunRow, TrainingRunRow.updated_at, limit, tenant=tenant, status=status)
            return tuple(run_summary(row) for row in session.scalars(query))

    def get_run(self, ident: str) -> RunDetail:
        """By run id or a unique prefix of one."""
        with self.sessions() as session:
            row = by_id_or_prefix(session, TrainingRunRow, TrainingRunRow.run_id, ident, "training run")
            history = session.scalars(
                select(EventRecord)
                .where(
                    EventRecord.subject.in_([row.run_id, row.version_id or row.run_id]),
                    EventRecord.type != TrainingProgress.ce_type(),
                )
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            return RunDetail(
                summary=run_summary(row),
                base_sha256=row.base_sha256,
                recipe_sha256=row.recipe_sha256,
                history=tuple(timeline_entry(i + 1, r) for i, r in enumerate(history)),
            )

    def curve(self, run_id: str) -> list[dict[str, Any]]:
        """A run's training.progress points, step by step: loss, eval loss, learning rate."""
        with self.sessions() as session:
            rows = session.scalars(
                select(EventRecord)
                .where(EventRecord.subject == run_id, EventRecord.type == TrainingProgress.ce_type())
                .order_by(EventRecord.time, EventRecord.id)
            ).all()
            points = {int(r.payload["step"]): r.payload for r in rows}  # a redelivered step once
            fields = ("step", "epoch", "loss", "eval_loss", "learning_rate", "tokens_per_second")
            return [{f: points[step].get(f) for f in fields} for step in sorted(points)]

    def get_evals(self, ident: str) -> EvalDetail:
        """Every evaluation and gate decision of a model version, oldest first."""
        with self.sessions() as session:
            version = by_id_or_prefix(
                session, ModelVersionRow, ModelVersionRow.version_id, ident, "model version"
            )
            return eval_detail(session, version.version_id)

    def card(self, ident: str) -> AdaptationCard:
        """The adaptation card, assembled from the version's lineage as recorded here."""
        with self.sessions() as session:
            version = by_id_or_prefix(
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
            evals = eval_detail(session, version.version_id)
            card = cards.assemble(
                version=version_summary(version),
                model_ref=version.model_ref,
                lineage=version.lineage,
                dataset=dataset_card_input(dataset),
                run=run_summary(run).model_dump(mode="json") if run else None,
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
                    "recorded_at": utc(r.recorded_at).isoformat(),
                }
                for r in rows
            ]
