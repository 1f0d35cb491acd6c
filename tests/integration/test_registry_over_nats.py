"""The registry on a real nats-server: record once, dead letters, catch-up, tracing, queries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.dataset import DatasetSubmitted
from schemas.subjects import DLQ_STREAM
from services.core.messaging.delivery import DLQ_KIND, DLQ_REASON
from services.core.messaging.rpc import RpcError, query
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings
from services.registry.app import Registry, build_registry
from services.registry.config import RegistrySettings
from tests.conftest import wait_until
from tests.support.events import candidate, submitted

pytestmark = pytest.mark.integration


@pytest.fixture
async def publisher(core_settings: CoreSettings) -> AsyncIterator[ServiceRuntime]:
    runtime = build_runtime("operator", core_settings)
    await runtime.broker.start()
    yield runtime
    await runtime.broker.stop()


def make_registry(core: CoreSettings, tmp_path: Path, **kwargs: Any) -> Registry:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    return build_registry(RegistrySettings(database_url=url, core=core), **kwargs)


async def dlq_messages(runtime: ServiceRuntime, expected: int) -> list[Any]:
    js = runtime.broker.connection.jetstream()
    sub = await js.pull_subscribe("tuneline.dlq.>", stream=DLQ_STREAM)
    try:
        return list(await sub.fetch(expected, timeout=5))
    finally:
        await sub.unsubscribe()


async def test_published_event_is_recorded_once(
    core_settings: CoreSettings, tmp_path: Path, running: Any, publisher: ServiceRuntime
) -> None:
    registry = await running(make_registry(core_settings, tmp_path).app)
    envelope = await publisher.bus.publish(submitted())
    store = make_registry(core_settings, tmp_path).store
    await wait_until(lambda: store.count_events() == 1)
    await asyncio.sleep(0.5)  # nothing else arrives
    timeline = store.timeline(envelope.correlation_id)
    assert [e.ce_id for e in timeline.entries] == [envelope.id]
    assert timeline.entries[0].tenant == "acme"
    assert registry.broker.running


async def test_same_event_published_twice_is_recorded_once(
    core_settings: CoreSettings, tmp_path: Path, running: Any, publisher: ServiceRuntime
) -> None:
    registry = make_registry(core_settings, tmp_path)
    await running(registry.app)
    event = submitted()
    first = await publisher.bus.publish(event)
    # inside the duplicate window: JetStream drops the second publish (same Nats-Msg-Id)
    await publisher.bus.publish(event, event_id=first.id, correlation_id=first.correlation_id)
    # outside the window (simulated: a different Nats-Msg-Id, same ce-id): the unique key drops it
    headers = first.to_headers() | {"Nats-Msg-Id": f"{first.id}-late-republish"}
    await publisher.broker.publish(event, event.subject(), headers=headers, stream="TUNELINE")
    info = await publisher.broker.connection.jetstream().stream_info("TUNELINE")
    assert info.state.messages == 2  # the window dropped one of the three publishes
    await wait_until(lambda: registry.store.count_events() >= 1)
    await asyncio.sleep(1.0)
    assert registry.store.count_events() == 1


async def test_malformed_event_is_dead_lettered_and_does_not_block(
    core_settings: CoreSettings, tmp_path: Path, running: Any, publisher: ServiceRuntime
) -> None:
    registry = make_registry(core_settings, tmp_path)
    await running(registry.app)
    good = submitted(1)
    bad_envelope = publisher.bus.envelope_for(submitted(2))
    # malformed payload, then a body that is not JSON, then no envelope at all, then a good one
    await publisher.broker.publish(
        {"submission_id": "broken", "tenant": "acme"},
        good.subject(),
        headers=bad_envelope.to_headers(),
        stream="TUNELINE",
    )
    not_json = publisher.bus.envelope_for(submitted(3))
    await publisher.broker.publish(
        b"{not json", good.subject(), headers=not_json.to_headers(), stream="TUNELINE"
    )
    await publisher.broker.publish(good, good.subject(), stream="TUNELINE")
    envelope = await publisher.bus.publish(good)

    await wait_until(lambda: registry.store.timeline(envelope.correlation_id).entries)
    letters = await dlq_messages(publisher, 3)
    assert len(letters) == 3
    assert {m.subject for m in letters} == {"tuneline.dlq.tuneline.events.dataset.submitted"}
    # one letter per bad message, whatever order they arrive in; the DLQ keeps each payload byte for
    # byte, so an operator can fix and republish it
    kinds = sorted(m.headers[DLQ_KIND] for m in letters)
    assert kinds == ["invalid-envelope", "invalid-payload", "invalid-payload"]
    (no_envelope,) = [m for m in letters if m.headers[DLQ_KIND] == "invalid-envelope"]
    (not_json_letter,) = [m for m in letters if m.data == b"{not json"]
    (broken,) = [m for m in letters if m not in (no_envelope, not_json_letter)]
    assert "ce-id" in no_envelope.headers[DLQ_REASON]
    assert "not UTF-8 JSON" in not_json_letter.headers[DLQ_REASON]
    assert not_json_letter.headers[DLQ_KIND] == "invalid-payload"
    assert "task: Field required" in broken.headers[DLQ_REASON]
    assert json.loads(broken.data) == {"submission_id": "broken", "tenant": "acme"}
    # the registry also records the dead letters it (and others) produced
    await wait_until(lambda: len(registry.store.dead_letters()) == 3)
    assert registry.store.count_events() == 1


async def test_events_published_while_registry_is_down_are_recorded_after_restart(
    core_settings: CoreSettings, tmp_path: Path, running: Any, publisher: ServiceRuntime
) -> None:
    first = make_registry(core_settings, tmp_path)
    app = await running(first.app)
    await publisher.bus.publish(submitted(0))
    await wait_until(lambda: first.store.count_events() == 1)
    app.exit()
    await wait_until(lambda: not app.broker.running, timeout=20)

    for n in range(1, 21):
        await publisher.bus.publish(submitted(n))
    await asyncio.sleep(0.3)
    assert first.store.count_events() == 1  # nobody is consuming

    second = make_registry(core_settings, tmp_path)
    await running(second.app)
    await wait_until(lambda: second.store.count_events() == 21, timeout=20)


async def test_trace_started_at_publish_continues_in_the_registry(
    core_settings: CoreSettings, tmp_path: Path, running: Any
) -> None:
    spans = InMemorySpanExporter()
    registry = make_registry(core_settings, tmp_path, span_exporter=spans)
    await running(registry.app)
    operator = build_runtime("operator", core_settings, span_exporter=spans)
    await operator.broker.start()
    try:
        envelope = await operator.bus.publish(submitted())
        await wait_until(lambda: registry.store.count_events() == 1)
    finally:
        await operator.broker.stop()

    def by(service: str, operation: str) -> list[Any]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.resource.attributes["service.name"] == f"tuneline-{service}"
            and s.name == f"{DatasetSubmitted.subject()} {operation}"
        ]

    publish_span = await wait_until(lambda: by("operator", "publish"))
    process_span = await wait_until(lambda: by("registry", "process"))
    trace_id = publish_span[0].context.trace_id
    assert process_span[0].context.trace_id == trace_id
    # the registry stored the same trace in the event log
    recorded = registry.store.timeline(envelope.correlation_id).entries[0]
    assert recorded.ce_id == envelope.id
    with registry.store.sessions() as session:
        from services.registry.tables import EventRecord

        row = session.query(EventRecord).one()
        assert row.traceparent is not None
        assert row.traceparent.split("-")[1] == f"{trace_id:032x}"


async def test_queries_answer_over_request_reply(
    core_settings: CoreSettings, tmp_path: Path, running: Any, publisher: ServiceRuntime
) -> None:
    registry = make_registry(core_settings, tmp_path)
    await running(registry.app)
    submitted_env = await publisher.bus.publish(submitted())
    ready = candidate()
    await publisher.bus.publish(ready, correlation_id=submitted_env.correlation_id)
    await wait_until(lambda: registry.store.count_events() == 2)

    timeline = await query(
        publisher.broker, "registry", "timeline", {"correlation_id": submitted_env.correlation_id}
    )
    assert [e["type"] for e in timeline["entries"]] == [
        "tuneline.dataset.submitted.v1",
        "tuneline.candidate.ready.v1",
    ]
    versions = await query(publisher.broker, "registry", "models.list", {"tenant": "acme"})
    assert [v["version_id"] for v in versions["versions"]] == [ready.candidate.version_id()]
    detail = await query(
        publisher.broker, "registry", "models.get", {"version_id": ready.candidate.version_id()}
    )
    assert detail["model_ref"]["base"]["sha256"] == ready.candidate.base.sha256
    assert len(detail["history"]) == 2
    with pytest.raises(RpcError, match="not in the registry") as caught:
        await query(publisher.broker, "registry", "models.get", {"version_id": "mv-nope"})
    assert caught.value.code == "not-found"
    with pytest.raises(RpcError) as bad:
        await query(publisher.broker, "registry", "models.list", {"limit": "lots"})
    assert bad.value.code == "bad-request"
    health = await query(publisher.broker, "registry", "health", {})
    assert health["status"] == "ok"


async def test_rpc_without_a_registry_says_how_to_fix_it(publisher: ServiceRuntime) -> None:
    with pytest.raises(RpcError, match="tuneline up"):
        await query(publisher.broker, "registry", "timeline", {"correlation_id": "x"})
