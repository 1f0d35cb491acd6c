"""What the demo asks the registry while it runs: the run, the candidate, the verdict, the
evaluation's figures and the dead letters, each waited for with a timeout that names what is late;
and the closing summary drawn from those figures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from schemas.queries import (
    DEAD_LETTERS_LIST,
    EVALS_GET,
    MODELS_LIST,
    RUNS_GET,
    RUNS_LIST,
    DeadLettersQuery,
    EvalsQuery,
    ModelVersionsQuery,
    RunQuery,
    RunsQuery,
)
from services.core.messaging.routes import NoRouteTable, RouteTable
from services.core.messaging.rpc import ask
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings
from services.stack import Stack, StackError


async def wait_for_run(stack: Stack) -> str:
    async def first_run(runtime: Any) -> str | None:
        runs = (await ask(runtime.broker, RUNS_LIST, RunsQuery(limit=1))).runs
        return runs[0].run_id if runs else None

    return str(await with_runtime(stack, first_run, what="the training run"))


async def version_of(stack: Stack, run_id: str) -> str:
    async def version(runtime: Any) -> str | None:
        detail = await ask(runtime.broker, RUNS_GET, RunQuery(run_id=run_id))
        return detail.summary.version_id

    return str(await with_runtime(stack, version, what="the candidate of the run"))


async def version_on(stack: Stack, route: str) -> str:
    async def newest(runtime: Any) -> str | None:
        versions = (await ask(runtime.broker, MODELS_LIST, ModelVersionsQuery(route=route, limit=1))).versions
        return versions[0].version_id if versions else None

    return str(await with_runtime(stack, newest, what=f"the version on route {route}"))


async def rollout_begun(stack: Stack, route: str, version: str) -> str:
    """Wait until the rollout that gates.passed starts has reached the route table: rollout verifies
    the verdict against the registry first, which may not have recorded it yet (it retries)."""

    opened: list[RouteTable] = []  # the bucket is opened once it exists, not on every poll

    async def begun(runtime: Any) -> str | None:
        if not opened:
            try:
                opened.append(await RouteTable.open(runtime.broker.connection.jetstream(), create=False))
            except NoRouteTable:
                return None
        entry, _ = await opened[0].get(route)
        if entry is None or version not in entry.released:
            return None
        return entry.released[version]

    return str(await with_runtime(stack, begun, what=f"the rollout of {version} on {route}"))


async def verdict_of(stack: Stack, version: str, status: Any = None) -> str:
    started = time.monotonic()

    async def decided(runtime: Any) -> str | None:
        if status is not None:  # progress: the wait is minutes long on SmolLM2
            status.update(f"evaluating {version}: {time.monotonic() - started:.0f} s …")
        detail = (await ask(runtime.broker, EVALS_GET, EvalsQuery(version_id=version))).model_dump(
            mode="json"
        )
        if detail["failures"]:
            raise StackError(f"evaluation failed: {detail['failures'][-1]['error']}")
        if not detail["decisions"]:
            return None
        return "passed" if detail["decisions"][-1]["passed"] else "failed"

    return str(await with_runtime(stack, decided, what="the gate verdict", timeout=1800))


async def evals(runtime: Any, version: str) -> dict[str, Any]:
    return (await ask(runtime.broker, EVALS_GET, EvalsQuery(version_id=version))).model_dump(mode="json")


def arm_metric(detail: dict[str, Any], suite_name: str, metric: str, arm: str) -> float | None:
    """One arm's metric on a suite (by name: `safety` and `jailbreak` are both of kind safety)."""
    for suite in detail["evaluations"][-1]["suites"]:
        if suite["suite"]["name"] == suite_name:
            for score in suite["scores"]:
                if score["arm"] == arm and metric in score["metrics"]:
                    return float(score["metrics"][metric])
    return None


async def with_runtime(stack: Stack, fn: Any, *, what: str, timeout: float = 60.0) -> Any:
    runtime = build_runtime("cli", CoreSettings(nats=stack.nats_settings()), max_reconnect_attempts=0)
    await runtime.broker.connect()
    try:
        return await wait_for(lambda: fn(runtime), what=what, stack=stack, timeout=timeout)
    finally:
        await runtime.broker.stop()


