"""Broker factory, stream declaration and the event publisher (CloudEvents envelope on every event)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faststream.nats import (
    JStream,
    NatsBroker,
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsToken,
    NatsUserPassword,
)
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from schemas.envelope import Envelope, derived_event_id, new_event_id, now
from schemas.events import Event
from schemas.subjects import (
    DECISIONS_PREFIX,
    DECISIONS_STREAM,
    DLQ_PREFIX,
    DLQ_STREAM,
    EVENTS_PREFIX,
    EVENTS_STREAM,
    tenant_subject,
)
from services.core.messaging.consumers import ConsumerGuard
from services.core.prometheus import ServiceMetrics
from services.core.security.access import OPERATOR_EVENTS, inbox_prefix, publish_subject
from services.core.settings import CoreSettings, NatsSettings, StreamSettings

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)
DAY = 86_400.0
STREAM_NAME_IN_USE = 10058


def nats_security(settings: NatsSettings) -> NatsSecurity | None:
    """Credentials and TLS for the broker connection, from settings."""
    ssl_context: ssl.SSLContext | None = None
    if settings.uses_tls:
        ssl_context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
        if settings.tls_cert_file and settings.tls_key_file:
            ssl_context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    tls: dict[str, Any] = {"ssl_context": ssl_context, "tls_hostname": settings.tls_hostname}
    if ssl_context is not None:
        tls["use_ssl"] = True
    if settings.user is not None and settings.password is not None:
        return NatsUserPassword(settings.user, settings.password.get_secret_value(), **tls)
    if settings.token is not None:
        return NatsToken(settings.token.get_secret_value(), **tls)
    if settings.creds_file is not None:
        return NatsCredentials(str(settings.creds_file), **tls)
    if settings.nkey_seed_file is not None:
        return NatsNKey(settings.nkey_seed_file, **tls)
    if ssl_context is not None:
        return NatsSecurity(**tls)
    return None


class _TlsEofNoise(logging.Filter):
    """asyncio warns on every TLS connection nats-py closes ("returning true from eof_received()
    has no effect when using ssl"): harmless, and it buried real warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received" not in record.getMessage()


def client_inbox(settings: NatsSettings, service: str) -> str:
    """Where this client's replies arrive: the one inbox its NATS permissions let it read."""
    return settings.inbox_prefix or inbox_prefix(settings.user or service)


def build_broker(
    settings: CoreSettings,
    service: str,
    *,
    tracer_provider: TracerProvider | None = None,
    metrics: ServiceMetrics | None = None,
    max_reconnect_attempts: int = -1,
) -> NatsBroker:
    """A NATS broker with tracing and Prometheus middlewares (services reconnect forever)."""
    if settings.nats.uses_tls:
        asyncio_logger = logging.getLogger("asyncio")
        if not any(isinstance(f, _TlsEofNoise) for f in asyncio_logger.filters):
            asyncio_logger.addFilter(_TlsEofNoise())
    middlewares: list[Any] = [NatsTelemetryMiddleware(tracer_provider=tracer_provider)]
    if metrics is not None:
        middlewares.append(
            NatsPrometheusMiddleware(registry=metrics.registry, app_name=f"tuneline-{service}")
        )
    return NatsBroker(
        settings.nats.servers,
        name=f"tuneline-{service}",
        inbox_prefix=client_inbox(settings.nats, service),
        security=nats_security(settings.nats),
        middlewares=middlewares,
        connect_timeout=settings.nats.connect_timeout_s,
        max_reconnect_attempts=max_reconnect_attempts,
        reconnect_time_wait=1,
        graceful_timeout=15.0,
        logger=logging.getLogger(f"tuneline.{service}.broker"),
        log_level=logging.DEBUG,  # per-message logs only when debugging
    )


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    """The three streams of DESIGN.md; their subjects never overlap."""

    def stream(name: str, prefix: str, max_age_days: float, **limits: Any) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[f"{prefix}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=max_age_days * DAY,
            num_replicas=settings.replicas,
            **limits,
        )

    return [
        stream(
            EVENTS_STREAM,
            EVENTS_PREFIX,
            settings.max_age_days,
            max_bytes=settings.max_bytes,
            duplicate_window=settings.duplicate_window_s,
        ),
        stream(
            DLQ_STREAM, DLQ_PREFIX, settings.dlq_max_age_days, duplicate_window=settings.duplicate_window_s
        ),
        # short retention: per-response decision records are for recent forensics only
        stream(DECISIONS_STREAM, DECISIONS_PREFIX, 7, max_bytes=min(settings.max_bytes, 2 * 1024**3)),
    ]


async def ensure_streams(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create missing streams; with `settings.manage`, bring existing ones' limits up to date."""
    for config in stream_configs(settings):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                logger.info("created stream %s", config.name)
            except BadRequestError as error:
                if error.err_code != STREAM_NAME_IN_USE:  # another service created it meanwhile
                    raise
        else:
            if settings.manage:
                await js.update_stream(config)


def events_stream() -> JStream:
    """The TUNELINE stream as subscribers name it; `ensure_streams` owns its configuration."""
    return JStream(EVENTS_STREAM, declare=False)


def dlq_stream() -> JStream:
    return JStream(DLQ_STREAM, declare=False)


class EventBus:
    """Publishes events with a CloudEvents envelope; derived events get deterministic ids."""

    def __init__(
        self,
        broker: NatsBroker,
        service: str,
        *,
        default_tenant: str = "default",
        metrics: ServiceMetrics | None = None,
        inbox: str = "_INBOX",
    ) -> None:
        self.broker = broker
        self.service = service
        # JetStream pull subscriptions name their own inbox: subscribers take this one
        self.subscriber_inbox = f"{inbox}.".encode()
        self.default_tenant = default_tenant
        self.metrics = metrics
        # set where every service connects as its own NATS user: consumers then refuse an event whose
        # ce-source names a service whose user could not have published it
        self.sources_bound = False
        # a tenant operator's connection: operator events go on its tenant's subjects, and only
        # events of that tenant may be sent
        self.tenant_scope: str | None = None
        # every durable this service subscribes through, kept as declared by the runtime's guard
        self.consumers = ConsumerGuard(service)

    def envelope_for(
        self,
        event: Event,
        *,
        causation: Envelope | None = None,
        discriminators: Iterable[object] = (),
        correlation_id: str | None = None,
        event_id: str | None = None,
        tenant: str | None = None,
    ) -> Envelope:
        if causation is not None:
            event_id = event_id or derived_event_id(causation.id, event.ce_type(), *discriminators)
            correlation_id = correlation_id or causation.correlation_id
        event_id = event_id or new_event_id()
        event_tenant = getattr(event, "tenant", None)
        if tenant is not None and event_tenant is not None and tenant != event_tenant:
            raise ValueError(
                f"{event.event_type} names tenant {event_tenant!r} but is sent for tenant {tenant!r}; "
                "leave the tenant out or make the two agree"
            )
        tenant = tenant or event_tenant or (causation.tenant if causation else None)
        return Envelope(
            id=event_id,
            source=f"tuneline/{self.service}",
            type=event.ce_type(),
            time=now(),
            subject=event.entity_id(),
            correlation_id=correlation_id or event_id,
            causation_id=causation.id if causation else None,
            tenant=tenant or self.default_tenant,
        )

    async def publish(
        self,
        event: Event,
        *,
        causation: Envelope | None = None,
        discriminators: Iterable[object] = (),
        correlation_id: str | None = None,
        event_id: str | None = None,
        tenant: str | None = None,
        timeout: float = 5.0,
    ) -> Envelope:
        """Publish to JetStream and wait for the stream's ack; returns the envelope sent.

        With `causation`, the id is derived from the causing event (see `derived_event_id`),
        so a redelivered handler republishes the same id and the duplicate is dropped.
        """
        envelope = self.envelope_for(
            event,
            causation=causation,
            discriminators=discriminators,
            correlation_id=correlation_id,
            event_id=event_id,
            tenant=tenant,
        )
        return await self.send(event, envelope, timeout=timeout)

    async def send(self, event: Event, envelope: Envelope, *, timeout: float = 5.0) -> Envelope:
        """Publish `event` under an envelope made earlier (`envelope_for`): a writer that records
        what it will publish before it publishes (an outbox) sends the very same id later."""
        subject = publish_subject(event.event_type, self.service)
        if self.tenant_scope is not None:
            if envelope.tenant != self.tenant_scope:
                raise ValueError(
                    f"this identity acts for tenant {self.tenant_scope!r}; it cannot send "
                    f"{event.event_type} for tenant {envelope.tenant!r}"
                )
            if event.event_type in OPERATOR_EVENTS:
                subject = tenant_subject(event.event_type, self.tenant_scope)
        await self.broker.publish(
            event,
            subject,
            headers=envelope.to_headers(),
            correlation_id=envelope.correlation_id,
            stream=EVENTS_STREAM,
            timeout=timeout,
        )
        if self.metrics is not None:
            self.metrics.published.labels(self.service, event.event_type).inc()
        return envelope
