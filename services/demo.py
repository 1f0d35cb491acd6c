"""`tuneline demo`: the pipeline as far as it exists, on a fresh embedded stack, narrated."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.dataset import DatasetSubmitted
from schemas.envelope import Envelope
from services.core.nats_server import free_port
from services.core.rpc import query
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings, NatsSettings
from services.stack import Stack, StackConfig, StackError, wait_healthy

DEMO_DIR = Path(".tuneline/demo")


def run_demo(data: Path, *, keep: bool, console: Console) -> None:
    started = time.monotonic()
    if not data.exists():
        raise StackError(f"{data}: sample payload not found; run the demo from the repository root")
    event = DatasetSubmitted.model_validate(json.loads(data.read_text()))
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    config = StackConfig(data_dir=DEMO_DIR, nats_port=free_port())
    stack = Stack(config)
    console.rule("[bold]tuneline demo")
    console.print(f"1. starting the embedded stack in {DEMO_DIR} …")
    stack.start()
    try:
        asyncio.run(_narrate(stack, event, console))
        console.print(
            f"\n[green]demo finished in {time.monotonic() - started:.1f}s.[/] Later issues add "
            "curation, training, evaluation, merging and rollout to this same run."
        )
        if keep:
            console.print(f"stack left running on {stack.nats_url}; Ctrl-C stops it")
            while not stack.dead_services():
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


async def _narrate(stack: Stack, event: DatasetSubmitted, console: Console) -> None:
    runtime = build_runtime(
        "cli", CoreSettings(nats=NatsSettings(url=stack.nats_url)), max_reconnect_attempts=0
    )
    await runtime.broker.connect()
    try:
        await wait_healthy(runtime.broker, stack)
        console.print(f"   nats-server {stack.nats_url}; services: {', '.join(stack.processes)}")

        console.print("2. publishing dataset.submitted (validated against its schema first) …")
        envelope = await runtime.bus.publish(event)
        console.print(f"   correlation id {envelope.correlation_id}")

        console.print("3. publishing a malformed event (a payload missing required fields) …")
        bad = Envelope(
            id=f"demo-malformed-{envelope.id[:8]}",
            source="tuneline/cli",
            type=DatasetSubmitted.ce_type(),
            time=envelope.time,
            subject="broken",
            correlation_id=envelope.correlation_id,
            tenant=event.tenant,
        )
        await runtime.broker.publish(
            {"submission_id": "broken", "tenant": event.tenant},
            DatasetSubmitted.subject(),
            headers=bad.to_headers(),
            stream="TUNELINE",
        )

        timeline = await _wait_for(
            lambda: _timeline_with(runtime, envelope.correlation_id, 1),
            what="the registry to record the event",
            stack=stack,
        )
        letters = await _wait_for(
            lambda: _dead_letters(runtime), what="the dead letter to be recorded", stack=stack
        )
    finally:
        await runtime.broker.stop()

    console.print("4. the registry's timeline for this lineage (tuneline status <id>):")
    table = Table("#", "event", "from", "subject", "details")
    for entry in timeline["entries"]:
        table.add_row(
            str(entry["position"]),
            entry["type"],
            entry["source"],
            entry["subject"],
            entry["summary"],
        )
    console.print(table)
    console.print("5. the malformed event was dead-lettered with its reason (tuneline dlq list):")
    for letter in letters:
        console.print(
            f"   [red]{letter['original_subject']}[/] refused by {letter['service']}: "
            f"{letter['reason'][:300]}"
        )
    console.print(
        f"\nFollow it yourself: tuneline --nats-url {stack.nats_url} status "
        f"{envelope.correlation_id}   (while the stack runs: --keep)"
    )


async def _timeline_with(runtime: Any, correlation_id: str, n: int) -> dict[str, Any] | None:
    timeline = await query(runtime.broker, "registry", "timeline", {"correlation_id": correlation_id})
    return timeline if len(timeline["entries"]) >= n else None


async def _dead_letters(runtime: Any) -> list[dict[str, Any]] | None:
    result = await query(runtime.broker, "registry", "dead-letters.list", {"limit": 10})
    return result["dead_letters"] or None


async def _wait_for(fn: Any, *, what: str, stack: Stack, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if dead := stack.dead_services():
            name = next(iter(dead))
            raise StackError(f"{name} died during the demo:\n{stack.log_tail(name)}")
        try:
            result = await fn()
        except Exception as error:  # noqa: BLE001  (not up yet: keep polling until the deadline)
            last_error = error
            result = None
        if result:
            return result
        await asyncio.sleep(0.2)
    raise StackError(f"timed out waiting for {what}" + (f": {last_error}" if last_error else ""))
