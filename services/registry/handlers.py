"""Registry subscribers: record every event, record dead letters, answer queries. No logic here."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsMessage, PullSub
from pydantic import ValidationError

from schemas.catalogue import EVENTS
from schemas.events import Event
from schemas.queries import (
    CardQuery,
    DatasetList,
    DatasetQuery,
    DatasetsQuery,
    EvalsQuery,
    ModelVersionList,
    ModelVersionQuery,
    ModelVersionsQuery,
    QueryError,
    RunList,
    RunQuery,
    RunsQuery,
    TimelineQuery,
)
from schemas.subjects import DLQ_PREFIX, DLQ_STREAM
from services.core.access import REGISTRY_DLQ_DURABLE
from services.core.bus import EventBus, dlq_stream
from services.core.consumers import DurableSpec
from services.core.delivery import (
    DLQ_KIND,
    DLQ_REASON,
    DLQ_SERVICE,
    DLQ_SUBJECT,
    HandlerContext,
    consumer_config,
    delivery_info,
    raw_body,
    subscribe_event,
)
from services.core.metrics import ServiceMetrics
from services.core.rpc import serve
from services.core.settings import DeliverySettings
from services.registry.store import DeadLetter, NotFound, RegistryStore

SERVICE = "registry"
logger = logging.getLogger(__name__)


class RegistryHandlers:
    """Binds the store to the broker. Writes go through one thread so SQLite never contends."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-writer")

    async def _write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.writer, lambda: fn(*args, **kwargs))

    async def record(self, event: Event, ctx: HandlerContext) -> None:
        outcome = await self._write(self.store.record, event, ctx.envelope, stream_seq=ctx.stream_seq)
        logger.debug("recorded %s %s: %s", ctx.envelope.type, ctx.envelope.id, outcome)

    async def record_dead_letter(self, msg: NatsMessage) -> None:
        headers = dict(msg.headers or {})
        letter = DeadLetter(
            original_subject=headers.get(DLQ_SUBJECT, msg.raw_message.subject),
            service=headers.get(DLQ_SERVICE, "unknown"),
            kind=headers.get(DLQ_KIND, "unknown"),
            reason=headers.get(DLQ_REASON, "no reason given"),
            headers=headers,
            body=msg.body,
            dlq_stream_seq=delivery_info(msg)[1],
        )
        try:
            await self._write(self.store.record_dead_letter, letter)
        except Exception:  # database down: retry later, never lose the letter
            logger.exception("could not record dead letter; will retry")
            await msg.nack(delay=5.0)
            return
        await msg.ack()

    # -- queries -----------------------------------------------------------------------------
    async def timeline(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(TimelineQuery, body, lambda q: self.store.timeline(q.correlation_id))

    async def models_list(self, body: dict[str, Any]) -> dict[str, Any]:
        def run(q: ModelVersionsQuery) -> ModelVersionList:
            return ModelVersionList(
                versions=self.store.list_versions(
                    tenant=q.tenant, route=q.route, status=q.status, limit=q.limit
                )
            )

        return await _answer(ModelVersionsQuery, body, run)

    async def models_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(ModelVersionQuery, body, lambda q: self.store.get_version(q.version_id))

    async def datasets_list(self, body: dict[str, Any]) -> dict[str, Any]:
        def run(q: DatasetsQuery) -> DatasetList:
            return DatasetList(
                datasets=self.store.list_datasets(tenant=q.tenant, status=q.status, limit=q.limit)
            )

        return await _answer(DatasetsQuery, body, run)

    async def datasets_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(DatasetQuery, body, lambda q: self.store.get_dataset(q.id))

    async def runs_list(self, body: dict[str, Any]) -> dict[str, Any]:
        def run(q: RunsQuery) -> RunList:
            return RunList(runs=self.store.list_runs(tenant=q.tenant, status=q.status, limit=q.limit))

        return await _answer(RunsQuery, body, run)

    async def runs_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(RunQuery, body, lambda q: self.store.get_run(q.run_id))

    async def evals_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(EvalsQuery, body, lambda q: self.store.get_evals(q.version_id))

    async def cards_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return await _answer(CardQuery, body, lambda q: self.store.card(q.version_id))

    async def dead_letters(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = int(body.get("limit", 50)) if isinstance(body, dict) else 50
        return {"dead_letters": await asyncio.to_thread(self.store.dead_letters, limit)}


async def _answer(query_cls: Any, body: Any, run: Any) -> dict[str, Any]:
    try:
        query = query_cls.model_validate(body if isinstance(body, dict) else {})
    except ValidationError as error:
        return QueryError(error=f"bad {query_cls.__name__}: {error}", code="bad-request").model_dump()
    try:
        result = await asyncio.to_thread(run, query)
    except NotFound as error:
        return QueryError(error=str(error), code="not-found").model_dump()
    return dict(result.model_dump(mode="json"))


def register(
    broker: NatsBroker,
    handlers: RegistryHandlers,
    *,
    bus: EventBus,
    delivery: DeliverySettings,
    metrics: ServiceMetrics | None,
) -> None:
    for event_cls in EVENTS.values():
        subscribe_event(
            broker,
            event_cls,
            handlers.record,
            service=SERVICE,
            bus=bus,
            delivery=delivery,
            metrics=metrics,
        )

    async def on_dead_letter(msg: NatsMessage) -> None:
        await handlers.record_dead_letter(msg)

    config = consumer_config(delivery)
    bus.consumers.declare(DurableSpec(DLQ_STREAM, REGISTRY_DLQ_DURABLE, (f"{DLQ_PREFIX}.>",), config))
    broker.subscriber(
        f"{DLQ_PREFIX}.>",
        stream=dlq_stream(),
        durable=REGISTRY_DLQ_DURABLE,
        inbox_prefix=bus.subscriber_inbox,
        pull_sub=PullSub(batch_size=delivery.fetch_batch, timeout=delivery.fetch_timeout_s),
        config=config,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title="registry:dead-letters",
    )(on_dead_letter)

    queries = {
        "timeline": handlers.timeline,
        "models.list": handlers.models_list,
        "models.get": handlers.models_get,
        "datasets.list": handlers.datasets_list,
        "datasets.get": handlers.datasets_get,
        "runs.list": handlers.runs_list,
        "runs.get": handlers.runs_get,
        "evals.get": handlers.evals_get,
        "cards.get": handlers.cards_get,
        "dead-letters.list": handlers.dead_letters,
    }
    for name, fn in queries.items():
        serve(broker, SERVICE, name, fn)
