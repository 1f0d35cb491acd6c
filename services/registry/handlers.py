"""Registry subscribers: record every event, record dead letters, answer queries. No logic here."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsMessage, PullSub

from schemas.catalogue import EVENTS
from schemas.events import Event
from schemas.subjects import DLQ_PREFIX, DLQ_STREAM, TENANT_QUERIES
from services.core.messaging.bus import EventBus, dlq_stream
from services.core.messaging.consumers import DurableSpec
from services.core.messaging.delivery import (
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
from services.core.messaging.rpc import serve, serve_for_tenants
from services.core.prometheus import ServiceMetrics
from services.core.security.access import REGISTRY_DLQ_DURABLE
from services.core.settings import DeliverySettings
from services.registry.queries import answer, registry_queries
from services.registry.store import DeadLetter, RegistryStore

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
    async def dead_letters(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = int(body.get("limit", 50)) if isinstance(body, dict) else 50
        return {"dead_letters": await asyncio.to_thread(self.store.dead_letters, limit)}


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

    for name, query in registry_queries(handlers.store).items():
        serve(broker, SERVICE, name, functools.partial(answer, name, query))
        if name in TENANT_QUERIES:
            serve_for_tenants(broker, SERVICE, name, functools.partial(answer, name, query))
    serve(broker, SERVICE, "dead-letters.list", handlers.dead_letters)
