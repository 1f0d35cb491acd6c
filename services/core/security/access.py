"""Who may publish and subscribe to what on NATS: one user per service, least privilege.

This table is the single source of the NATS permissions. `tuneline infra export` renders it into
`infra/nats/auth.conf` and the Helm chart's copy (`deploy/helm/tuneline/files/nats-auth.conf`);
`make test` fails when either drifts. Tests check each service's real subscribers against
`consumes`, and the secure embedded stack (`tuneline up --secure`) runs a lineage with nothing more
than these permissions.

What a service may do:
- publish the events it produces, and dead-letter the events it consumes;
- create, read and pull from its own durable consumers (`<service>_<event>`) and ack their
  messages, never another service's: the evaluation user cannot take training's work;
- receive replies only on its own inbox prefix (`_INBOX.<user>.>`), so no user reads another's
  fetched messages or RPC answers;
- answer its own queries (`tuneline.rpc.<service>.>`) and ask the services it depends on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.catalogue import EVENTS
from schemas.subjects import (
    DECISIONS_PREFIX,
    DECISIONS_STREAM,
    DLQ_PREFIX,
    DLQ_STREAM,
    EVENTS_STREAM,
    ROUTES_BUCKET,
    TENANT_QUERIES,
    TRAINING_BUCKET,
    UPLOADS_BUCKET,
    dlq_subject,
    durable_name,
    event_subject,
    rpc_subject,
    tenant_rpc_subject,
    tenant_subject,
)

JS_API = "$JS.API"
MANAGED_STREAMS = (EVENTS_STREAM, DLQ_STREAM, DECISIONS_STREAM)
REGISTRY_DLQ_DURABLE = "registry_dead_letters"
OPERATOR_EVENTS = (
    "dataset.submitted",
    "training.cancel-requested",
    "merge.requested",
    "rollout.pause-requested",
    "rollout.resume-requested",
    "rollout.abort-requested",
    "rollout.promote-requested",
    "rollout.rollback-requested",
    "drift.check-requested",
    "retrain.requested",
)


# Events two identities may publish: the second one publishes on `<subject>.<service>`, which only
# its NATS user may use, so a consumer can tell which of the two sent it (a service may only
# publish as itself). The first publishes the bare subject.
SECONDARY_PUBLISHERS: dict[str, str] = {
    "candidate.ready": "merging",  # training publishes the bare subject
    "drift.check-requested": "evaluation",  # its scheduler; the operator publishes the bare one
    "retrain.requested": "rollout",  # the guardian; the operator publishes the bare one
}
# events that arrive on `<subject>.<token>` as well as the bare subject
SUFFIXED_EVENTS = frozenset(OPERATOR_EVENTS) | frozenset(SECONDARY_PUBLISHERS)


def publish_subject(event_type: str, service: str) -> str:
    """Where `service` publishes `event_type`: its own subject if it is the secondary publisher."""
    if SECONDARY_PUBLISHERS.get(event_type) == service:
        return tenant_subject(event_type, service)
    return event_subject(event_type)


@dataclass(frozen=True)
class Access:
    """What one NATS user (a service, or the operator's CLI) needs to do its job."""

    user: str
    service: str  # the runtime's service name: its health query lives under tuneline.rpc.<service>
    consumes: tuple[str, ...] = ()  # event types, each through the durable `<service>_<event>`
    publishes: tuple[str, ...] = ()  # event types
    calls: tuple[str, ...] = ()  # services whose queries it sends (`*` for every service's health)
    manages_streams: bool = False  # updates the streams' limits (the registry)
    reads_dead_letters: bool = False
    # KV and object-store buckets: (`KV` or `OBJ`, bucket, "read" | "create" | "write");
    # read: get and watch; create: also create it when missing; write: also put and purge
    buckets: tuple[tuple[str, str, str], ...] = ()
    publishes_decisions: bool = False
    reads_events: bool = False  # core subscriptions, ordered consumers on the events and DLQ streams
    extra_publish: tuple[str, ...] = field(default=())

    def publish_allow(self) -> list[str]:
        subjects = [f"{JS_API}.INFO"]
        # any service may create a missing stream (whoever starts first); only the registry may
        # change an existing one's limits (TUNELINE_STREAM_MANAGE=false everywhere else)
        subjects += [
            f"{JS_API}.STREAM.{verb}.{name}" for verb in ("INFO", "CREATE") for name in MANAGED_STREAMS
        ]
        if self.manages_streams:
            subjects += [f"{JS_API}.STREAM.UPDATE.{name}" for name in MANAGED_STREAMS]
        subjects += [publish_subject(event, self.service) for event in self.publishes]
        for event in self.consumes:
            subjects.append(dlq_subject(event_subject(event)))
            if event in SUFFIXED_EVENTS:  # also those sent by tenants' operators or a second publisher
                subjects.append(dlq_subject(tenant_subject(event, "*")))
            subjects += durable_api(EVENTS_STREAM, durable_name(self.service, event))
        if self.reads_dead_letters:
            subjects += durable_api(DLQ_STREAM, REGISTRY_DLQ_DURABLE)
        if self.reads_events:
            subjects += ordered_consumer_api(EVENTS_STREAM) + ordered_consumer_api(DLQ_STREAM)
        if self.publishes_decisions:
            subjects.append(f"{DECISIONS_PREFIX}.>")
        for kind, bucket, level in self.buckets:
            subjects += bucket_api(
                f"{kind}_{bucket}",
                f"${'KV' if kind == 'KV' else 'O'}.{bucket}",
                create=level in ("create", "write"),
                put=level == "write",
            )
        for target in self.calls:
            subjects.append(rpc_subject("*", "health") if target == "*" else f"{rpc_subject(target, '>')}")
        subjects += self.extra_publish
        return _unique(subjects)

    def subscribe_allow(self) -> list[str]:
        subjects = [f"{self.inbox_prefix}.>", rpc_subject(self.service, ">")]
        if self.reads_events:
            subjects.append(f"{event_subject('>')}")
        return _unique(subjects)

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)


