"""Delivery rules on a real nats-server: bounded retry, heartbeats, replicas share one consumer."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from schemas.dataset import DatasetSubmitted
from schemas.subjects import DLQ_STREAM
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import (
    DLQ_DELIVERIES,
    DLQ_KIND,
    DLQ_REASON,
    HandlerContext,
    subscribe_event,
)
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings
from tests.conftest import wait_until
from tests.support.events import submitted

pytestmark = pytest.mark.integration


def worker(core: CoreSettings, handler: Any, service: str = "worker") -> ServiceRuntime:
    runtime = build_runtime(service, core)
    subscribe_event(
        runtime.broker,
        DatasetSubmitted,
        handler,
        service=service,
        bus=runtime.bus,
        delivery=core.delivery,
        metrics=runtime.metrics,
    )
    return runtime


async def test_transient_failure_is_retried_then_dead_lettered(
    core_settings: CoreSettings, running: Any
) -> None:
    attempts: list[int] = []

    async def flaky(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("upstream unavailable")

    runtime = await running(worker(core_settings, flaky).app)
    bus = EventBus(runtime.broker, "operator")
    await bus.publish(submitted())
    await wait_until(lambda: len(attempts) == core_settings.delivery.max_deliver, timeout=15)
    js = runtime.broker.connection.jetstream()
    sub = await js.pull_subscribe("tuneline.dlq.>", stream=DLQ_STREAM)
    [letter] = await sub.fetch(1, timeout=5)
    assert letter.headers[DLQ_KIND] == "retries-exhausted"
    assert "gave up after 3 attempts" in letter.headers[DLQ_REASON]
    assert "ConnectionError: upstream unavailable" in letter.headers[DLQ_REASON]
    assert letter.headers[DLQ_DELIVERIES] == "3"
    await asyncio.sleep(1.0)
    assert attempts == [1, 2, 3]  # bounded: never retried forever


async def test_recovering_handler_succeeds_on_a_later_attempt(
    core_settings: CoreSettings, running: Any
) -> None:
    attempts: list[int] = []

    async def recovers(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise TimeoutError("slow dependency")

    runtime = await running(worker(core_settings, recovers).app)
    bus = EventBus(runtime.broker, "operator")
    await bus.publish(submitted())
    await wait_until(lambda: attempts == [1, 2])
    info = await runtime.broker.connection.jetstream().stream_info(DLQ_STREAM)
    assert info.state.messages == 0


async def test_long_handler_keeps_its_lease_with_in_progress(
    core_settings: CoreSettings, running: Any
) -> None:
    # AckWait is 2 s in tests; the handler works 5 s. Without heartbeats it would be redelivered.
    calls: list[int] = []
    finished = asyncio.Event()

    async def slow(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        calls.append(ctx.attempt)
        await asyncio.sleep(5.0)
        finished.set()

    runtime = await running(worker(core_settings, slow).app)
    bus = EventBus(runtime.broker, "operator")
    await bus.publish(submitted())
    await asyncio.wait_for(finished.wait(), 15)
    await asyncio.sleep(2.5)
    assert calls == [1]


async def test_replicas_share_the_durable_and_each_event_is_handled_once_per_service(
    core_settings: CoreSettings, running: Any
) -> None:
    handled: Counter[str] = Counter()
    by_replica: Counter[str] = Counter()
    other_service: Counter[str] = Counter()

    def replica(name: str) -> Any:
        async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
            handled[event.submission_id] += 1
            by_replica[name] += 1
            await asyncio.sleep(0.01)

        return handle

    async def audit(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        other_service[event.submission_id] += 1

    first = await running(worker(core_settings, replica("a"), "curation").app)
    await running(worker(core_settings, replica("b"), "curation").app)
    await running(worker(core_settings, audit, "auditor").app)
    bus = EventBus(first.broker, "operator")
    for n in range(60):
        await bus.publish(submitted(n))
    await wait_until(lambda: sum(handled.values()) == 60 and sum(other_service.values()) == 60, timeout=20)
    await asyncio.sleep(0.5)
    assert set(handled.values()) == {1}
    assert set(other_service.values()) == {1}
    assert by_replica["a"] > 0 and by_replica["b"] > 0


async def guarded_recorder(
    core_settings: CoreSettings, running: Any, service: str, check_s: float
) -> tuple[ServiceRuntime, EventBus, Any, str, list[str]]:
    """A running service recording the dataset.submitted it handles, its durable checked every
    `check_s`: the runtime, an operator's bus, JetStream, the durable's name and the handled ids."""
    from schemas.subjects import durable_name

    core = core_settings.model_copy(
        update={"delivery": core_settings.delivery.model_copy(update={"consumer_check_s": check_s})}
    )
    handled: list[str] = []

    async def record(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        handled.append(event.submission_id)

    runtime = worker(core, record, service=service)
    await running(runtime.app)
    js = runtime.broker.connection.jetstream()
    return (
        runtime,
        EventBus(runtime.broker, "operator"),
        js,
        durable_name(service, "dataset.submitted"),
        handled,
    )


async def test_a_deleted_or_altered_durable_is_reported_and_restored_without_replaying(
    core_settings: CoreSettings, running: Any
) -> None:
    """The attack: delete a service's durable (its work silently stops) or replace it with a
    deliver-all consumer (old events replayed). The guard reports it and restores the durable from
    its last ack floor: every event is handled once, none replayed."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from schemas.subjects import EVENTS_STREAM
    from services.core.messaging.rpc import query

    runtime, bus, js, durable, handled = await guarded_recorder(core_settings, running, "guarded", 0.5)
    await bus.publish(submitted(1))
    await wait_until(lambda: handled == ["sub-1"])
    await wait_until(lambda: runtime.bus.consumers.ack_floors.get(durable, 0) >= 1, timeout=5)

    await js.delete_consumer(EVENTS_STREAM, durable)
    health = await query(runtime.broker, "guarded", "health", {})
    assert health["status"] == "unhealthy" and health["consumer_problems"] == {durable: "missing"}
    await bus.publish(submitted(2))  # sent while the durable is gone
    await wait_until(lambda: handled == ["sub-1", "sub-2"], timeout=15)
    health = await query(runtime.broker, "guarded", "health", {})
    assert health["status"] == "ok" and health["consumer_repairs"][-1]["problem"] == "missing"

    # replaced by a deliver-all consumer with other settings: detected, put back, nothing replayed
    await wait_until(lambda: runtime.bus.consumers.ack_floors.get(durable, 0) >= 2, timeout=5)
    await js.delete_consumer(EVENTS_STREAM, durable)
    await js.add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(
            durable_name=durable,
            filter_subject="tuneline.events.>",
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=100,
        ),
    )
    await wait_until(lambda: len(runtime.bus.consumers.repairs) == 2, timeout=10)
    assert "filter_subject" in runtime.bus.consumers.repairs[-1]["problem"]
    info = await js.consumer_info(EVENTS_STREAM, durable)
    # an operator event: its own subject, and its tenant operators' (`….dataset.submitted.<tenant>`)
    wanted = [DatasetSubmitted.subject(), f"{DatasetSubmitted.subject()}.*"]
    assert info.config.filter_subjects == wanted and info.config.max_deliver != 100
    await bus.publish(submitted(3))
    await wait_until(lambda: handled[-1:] == ["sub-3"], timeout=15)
    await asyncio.sleep(1.0)
    assert Counter(handled) == {"sub-1": 1, "sub-2": 1, "sub-3": 1}


