"""Event subscribers with the house delivery rules: explicit ack, bounded retry, dead letters.

Every subscriber is a durable pull consumer named `<service>_<event>`, shared by the service's
replicas, so each event is handled once per service. Outcomes:
- the envelope or payload is invalid → dead-lettered with the reason, terminated (never retried);
- the handler raises `PermanentError` → dead-lettered at once;
- any other exception → nak with backoff; after `max_deliver` attempts → dead-lettered;
- success → ack. Long handlers are kept alive with `in_progress` every AckWait/3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage, PullSub
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from schemas.envelope import Envelope, EnvelopeError
from schemas.events import Event, describe_validation_error
from schemas.subjects import DLQ_STREAM, EVENTS_STREAM, dlq_subject, durable_name, tenant_subject
from services.core.messaging.bus import EventBus, events_stream
from services.core.messaging.consumers import DurableSpec
from services.core.prometheus import ServiceMetrics
from services.core.security.access import SECONDARY_PUBLISHERS, SUFFIXED_EVENTS, publishers_of
from services.core.settings import DeliverySettings

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

DLQ_REASON = "tuneline-dlq-reason"
DLQ_KIND = "tuneline-dlq-kind"
DLQ_SERVICE = "tuneline-dlq-service"
DLQ_SUBJECT = "tuneline-dlq-original-subject"
DLQ_DELIVERIES = "tuneline-dlq-deliveries"
DLQ_STREAM_SEQ = "tuneline-dlq-stream-seq"


OUTCOMES = ("ack", "nak", "dead-letter")


class PermanentError(Exception):
    """The event is well-formed but can never be handled; dead-letter it without retrying."""


@dataclass
class HandlerContext:
    """What a handler gets besides the event: its envelope and a way to publish derived events."""

    envelope: Envelope
    bus: EventBus
    message: NatsMessage
    attempt: int
    stream_seq: int | None = None

    async def publish(self, event: Event, *discriminators: object) -> Envelope:
        """Publish an event caused by this one (deterministic id, same correlation and tenant)."""
        return await self.bus.publish(event, causation=self.envelope, discriminators=discriminators)

    async def in_progress(self) -> None:
        await self.message.in_progress()


Handler = Callable[[E, HandlerContext], Awaitable[None]]


def delivery_info(msg: NatsMessage) -> tuple[int, int | None]:
    """(delivery attempt, stream sequence); in-memory test messages carry no metadata."""
    try:
        meta = msg.raw_message.metadata
    except (NatsError, AttributeError, ValueError):
        return 1, None
    return meta.num_delivered, meta.sequence.stream


class EventConsumer(Generic[E]):
    """Turns one raw message into exactly one outcome: ack, nak (retry later) or dead letter."""

    def __init__(
        self,
        event_cls: type[E],
        handler: Handler[E],
        *,
        service: str,
        bus: EventBus,
        delivery: DeliverySettings,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.event_cls = event_cls
        self.handler = handler
        self.service = service
        self.bus = bus
        self.delivery = delivery
        self.metrics = metrics
        self.publishers = publishers_of(event_cls.event_type)
        self.durable = durable_name(service, event_cls.event_type)
        if metrics is not None:
            labels = (service, event_cls.event_type)
            self._outcomes = {o: metrics.handled.labels(*labels, o) for o in OUTCOMES}
            self._seconds = metrics.handler_seconds.labels(*labels)

    async def _replayed(self, msg: NatsMessage, stream_seq: int | None) -> bool:
        """A message at or below the durable's known ack floor is acked again, never handled twice."""
        floor = self.bus.consumers.ack_floors.get(self.durable, 0)
        if stream_seq is None or stream_seq > floor:
            return False
        # acked before: only a replaced or reset durable delivers it again, in the window before
        # the consumer guard puts the durable back
        logger.warning(
            "%s: stream message %d is at or below %s's ack floor %d: a replay, acked unhandled",
            self.service,
            stream_seq,
            self.durable,
            floor,
        )
        await msg.ack()
        return True

    def _check_sender(self, envelope: Envelope, subject: str) -> None:
        """The envelope's type, tenant and source must be ones its subject and sender allow."""
        if envelope.type != self.event_cls.ce_type():
            raise EnvelopeError(
                {"type": f"{envelope.type!r} on a subject that carries {self.event_cls.ce_type()!r}"}
            )
        token = subject.rsplit(".", 1)[-1] if subject != self.event_cls.subject() else None
        secondary = SECONDARY_PUBLISHERS.get(self.event_cls.event_type)
        if token is not None and token != secondary and envelope.tenant != token:
            raise EnvelopeError(
                {
                    "tenant": f"{envelope.tenant!r} on {subject}, which its sender may use for tenant "
                    f"{token!r} only"
                }
            )
        allowed = self.publishers if token is None else publishers_of(self.event_cls.event_type, subject)
        if self.bus.sources_bound and envelope.source not in allowed:
            raise EnvelopeError(
                {
                    "source": f"{envelope.source!r} may not publish {self.event_cls.event_type} on "
                    f"{subject} (only {', '.join(sorted(allowed)) or 'no service'}): a forged source"
                }
            )

    def _decode(self, msg: NatsMessage) -> tuple[Envelope, E]:
        envelope = Envelope.from_headers(msg.headers)
        self._check_sender(envelope, msg.raw_message.subject)
        event = self.event_cls.read(json.loads(msg.body))
        if getattr(event, "tenant", envelope.tenant) != envelope.tenant:
            # one tenant on the envelope, another in the payload: the envelope's is the one a
            # tenant operator's subject authenticated, and handlers act on the payload's
            raise EnvelopeError(
                {"tenant": f"the payload names tenant {event.tenant!r}, the envelope {envelope.tenant!r}"}  # type: ignore[attr-defined]
            )
        return envelope, event

    async def __call__(self, msg: NatsMessage) -> None:
        attempt, stream_seq = delivery_info(msg)
        if await self._replayed(msg, stream_seq):
            return
        try:
            envelope, event = self._decode(msg)
        except EnvelopeError as error:
            await self._dead_letter(msg, "invalid-envelope", str(error), attempt, stream_seq)
            return
        except ValidationError as error:
            reason = (
                f"{self.event_cls.event_type} payload does not match its schema: "
                f"{describe_validation_error(error)}"
            )
            await self._dead_letter(msg, "invalid-payload", reason, attempt, stream_seq)
            return
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            reason = f"{self.event_cls.event_type} payload is not UTF-8 JSON: {error}"
            await self._dead_letter(msg, "invalid-payload", reason, attempt, stream_seq)
            return

        context = HandlerContext(
            envelope=envelope, bus=self.bus, message=msg, attempt=attempt, stream_seq=stream_seq
        )
        started = time.perf_counter()
        try:
            async with self._heartbeat(msg):
                await self.handler(event, context)
        except PermanentError as error:
            await self._dead_letter(msg, "permanent-error", str(error), attempt, stream_seq)
            return
        except Exception as error:  # noqa: BLE001  (transient: retry with backoff, bounded)
            await self._retry_or_give_up(msg, error, attempt, stream_seq)
            return
        finally:
            if self.metrics is not None:
                self._seconds.observe(time.perf_counter() - started)
        await msg.ack()
        self._count("ack")

    async def _retry_or_give_up(
        self, msg: NatsMessage, error: Exception, attempt: int, stream_seq: int | None
    ) -> None:
        description = f"{type(error).__name__}: {error}"
        if attempt >= self.delivery.max_deliver:
            reason = f"gave up after {attempt} attempts; last error: {description}"
            await self._dead_letter(msg, "retries-exhausted", reason, attempt, stream_seq)
            return
        delay = self.delivery.backoff_for(attempt)
        logger.warning(
            "%s: %s failed on attempt %d/%d (%s); retrying in %.1fs",
            self.service,
            self.event_cls.event_type,
            attempt,
            self.delivery.max_deliver,
            description,
            delay,
        )
        await msg.nack(delay=delay)
        self._count("nak")

    async def _dead_letter(
        self, msg: NatsMessage, kind: str, reason: str, attempt: int, stream_seq: int | None
    ) -> None:
        subject = msg.raw_message.subject
        logger.error("%s: dead-lettering message on %s: %s", self.service, subject, reason)
        headers = {k: v for k, v in (msg.headers or {}).items() if k.lower() != "nats-msg-id"}
        headers.update(
            {
                DLQ_REASON: reason[:4000],
                DLQ_KIND: kind,
                DLQ_SERVICE: self.service,
                DLQ_SUBJECT: subject,
                DLQ_DELIVERIES: str(attempt),
            }
        )
        if stream_seq is not None:
            headers[DLQ_STREAM_SEQ] = str(stream_seq)
            # one dead letter per (service, stream message), however often it is redelivered
            headers["Nats-Msg-Id"] = f"dlq:{self.service}:{stream_seq}"
        # Publish before terminating: if this publish fails, the message is redelivered, not lost.
        await self.bus.broker.publish(msg.body, dlq_subject(subject), headers=headers, stream=DLQ_STREAM)
        await msg.reject()
        self._count("dead-letter")
        if self.metrics is not None:
            self.metrics.dead_letters.labels(self.service, subject, kind).inc()

    @contextlib.asynccontextmanager
    async def _heartbeat(self, msg: NatsMessage) -> Any:
        """Tell JetStream we are still working every AckWait/3, so long handlers keep the lease.

        A timer, not a task per message: most handlers finish long before the first beat.
        """
        loop = asyncio.get_running_loop()
        interval = self.delivery.ack_wait_s / 3
        beats: set[asyncio.Task[None]] = set()
        handle: asyncio.TimerHandle

        def beat() -> None:
            nonlocal handle
            task = loop.create_task(msg.in_progress())
            beats.add(task)
            task.add_done_callback(beats.discard)
            handle = loop.call_later(interval, beat)

        handle = loop.call_later(interval, beat)
        try:
            yield
        finally:
            handle.cancel()
            for task in beats:
                task.cancel()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self._outcomes[outcome].inc()


