"""Rollout test helpers: a synthetic HTTP client, a candidate's gate verdict published as the
evaluation service publishes it, the route as the controller left it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas.evaluation import ArmScore, EvalCompleted, GateResult, GatesPassed, SuiteResult
from schemas.gate_policy import GatePolicy
from schemas.refs import EvalSuiteRef, ModelRef
from services.core.messaging.bus import EventBus
from services.core.messaging.routes import RouteTable
from services.core.runtime import ServiceRuntime
from tests.conftest import wait_until
from tests.support.merging import announce, registered
from tests.support.stream import stored_events


@dataclass
class Traffic:
    """A synthetic client: `concurrency` requests in flight until stopped; every answer is kept."""

    url: str
    answers: list[tuple[float, str, str, int]] = field(default_factory=list)  # (time, role, version, status)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stream: bool = False  # ask for server-sent events, as chat clients do

    async def one(self, client: httpx.AsyncClient, n: int) -> None:
        body = {"model": "support", "messages": [{"role": "user", "content": f"ticket {n}"}], "max_tokens": 4}
        if self.stream:
            body["stream"] = True
        reply = await client.post("/v1/chat/completions", json=body)
        headers = reply.headers
        self.answers.append(
            (
                asyncio.get_running_loop().time(),
                headers.get("x-tuneline-role", "?"),
                headers.get("x-tuneline-version", "?"),
                reply.status_code,
            )
        )

    async def run(self, concurrency: int = 8) -> None:
        async with client_for(self.url) as client:
            n = 0
            while not self.stop.is_set():
                await asyncio.gather(*(self.one(client, n + i) for i in range(concurrency)))
                n += concurrency


def client_for(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": "Bearer key-acme"})


@contextlib.asynccontextmanager
async def generating(url: str, *, stream: bool = False) -> AsyncIterator[Traffic]:
    traffic = Traffic(url, stream=stream)
    task = asyncio.create_task(traffic.run())
    try:
        yield traffic
    finally:
        traffic.stop.set()
        await task


def verdict(candidate: ModelRef, policy: GatePolicy | None = None) -> GatesPassed:
    gate = GateResult(gate="target-gain:target", value=10.0, threshold=0.0, comparator=">=", passed=True)
    return GatesPassed(
        candidate=candidate, tenant="acme", route="support", policy=policy or GatePolicy(), gates=(gate,)
    )


async def passed(operator: ServiceRuntime, candidate: ModelRef, policy: GatePolicy | None = None) -> None:
    """The candidate as the registry learns of it, then its evaluation and gate verdict, published as
    the evaluation service publishes them (the rollout checks the record before its first step)."""
    await registered(operator, await announce(operator, candidate, "support"))
    evaluation = EventBus(operator.broker, "evaluation")
    suite = SuiteResult(
        suite=EvalSuiteRef(name="target", sha256="0" * 64),
        kind="target",
        items=1,
        scores=(ArmScore(arm="candidate", version_id=candidate.version_id(), metrics={"score": 1.0}),),
    )
    completed = await evaluation.publish(
        EvalCompleted(candidate=candidate, tenant="acme", route="support", suites=(suite,))
    )
    await evaluation.publish(verdict(candidate, policy), causation=completed)


async def event_of(operator: ServiceRuntime, kind: str, timeout: float = 120) -> dict[str, Any]:
    js = operator.broker.connection.jetstream()

    async def found() -> dict[str, Any] | None:
        events = await stored_events(js, kind)
        return events[0].payload if events else None

    return dict(await wait_until(found, timeout=timeout, interval=0.3))


async def route_now(operator: ServiceRuntime) -> Any:
    table = await RouteTable.open(operator.broker.connection.jetstream())
    return (await table.get("support"))[0]