async def test_a_replay_before_the_guard_repairs_the_durable_is_never_handled_again(
    core_settings: CoreSettings, running: Any
) -> None:
    """The window the guard cannot close: a deliver-all replacement delivers before the next check.
    Whatever sits at or below the durable's known ack floor was handled already: it is acked unhandled.
    The guard is kept asleep (an hour between checks) so the replay certainly reaches the handler."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from schemas.subjects import EVENTS_STREAM

    runtime, bus, js, durable, handled = await guarded_recorder(core_settings, running, "replayed", 3600)
    for n in (1, 2, 3):
        await bus.publish(submitted(n))
    await wait_until(lambda: handled == ["sub-1", "sub-2", "sub-3"])
    await asyncio.sleep(0.5)  # the acks reach the server
    await runtime.bus.consumers.inspect(js)  # what the guard's next check would record
    assert runtime.bus.consumers.ack_floors[durable] == 3
    config = (await js.consumer_info(EVENTS_STREAM, durable)).config
    await js.delete_consumer(EVENTS_STREAM, durable)
    await js.add_consumer(
        EVENTS_STREAM, ConsumerConfig(**{**config.as_dict(), "deliver_policy": DeliverPolicy.ALL})
    )
    await bus.publish(submitted(4))
    await wait_until(lambda: handled[-1:] == ["sub-4"], timeout=15)
    await asyncio.sleep(1.0)
    assert handled == ["sub-1", "sub-2", "sub-3", "sub-4"]