async def raw_body(msg: NatsMessage) -> bytes:
    """Hand the body over undecoded: decoding (and refusing) is the consumer's job, not FastStream's.

    FastStream's default decoder would raise on a non-JSON body before our code runs, and its
    default policy would then drop the message instead of dead-lettering it.
    """
    return msg.body


def consumer_config(delivery: DeliverySettings, *, deliver_new_only: bool = False) -> ConsumerConfig:
    return ConsumerConfig(
        ack_policy=JsAckPolicy.EXPLICIT,
        ack_wait=delivery.ack_wait_s,
        # the server stops one past ours: our own count dead-letters first, with the reason
        max_deliver=delivery.max_deliver + 1,
        deliver_policy=DeliverPolicy.NEW if deliver_new_only else DeliverPolicy.ALL,
        max_ack_pending=1000,
    )


def subscribe_event(
    broker: NatsBroker,
    event_cls: type[E],
    handler: Handler[E],
    *,
    service: str,
    bus: EventBus,
    delivery: DeliverySettings,
    metrics: ServiceMetrics | None = None,
) -> EventConsumer[E]:
    """Register `handler` for `event_cls` as the service's durable pull consumer."""
    consumer = EventConsumer(event_cls, handler, service=service, bus=bus, delivery=delivery, metrics=metrics)

    async def on_message(msg: NatsMessage) -> None:
        await consumer(msg)

    on_message.__name__ = f"{service}_{event_cls.event_type}".replace(".", "_").replace("-", "_")
    durable = durable_name(service, event_cls.event_type)
    config = consumer_config(delivery)
    filters = [event_cls.subject()]
    if event_cls.event_type in SUFFIXED_EVENTS:  # also as tenants' operators or a 2nd publisher send them
        filters.append(tenant_subject(event_cls.event_type, "*"))
        config.filter_subjects = filters
    bus.consumers.declare(DurableSpec(EVENTS_STREAM, durable, tuple(filters), config))
    broker.subscriber(
        event_cls.subject(),
        stream=events_stream(),
        durable=durable,
        inbox_prefix=bus.subscriber_inbox,
        pull_sub=PullSub(batch_size=delivery.fetch_batch, timeout=delivery.fetch_timeout_s),
        config=config,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title=f"{service}:{event_cls.event_type}",
        description=(event_cls.__doc__ or event_cls.event_type).strip(),
    )(on_message)
    return consumer


def subscribe_events(
    broker: NatsBroker,
    handlers: Iterable[tuple[type[Event], Handler[Any]]],
    **kwargs: Any,
) -> list[EventConsumer[Any]]:
    return [subscribe_event(broker, cls, handler, **kwargs) for cls, handler in handlers]