async def dead_letters(runtime: Any) -> list[dict[str, Any]] | None:
    result = await ask(runtime.broker, DEAD_LETTERS_LIST, DeadLettersQuery(limit=10))
    return result.model_dump(mode="json")["dead_letters"] or None


async def wait_for(fn: Any, *, what: str, stack: Stack, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if dead := stack.dead_services():
            name = next(iter(dead))
            raise StackError(f"{name} died during the demo:\n{stack.log_tail(name)}")
        try:
            result = await fn()
        except StackError:
            raise
        except Exception as error:  # noqa: BLE001  (not up yet: keep polling until the deadline)
            last_error = error
            result = None
        if result:
            return result
        await asyncio.sleep(0.2)
    raise StackError(f"timed out waiting for {what}" + (f": {last_error}" if last_error else ""))


def curl_command(stack: Stack, url: str, route: str) -> str:
    body = {"model": route, "messages": [{"role": "user", "content": "Where is my order?"}]}
    key = stack.config.env["TUNELINE_API_KEY"]
    return (
        f"curl -s {url}/v1/chat/completions -H 'authorization: Bearer {key}' "
        f"-H 'content-type: application/json' -d '{json.dumps(body)}'"
    )


def gate_power(detail: dict[str, Any]) -> list[str]:
    """What each tested gate could see: its items, margin and MDE (the demo samples its suites
    to fit its time budget and widens the margins to match; it says so here)."""
    decisions = detail.get("decisions") or []
    lines = []
    for gate in decisions[-1]["gates"] if decisions else []:
        test = gate.get("test")
        if test:
            state = "passed" if gate["passed"] else "FAILED"
            lines.append(
                f"{gate['gate']}: {test['n']} items, margin {test['margin']:g}, "
                f"MDE {test['mde']:.1f} points, {state}"
                + (" (underpowered)" if gate.get("underpowered") else "")
            )
    return lines


def summary(
    console: Console,
    detail: dict[str, Any],
    verdict: str,
    timings: dict[str, float],
    card: Path,
    stack: Stack,
    elapsed: float,
) -> None:
    """The closing summary: what the adapter gained, what it kept, how long each stage took."""
    from rich.table import Table

    def pair(kind: str, metric: str, unit: str = "") -> str:
        candidate, base = (
            arm_metric(detail, kind, metric, "candidate"),
            arm_metric(detail, kind, metric, "baseline"),
        )
        if candidate is None or base is None:
            return "not measured"
        return f"{candidate:.1f}{unit} vs base {base:.1f}{unit} ({candidate - base:+.1f})"

    few_shot = arm_metric(detail, "target", "score", "few-shot")
    table = Table(title="summary", show_header=False)
    table.add_row("task gain (target, points)", pair("target", "score"))
    if few_shot is not None:
        table.add_row("  vs the few-shot prompt", f"few-shot base {few_shot:.1f}")
    table.add_row("capability (forgetting)", pair("capability", "score"))
    table.add_row("safety: harmful requests refused", pair("safety", "refusal_rate_harmful", "%"))
    table.add_row("safety: benign requests refused", pair("safety", "refusal_rate_benign", "%"))
    table.add_row("jailbreaks refused", pair("jailbreak", "refusal_rate_harmful", "%"))
    table.add_row("jailbreak-style benign refused", pair("jailbreak", "refusal_rate_benign", "%"))
    table.add_row("latency p95 ms/token", pair("latency", "p95_ms_per_token"))
    table.add_row("release gates", verdict)
    for line in gate_power(detail):
        table.add_row("", line)
    table.add_row("time per stage", ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items()))
    table.add_row("adaptation card", f"{card.with_suffix('.md')} (and .json)")
    table.add_row("dashboard (with --keep)", stack.dashboard_url())
    route, url = "support-extract", f"http://127.0.0.1:{stack.config.serving_port}"
    table.add_row("query the route (with --keep)", curl_command(stack, url, route))
    console.print(table)
    console.print(f"[green]demo finished in {elapsed:.1f}s.[/]")
