"""The chaos suite's stack: every service as a real process on a real nats-server (the embedded
stack of `tuneline up`), short AckWaits so a killed consumer's message comes back in seconds, and
an operator connection that publishes and asks the registry what it recorded."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.messaging.nats_server import free_port
from services.core.messaging.rpc import RpcError, query
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings, NatsSettings
from services.stack import Stack, StackConfig, wait_healthy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TICKETS = EXAMPLES / "support-tickets" / "tickets.jsonl"
FAST = {
    # a killed consumer's unacked message is redelivered after AckWait: keep it short
    "TUNELINE_DELIVERY_ACK_WAIT_S": "4",
    "TUNELINE_DELIVERY_BACKOFF_S": "[0.5, 1, 2]",
    "TUNELINE_DELIVERY_FETCH_TIMEOUT_S": "0.5",
    "TUNELINE_TRAINING_ACK_WAIT_S": "4",
    "TUNELINE_TRAINING_PROGRESS_INTERVAL_S": "0",
    "TUNELINE_TRAINING_DEVICE": "cpu",
    "TUNELINE_EVALUATION_ACK_WAIT_S": "6",
    "TUNELINE_EVALUATION_DRIFT_INTERVAL_S": "0",
    "TUNELINE_SERVING_WINDOW_S": "1",
    # rollout steps held for seconds, not minutes; the analysis stays on (errors roll back)
    "TUNELINE_ROLLOUT_POLICY__MIN_SECONDS": "1",
    "TUNELINE_ROLLOUT_POLICY__MIN_REQUESTS": "3",
    "TUNELINE_ROLLOUT_POLICY__SHADOW_MIN_REQUESTS": "3",
    "TUNELINE_ROLLOUT_POLICY__LATENCY_SLACK_MS": "5000",
}


@dataclass
class Chaos:
    stack: Stack
    operator: ServiceRuntime
    work: Path

    @property
    def url(self) -> str:
        return self.stack.nats_url

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "--nats-url", self.url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200"},
        )

    def submit(self, gates: dict[str, float] | None = None, **training: object) -> str:
        """`tuneline submit` the demo tickets with a tiny-model recipe; the correlation id."""
        fields = {"base_model": "tiny-llama", "max_seq_len": 1024, "eval_steps": 100_000, **training}
        recipe = self.work / f"recipe-{time.monotonic_ns()}.yaml"
        spec: dict[str, Any] = {"task": "ticket-to-json", "route": "support-extract", "training": fields}
        if gates:
            spec["gates"] = gates
        recipe.write_text(yaml.safe_dump(spec))
        submitted = self.cli("submit", str(TICKETS), "--recipe", str(recipe))
        assert submitted.returncode == 0, submitted.stderr
        return submitted.stdout.split("correlation id:")[1].split()[0]

    async def timeline(self, correlation: str) -> list[dict[str, Any]]:
        try:
            answer = await query(
                self.operator.broker, "registry", "timeline", {"correlation_id": correlation}
            )
        except RpcError:
            return []  # not recorded yet, or the registry is down
        return list(answer["entries"])

    async def types(self, correlation: str) -> collections.Counter[str]:
        return collections.Counter(
            e["type"].removeprefix("tuneline.").removesuffix(".v1") for e in await self.timeline(correlation)
        )

    async def wait_for(
        self, correlation: str, *event_types: str, timeout: float = 240
    ) -> collections.Counter[str]:
        """Until one of `event_types` is recorded in the lineage; its counts of every type."""
        deadline = time.monotonic() + timeout
        counts: collections.Counter[str] = collections.Counter()
        while time.monotonic() < deadline:
            counts = await self.types(correlation)
            if any(counts[t] for t in event_types):
                return counts
            if dead := self.stack.dead_services():
                name = next(iter(dead))
                raise AssertionError(f"{name} died:\n{self.stack.log_tail(name, 40)}")
            await asyncio.sleep(0.5)
        raise AssertionError(f"none of {event_types} within {timeout}s; recorded: {dict(counts)}")

    async def healthy(self, timeout: float = 90) -> None:
        await wait_healthy(self.operator.broker, self.stack, timeout=timeout)


@pytest.fixture
async def chaos(tmp_path: Path, model_cache: Path) -> AsyncIterator[Chaos]:
    stack = Stack(
        StackConfig(
            data_dir=tmp_path / "data",
            nats_port=free_port(),
            serving_port=free_port(),
            dashboard_port=free_port(),
            env={**FAST, "TUNELINE_MODEL_CACHE": str(model_cache)},
        )
    )
    stack.start()
    operator = build_runtime("operator", CoreSettings(nats=NatsSettings(url=stack.nats_url)))
    try:
        await operator.broker.connect()
        chaos = Chaos(stack, operator, tmp_path)
        await chaos.healthy()
        yield chaos
    finally:
        await operator.broker.stop()
        operator.tracer_provider.shutdown()
        stack.stop()
