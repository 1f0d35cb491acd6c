"""One request's way through serving: decide the version, generate, measure, log the decision, mirror."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from faststream.nats import NatsBroker
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas.events import describe_validation_error
from schemas.serving import DecisionRecord, Role, ServingWindow
from schemas.subjects import DECISIONS_PREFIX, DECISIONS_STREAM
from services.core.messaging.bus import EventBus
from services.core.ml.refusals import is_refusal
from services.serving.checks import refusal_for, schema_valid, sha256_text, unencodable_string
from services.serving.config import Fault, ServingSettings
from services.serving.generation import (
    Backend,
    BackendError,
    Completion,
    Job,
    PromptRefused,
    Sampling,
    fingerprint,
)
from services.serving.metrics import ServingMetrics
from services.serving.protocol import ChatCompletionRequest, CompletionRequest, param_of, refuse_unsupported
from services.serving.responses import Provenance
from services.serving.routing import Decision, RequestRefused, RouteBook, refuse_weight_choice
from services.serving.streaming import FirstTokenQueue
from services.serving.windows import Outcome, WindowCounter

log = logging.getLogger(__name__)
Kind = Literal["chat", "completion"]


class InjectedFault(Exception):
    """A failure injected by the fault settings (rollout drills)."""


@dataclass
class Prepared:
    """A validated request with the version that will answer it."""

    kind: Kind
    tenant: str
    decision: Decision
    prompt: str
    messages: list[dict[str, str]] | None
    sampling: Sampling
    schema: dict[str, Any] | None
    decision_id: str
    arrived: float
    fingerprint: str

    @property
    def model_name(self) -> str:
        return f"{self.decision.route.route}@{self.decision.version_id}"


class ServingService:
    def __init__(
        self,
        settings: ServingSettings,
        backend: Backend,
        *,
        broker: NatsBroker | None,
        bus: EventBus | None,
        registry: CollectorRegistry,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.broker = broker
        self.bus = bus
        self.book = RouteBook()
        self.counter = WindowCounter()
        self.metrics = ServingMetrics(registry)
        self.rng = rng or random.Random()
        self.keys = settings.tenants_by_key()
        self.background: set[asyncio.Task[Any]] = set()

    # -- who is asking ----------------------------------------------------------------------------
    def tenant_for(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if token:
            tenant = self.keys.get(token)
            if tenant is None:
                raise RequestRefused(
                    401, "invalid API key: ask your operator for a key for your tenant",
                    kind="authentication_error", code="invalid_api_key",
                )  # fmt: skip
            return tenant
        if not self.settings.allow_anonymous:
            fix = (
                "send `Authorization: Bearer <key>`"
                if self.keys
                else "this server has no API keys: its operator sets TUNELINE_SERVING_API_KEYS "
                "(or TUNELINE_SERVING_ALLOW_ANONYMOUS=true for a private, single-tenant server)"
            )
            raise RequestRefused(
                401, f"missing API key: {fix}", kind="authentication_error", code="missing_api_key"
            )
        return self.settings.core.tenant

    # -- preparing ---------------------------------------------------------------------------------
    async def prepare(self, tenant: str, body: Any, kind: Kind) -> Prepared:
        if not isinstance(body, dict):
            raise RequestRefused(400, "the request body must be a JSON object", kind="invalid_request_error",
                                 code="invalid_body")  # fmt: skip
        refuse_weight_choice(body)
        refuse_unsupported(body)
        bad = unencodable_string(body)
        if bad is not None:
            raise RequestRefused(
                400, f"{bad} is not valid Unicode (a lone UTF-16 surrogate such as \\ud800): send UTF-8 text",
                kind="invalid_request_error", code="invalid_text", param=bad,
            )  # fmt: skip
        try:
            request: ChatCompletionRequest | CompletionRequest = (
                ChatCompletionRequest.model_validate(body)
                if kind == "chat"
                else CompletionRequest.model_validate(body)
            )
            sampling = request.sampling(128, self.settings.max_tokens_limit)
        except ValidationError as error:
            raise RequestRefused(
                400, describe_validation_error(error), kind="invalid_request_error", code="invalid_request",
                param=param_of(error.errors()[0]["loc"]),
            ) from None  # fmt: skip
        except ValueError as error:
            raise RequestRefused(
                400, str(error), kind="invalid_request_error", code="invalid_request", param="max_tokens"
            ) from None
        decision = self.book.decide(request.model, tenant, self.rng.random(), self.rng.random())
        messages: list[dict[str, str]] | None = None
        schema = None
        if isinstance(request, ChatCompletionRequest):
            try:
                messages = request.plain_messages()
            except ValueError as error:
                raise RequestRefused(
                    400, str(error), kind="invalid_request_error", code="invalid_request", param="messages"
                ) from None
            schema = request.response_format.schema_to_meet() if request.response_format else None
        text = request.text() if isinstance(request, CompletionRequest) else None
        prompt = await self._prompt(decision, messages, text, sampling.max_tokens)
        return Prepared(
            kind=kind,
            tenant=tenant,
            decision=decision,
            prompt=prompt,
            messages=messages,
            sampling=sampling,
            schema=schema,
            decision_id=f"dec-{uuid.uuid4().hex}",
            arrived=time.time(),
            fingerprint=fingerprint(decision.ref, sampling, self.backend.name),
        )

    async def _prompt(
        self,
        decision: Decision,
        messages: list[dict[str, str]] | None,
        text: str | None,
        max_tokens: int,
    ) -> str:
        """The prompt text (chat messages rendered by the version's template), checked against the
        model's context, in one trip to a worker thread."""

        def render_and_check() -> str:
            prompt = self.backend.chat_prompt(decision.ref, messages) if messages is not None else text or ""
            self.backend.check_prompt(decision.ref, prompt, max_tokens)
            return prompt

        try:
            return await asyncio.to_thread(render_and_check)
        except PromptRefused as error:
            raise RequestRefused(
                400, str(error), kind="invalid_request_error", code="context_length_exceeded",
                param="messages" if messages is not None else "prompt",
            ) from None  # fmt: skip
        except BackendError as error:
            raise RequestRefused(
                503, str(error), kind="service_unavailable", code="version_unavailable"
            ) from None

    def headers(self, p: Prepared) -> dict[str, str]:
        """Response headers naming the exact tuple and settings (also in the body)."""
        ref = p.decision.ref
        return {
            "x-tuneline-route": p.decision.route.route,
            "x-tuneline-role": p.decision.role,
            "x-tuneline-version": p.decision.version_id,
            "x-tuneline-base-sha256": ref.base.sha256,
            "x-tuneline-adapter-sha256": ref.adapter.artifact.sha256 if ref.adapter else "none",
            "x-tuneline-weights-sha256": ref.weights.sha256 if ref.weights else "none",
            "x-tuneline-quantization": ref.quantization.method,
            "x-tuneline-tokenizer-sha256": ref.tokenizer.tokenizer_sha256,
            "x-tuneline-sampling": json.dumps(p.sampling.as_dict(), separators=(",", ":")),
            "x-tuneline-decision-id": p.decision_id,
            "x-tuneline-fingerprint": p.fingerprint,
        }

    def provenance(self, p: Prepared) -> Provenance:
        return Provenance(
            route=p.decision.route.route,
            role=p.decision.role,
            version_id=p.decision.version_id,
            decision_id=p.decision_id,
            backend=self.backend.name,
            sampling=p.sampling.as_dict(),
            model_ref=p.decision.ref.model_dump(mode="json"),
        )

    # -- answering ---------------------------------------------------------------------------------
    async def _generate(
        self, p: Prepared, role: Role, ref: Any, stream: asyncio.Queue[str | None] | None
    ) -> Completion:
        fault = self.faults_for(p, role, ref)
        if fault is not None and fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault is not None and fault.error_rate and self.rng.random() < fault.error_rate:
            if stream is not None:
                stream.put_nowait(None)
            raise InjectedFault(f"injected fault on {p.decision.route.route}/{role}")
        return await self.backend.submit(Job(ref=ref, prompt=p.prompt, sampling=p.sampling, stream=stream))

    def faults_for(self, p: Prepared, role: Role, ref: Any) -> Fault | None:
        faults = self.settings.faults
        return faults.get(ref.version_id()) or faults.get(f"{p.decision.route.route}/{role}")

    async def complete(self, p: Prepared) -> Completion:
        """Answer with the decided version; measure it; mirror it to the candidate when shadowing."""
        return await self._answer(p, stream=None)

    async def stream(self, p: Prepared, finished: list[Completion] | None = None) -> AsyncIterator[str]:
        """Text deltas as they are generated; the result is measured and logged like `complete`,
        and appended to `finished` (its finish reason and usage) once the last delta is out."""
        queue = FirstTokenQueue()
        task = asyncio.create_task(self._answer(p, stream=queue))
        sent = ""
        while True:
            delta = await queue.get()
            if delta is None:
                break
            sent += delta
            yield delta
        result = await task  # raises the generation's error, if any
        if result.text.startswith(sent) and len(result.text) > len(sent):
            yield result.text[len(sent) :]  # what the streamer held back (an incomplete character)
        if finished is not None:
            finished.append(result)

    async def _answer(self, p: Prepared, stream: FirstTokenQueue | None) -> Completion:
        role = p.decision.role
        started = time.perf_counter()
        try:
            result = await self._generate(p, role, p.decision.ref, stream)
        except Exception as error:
            self._observe(p, role, p.decision.ref, None, time.perf_counter() - started, error)
            refused = refusal_for(error)
            refused.counted = True
            raise refused from error
        first = stream.first_at if stream is not None else None
        self._observe(
            p,
            role,
            p.decision.ref,
            result,
            time.perf_counter() - started,
            None,
            ttft_s=first - started if first is not None else None,
        )
        if p.decision.mirror and p.decision.route.candidate is not None:
            self._spawn(self._shadow(p, result))
        return result

    async def _shadow(self, p: Prepared, stable: Completion) -> None:
        candidate = p.decision.route.candidate
        assert candidate is not None
        started = time.perf_counter()
        try:
            result = await self._generate(p, "shadow", candidate, None)
        except Exception as error:  # noqa: BLE001  (a shadow failure is measured, never returned)
            self._observe(p, "shadow", candidate, None, time.perf_counter() - started, error)
            return
        self._observe(
            p,
            "shadow",
            candidate,
            result,
            time.perf_counter() - started,
            None,
            agreed=result.text == stable.text,
        )

    def _observe(
        self,
        p: Prepared,
        role: Role,
        ref: Any,
        result: Completion | None,
        seconds: float,
        error: Exception | None,
        *,
        agreed: bool | None = None,
        ttft_s: float | None = None,
    ) -> None:
        route = p.decision.route.route
        version = ref.version_id()
        valid = schema_valid(result.text, p.schema) if result is not None and p.schema is not None else None
        outcome = Outcome(
            latency_ms=seconds * 1000,
            error=error is not None,
            schema_valid=valid,
            refused=result is not None and is_refusal(result.text),
            agreed=agreed,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
        )
        self.counter.add(p.tenant, route, version, role, outcome)
        status = 200 if error is None else refusal_for(error).status
        self.metrics.requests.labels(route, role, str(status)).inc()
        self.metrics.seconds.labels(route, role).observe(seconds)
        if result is not None:
            self.metrics.tokens.labels(route, role).inc(result.completion_tokens)
            if seconds > 0:
                self.metrics.tokens_per_second.labels(route, role).observe(result.completion_tokens / seconds)
            self.metrics.refusals.labels(route, role).inc(outcome.refused)
            if valid is not None:
                self.metrics.schema_checked.labels(route, role, str(valid).lower()).inc()
        if ttft_s is not None:
            self.metrics.first_token_seconds.labels(route, role).observe(ttft_s)
        record = DecisionRecord(
            decision_id=p.decision_id if role != "shadow" else f"{p.decision_id}-shadow",
            time=p.arrived,
            replica=self.settings.replica,
            tenant=p.tenant,
            route=route,
            role=role,
            version_id=version,
            model=ref,
            backend=self.backend.name,
            system_fingerprint=fingerprint(ref, p.sampling, self.backend.name),
            sampling=p.sampling.as_dict(),
            prompt_sha256=sha256_text(p.prompt),
            completion_sha256=sha256_text(result.text) if result is not None else None,
            prompt_tokens=result.prompt_tokens if result else 0,
            completion_tokens=result.completion_tokens if result else 0,
            latency_ms=round(seconds * 1000, 3),
            status=status,
            error=str(error) if error else None,
            shadow_of=p.decision_id if role == "shadow" else None,
        )
        self._spawn(self._log_decision(record))

    async def _log_decision(self, record: DecisionRecord) -> None:
        if self.broker is None:
            return
        try:
            await self.broker.publish(
                record, f"{DECISIONS_PREFIX}.{record.route}", stream=DECISIONS_STREAM, timeout=5.0
            )
        except Exception:
            log.exception("could not log decision %s", record.decision_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- windows -------------------------------------------------------------------------------------
    async def publish_window(self) -> list[ServingWindow]:
        start, end, per_tenant = self.counter.flush()
        sent = []
        for tenant, stats in per_tenant.items():
            window = ServingWindow(
                replica=self.settings.replica,
                window_start=start,
                window_end=end,
                tenant=tenant,
                stats=tuple(stats),
            )
            if self.bus is not None:
                await self.bus.publish(window, tenant=tenant)
            sent.append(window)
        return sent

    async def drain(self) -> None:
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