def inbox_prefix(user: str) -> str:
    """Replies to this user arrive under `_INBOX.<user>`: no other user may subscribe there."""
    return f"_INBOX.{user}"


def durable_api(stream: str, durable: str) -> list[str]:
    """Create, inspect, repair and pull from one durable consumer, and ack what it delivered.

    Delete is the service's own, so it can replace a consumer whose configuration was tampered with
    (`services.core.messaging.consumers`); no other user may delete or create it.
    """
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.DELETE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def ordered_consumer_api(stream: str) -> list[str]:
    """Read a stream through short-lived ordered consumers (watch, tail, object get).

    Only unnamed ephemeral consumers (`CONSUMER.CREATE.<stream>`, which the server refuses for a
    durable): a reader can neither create a consumer under a service's durable name nor delete
    one; its ephemerals go away by themselves when idle.
    """
    return [
        f"{JS_API}.STREAM.NAMES",  # which stream holds a subject (stream names only, no data)
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.INFO.{stream}.>",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"$JS.FC.{stream}.>",
    ]


def bucket_api(stream: str, prefix: str, *, create: bool, put: bool) -> list[str]:
    """A KV or object-store bucket: read it; `create` it when missing; `put` into it."""
    subjects = ordered_consumer_api(stream)
    if create:
        subjects.append(f"{JS_API}.STREAM.CREATE.{stream}")
    if put:
        subjects += [f"{JS_API}.STREAM.PURGE.{stream}", f"{prefix}.>"]
    return subjects


def _unique(subjects: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(subjects))


TENANT_OPERATOR_PREFIX = "operator-"
SERVICE_NAMES = frozenset(
    {"registry", "curation", "training", "merging", "evaluation", "rollout", "serving", "cli"}
)


def tenant_operator(tenant: str) -> Access:
    """A tenant's own operator identity, `operator-<tenant>`: it may send operator events for its
    tenant only (on `tuneline.events.<event>.<tenant>`), upload files, and ask the registry's
    tenant queries for its tenant only (`tuneline.rpc.registry.<query>.<tenant>`). It reads no
    events from the stream (every tenant's are there) and asks no unscoped query.
    """
    if tenant in SERVICE_NAMES:
        raise ValueError(f"tenant {tenant!r} is a service's name; its subjects would be that service's")
    return Access(
        f"{TENANT_OPERATOR_PREFIX}{tenant}",
        "cli",
        buckets=(("OBJ", UPLOADS_BUCKET, "write"),),
        extra_publish=(
            *(tenant_subject(event, tenant) for event in OPERATOR_EVENTS),
            *(tenant_rpc_subject("registry", query, tenant) for query in TENANT_QUERIES),
        ),
    )


def tenant_of_user(user: str | None) -> str | None:
    """The tenant a tenant operator user acts for (`operator-acme` → `acme`), else None."""
    if user is not None and user.startswith(TENANT_OPERATOR_PREFIX):
        return user.removeprefix(TENANT_OPERATOR_PREFIX)
    return None


