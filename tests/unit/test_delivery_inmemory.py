"""Delivery rules with FastStream's in-memory broker: decode, dead-letter, retry, publish derived."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsMessage, TestNatsBroker

from schemas.dataset import DatasetSubmitted
from schemas.envelope import Envelope
from schemas.training import TrainingStarted
from services.core.messaging.bus import dlq_stream
from services.core.messaging.delivery import (
    DLQ_KIND,
    DLQ_REASON,
    HandlerContext,
    PermanentError,
    subscribe_event,
)
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings
from tests.support.events import sha, submitted


def _runtime() -> Any:
    return build_runtime("unit", CoreSettings())


def _capture_dlq(runtime: Any) -> list[NatsMessage]:
    letters: list[NatsMessage] = []

    @runtime.broker.subscriber("tuneline.dlq.>", stream=dlq_stream())
    async def dlq(msg: NatsMessage) -> None:
        letters.append(msg)

    return letters


def _subscribe(runtime: Any, handler: Any) -> None:
    subscribe_event(
        runtime.broker,
        DatasetSubmitted,
        handler,
        service="unit",
        bus=runtime.bus,
        delivery=runtime.settings.delivery,
        metrics=runtime.metrics,
    )


def _outcomes(runtime: Any) -> dict[str, float]:
    """Outcomes that happened (every outcome's series exists from the start, at zero)."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in runtime.metrics.handled.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.value
    }


async def test_valid_event_reaches_handler_with_its_envelope() -> None:
    runtime = _runtime()
    seen: list[tuple[DatasetSubmitted, Envelope]] = []

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        seen.append((event, ctx.envelope))

    _subscribe(runtime, handle)
    async with TestNatsBroker(runtime.broker):
        envelope = await runtime.bus.publish(submitted())
    assert len(seen) == 1
    event, received = seen[0]
    assert event == submitted()
    # the telemetry middleware adds the W3C traceparent on the way out
    assert received.traceparent is not None
    assert received.model_copy(update={"traceparent": None}) == envelope
    assert received.tenant == "acme"
    assert _outcomes(runtime) == {"ack": 1.0}


async def test_invalid_payload_is_dead_lettered_with_field_names() -> None:
    runtime = _runtime()
    letters = _capture_dlq(runtime)
    calls: list[Any] = []

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        calls.append(event)

    _subscribe(runtime, handle)
    envelope = runtime.bus.envelope_for(submitted())
    async with TestNatsBroker(runtime.broker) as broker:
        await broker.publish(
            {"submission_id": "x", "tenant": "acme"},
            DatasetSubmitted.subject(),
            headers=envelope.to_headers(),
        )
    assert calls == []
    assert len(letters) == 1
    reason = letters[0].headers[DLQ_REASON]
    assert "task: Field required" in reason and "recipe: Field required" in reason
    assert letters[0].headers[DLQ_KIND] == "invalid-payload"
    assert letters[0].raw_message.subject == "tuneline.dlq.tuneline.events.dataset.submitted"


async def test_missing_envelope_is_dead_lettered() -> None:
    runtime = _runtime()
    letters = _capture_dlq(runtime)

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        raise AssertionError("must not be called")

    _subscribe(runtime, handle)
    async with TestNatsBroker(runtime.broker) as broker:
        await broker.publish(submitted().model_dump(mode="json"), DatasetSubmitted.subject())
    assert len(letters) == 1
    assert "ce-id" in letters[0].headers[DLQ_REASON]
    assert letters[0].headers[DLQ_KIND] == "invalid-envelope"


async def test_permanent_error_is_dead_lettered_at_once() -> None:
    runtime = _runtime()
    letters = _capture_dlq(runtime)

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        raise PermanentError("base model 'x' does not exist")

    _subscribe(runtime, handle)
    async with TestNatsBroker(runtime.broker):
        await runtime.bus.publish(submitted())
    assert [m.headers[DLQ_KIND] for m in letters] == ["permanent-error"]
    assert "does not exist" in letters[0].headers[DLQ_REASON]


async def test_transient_error_is_nacked_not_dead_lettered_on_first_attempt() -> None:
    runtime = _runtime()
    letters = _capture_dlq(runtime)

    async def handle(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        raise ConnectionError("database briefly away")

    _subscribe(runtime, handle)
    async with TestNatsBroker(runtime.broker):
        await runtime.bus.publish(submitted())
    assert letters == []
    assert _outcomes(runtime) == {"nak": 1.0}


async def test_derived_event_keeps_lineage_and_gets_a_deterministic_id() -> None:
    runtime = _runtime()
    derived: list[Envelope] = []

    async def on_submitted(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        started = TrainingStarted(
            run_id="run-1",
            dataset_id=sha("d"),
            method="sft-lora",
            base=_base(),
            recipe_sha256=sha("r"),
        )
        derived.append(await ctx.publish(started, "attempt-1"))

    _subscribe(runtime, on_submitted)
    async with TestNatsBroker(runtime.broker):
        cause = await runtime.bus.publish(submitted(), correlation_id="lineage-1")
    assert len(derived) == 1
    assert derived[0].correlation_id == "lineage-1"
    assert derived[0].causation_id == cause.id
    assert derived[0].tenant == "acme"
    again = runtime.bus.envelope_for(
        TrainingStarted(
            run_id="run-1",
            dataset_id=sha("d"),
            method="sft-lora",
            base=_base(),
            recipe_sha256=sha("r"),
        ),
        causation=cause,
        discriminators=["attempt-1"],
    )
    assert again.id == derived[0].id


def _base() -> Any:
    from schemas.refs import BaseModelRef

    return BaseModelRef(name="tiny", uri="u", sha256=sha("b"), architecture="LlamaForCausalLM")
