"""Subject, stream, bucket and durable names: the NATS namespace of tuneline."""

from __future__ import annotations

import re

EVENTS_STREAM = "TUNELINE"
EVENTS_PREFIX = "tuneline.events"
DLQ_STREAM = "TUNELINE_DLQ"
DLQ_PREFIX = "tuneline.dlq"
DECISIONS_STREAM = "TUNELINE_DECISIONS"
DECISIONS_PREFIX = "tuneline.decisions"
RPC_PREFIX = "tuneline.rpc"
ROUTES_BUCKET = "tuneline_routes"  # KV: rollout writes the route table, serving watches it
UPLOADS_BUCKET = "tuneline_uploads"  # object store: files the CLI uploads (sources, suites)
TRAINING_BUCKET = "tuneline_training"  # KV: run control (cancel requests, worker leases)


def event_subject(event_type: str) -> str:
    """`dataset.approved` → `tuneline.events.dataset.approved`."""
    return f"{EVENTS_PREFIX}.{event_type}"


def tenant_subject(event_type: str, tenant: str) -> str:
    """`dataset.submitted`, acme → `tuneline.events.dataset.submitted.acme`: an operator event sent
    by a tenant's own operator identity. That user may publish only its tenant's subjects, so the
    last token is the tenant the server authenticated, and consumers hold the event to it."""
    return f"{event_subject(event_type)}.{tenant}"


def dlq_subject(original_subject: str) -> str:
    """Dead letters keep their original subject under the DLQ prefix."""
    return f"{DLQ_PREFIX}.{original_subject}"


def rpc_subject(service: str, query: str) -> str:
    return f"{RPC_PREFIX}.{service}.{query}"


# the registry queries a tenant operator may ask, each answered for its tenant only
TENANT_QUERIES = (
    "timeline",
    "models.list",
    "models.get",
    "datasets.list",
    "datasets.get",
    "runs.list",
    "runs.get",
    "evals.get",
    "cards.get",
)


def tenant_rpc_subject(service: str, query: str, tenant: str) -> str:
    """A query asked for one tenant: `tuneline.rpc.registry.models.list.acme`."""
    return f"{rpc_subject(service, query)}.{tenant}"


def durable_name(service: str, event_type: str) -> str:
    """One durable pull consumer per (service, event): `registry_dataset_approved`.

    JetStream consumer names may not contain `.`, `*`, `>` or whitespace.
    """
    name = f"{service}_{event_type}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)