SERVICE_USERS: tuple[Access, ...] = (
    Access(
        "registry",
        "registry",
        consumes=tuple(EVENTS),
        manages_streams=True,
        reads_dead_letters=True,
        buckets=(("KV", ROUTES_BUCKET, "read"),),  # the dashboard's routes and their health
    ),
    Access(
        "curation",
        "curation",
        consumes=("dataset.submitted", "retrain.requested"),
        publishes=("dataset.approved", "dataset.rejected"),
        calls=("registry",),  # a retrain resubmits the route's last approved dataset, from the record
        buckets=(("OBJ", UPLOADS_BUCKET, "read"),),
    ),
    Access(
        "training",
        "training",
        consumes=("dataset.approved", "training.cancel-requested"),
        publishes=(
            "training.started",
            "training.progress",
            "training.failed",
            "training.cancelled",
            "candidate.ready",
        ),
        calls=("evaluation",),  # checkpoints.screen, when a recipe asks for checkpoint_selection
        buckets=(("KV", TRAINING_BUCKET, "write"),),  # cancel requests, the one result of a run
    ),
    Access(
        "merging",
        "merging",
        consumes=("merge.requested",),
        publishes=("candidate.ready", "merge.failed"),
        calls=("registry", "evaluation"),
    ),
    Access(
        "evaluation",
        "evaluation",
        consumes=("candidate.ready", "drift.check-requested"),
        publishes=(
            "eval.completed",
            "eval.failed",
            "gates.passed",
            "gates.failed",
            "drift.detected",
            "drift.check-requested",  # its drift scheduler
        ),
        calls=("registry",),
        buckets=(("OBJ", UPLOADS_BUCKET, "read"),),  # `tuneline suites add` sends its file there
    ),
    Access(
        "rollout",
        "rollout",
        consumes=(
            "gates.passed",
            "serving.window",
            "rollout.pause-requested",
            "rollout.resume-requested",
            "rollout.abort-requested",
            "rollout.promote-requested",
            "rollout.rollback-requested",
            "incident.reported",
            "drift.detected",
        ),
        publishes=(
            "rollout.started",
            "rollout.step",
            "rollout.promoted",
            "rollout.rolled-back",
            "rollout.paused",
            "route.alert-raised",  # the guardian, after promotion
            "route.alert-resolved",
            "retrain.requested",  # an objective or drift whose action is retrain
        ),
        calls=("registry",),  # a verdict is checked against the record before a rollout starts
        buckets=(("KV", ROUTES_BUCKET, "write"),),
    ),
    Access(
        "serving",
        "serving",
        publishes=("serving.window",),
        publishes_decisions=True,
        buckets=(("KV", ROUTES_BUCKET, "create"),),
    ),
    Access(
        "operator",
        "cli",
        # incident.reported is the platform operator's alone: a tenant's operator cannot send one
        publishes=(*OPERATOR_EVENTS, "incident.reported"),
        calls=("registry", "evaluation", "*"),
        buckets=(("KV", ROUTES_BUCKET, "read"), ("OBJ", UPLOADS_BUCKET, "write")),
        reads_events=True,
    ),
)
"""The platform's own NATS users: the seven services and the platform operator."""


def service_access(tenants: Iterable[str] = ()) -> dict[str, Access]:
    """Every NATS user of a deployment, by user name; `tenants` adds a tenant operator for each."""
    table = [*SERVICE_USERS, *(tenant_operator(tenant) for tenant in tenants)]
    return {access.user: access for access in table}


def publishers_of(event_type: str, subject: str | None = None) -> frozenset[str]:
    """The `ce-source` values that may carry `event_type` on `subject` (default: its bare subject):
    the services whose NATS user may publish there. Where every service connects as its own user,
    any other source is forged."""
    subject = subject or event_subject(event_type)
    if subject != event_subject(event_type):
        token = subject.rsplit(".", 1)[-1]
        if SECONDARY_PUBLISHERS.get(event_type) == token:
            return frozenset({f"tuneline/{token}"})
        return frozenset({"tuneline/cli"})  # a tenant operator's subject
    return frozenset(
        f"tuneline/{access.service}"
        for access in service_access().values()
        if event_type in access.publishes and publish_subject(event_type, access.service) == subject
    )


def password_variable(user: str) -> str:
    """The environment variable nats-server reads the user's password from."""
    return f"TUNELINE_NATS_PASSWORD_{user.upper()}"


ADMIN_USER = "admin"
__all__ = [
    "ADMIN_USER",
    "DLQ_PREFIX",
    "OPERATOR_EVENTS",
    "Access",
    "inbox_prefix",
    "password_variable",
    "publishers_of",
    "service_access",
]
