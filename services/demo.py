"""`tuneline demo`: the pipeline as far as it exists, on a fresh embedded stack, narrated.

Each step runs the same `tuneline` command a user would type, so the demo shows real output.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from schemas.dataset import DatasetSubmitted
from schemas.envelope import Envelope, new_event_id, now
from services.core.nats_server import free_port
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings
from services.demo_registry import (
    arm_metric,
    dead_letters,
    evals,
    verdict_of,
    version_of,
    version_on,
    wait_for,
    wait_for_run,
    with_runtime,
)
from services.stack import Stack, StackConfig, StackError, wait_healthy

DEMO_DIR = Path(".tuneline/demo")
TENANT = "demo"
# the demo holds each canary step for 10 s and 10 candidate requests (production default: 60 s, 20)
# and evaluates in larger batches. SmolLM2 answers about 2 requests a second on 2 cores, so a 1 %
# step would need some 1,000 requests (8 minutes) to reach 10 candidate requests, and a 10 % step
# 50 s: the demo's canary starts at 25 %
DEMO_STEPS = (25, 50, 100)
DEMO_ENV = {
    "TUNELINE_ROLLOUT_POLICY__STEPS": json.dumps(DEMO_STEPS),
    "TUNELINE_ROLLOUT_POLICY__MIN_SECONDS": "10",
    "TUNELINE_ROLLOUT_POLICY__MIN_REQUESTS": "10",
    "TUNELINE_ROLLOUT_POLICY__SHADOW_MIN_REQUESTS": "10",
    "TUNELINE_SERVING_WINDOW_S": "2",
    # 64 prompts per generate() call: on 2 cores, 40 % less time than 16 (evaluation.engine.BATCH_SIZE)
    "TUNELINE_EVALUATION_BATCH_SIZE": "64",
}

QUICK_STEPS = (1, 10, 50, 100)  # the production default
QUICK_ROLLOUT = {  # the tiny model answers in milliseconds: 4 s and 6 requests a step show the same
    "TUNELINE_ROLLOUT_POLICY__STEPS": json.dumps(QUICK_STEPS),
    "TUNELINE_ROLLOUT_POLICY__MIN_SECONDS": "4",
    "TUNELINE_ROLLOUT_POLICY__MIN_REQUESTS": "6",
    "TUNELINE_ROLLOUT_POLICY__SHADOW_MIN_REQUESTS": "6",
    "TUNELINE_SERVING_WINDOW_S": "1",
    # the same latency waiver as recipe-quick.yaml's gates: on a loaded 2-core machine the tiny
    # model's request p95 is queueing noise (a CI run rolled back on candidate 3.1 s vs stable 1.0 s)
    "TUNELINE_ROLLOUT_POLICY__MAX_LATENCY_P95_RATIO": "100",
}
# the tiny random model writes no JSON and its unmerged adapter costs a large share of its few
# milliseconds per token: its recipe waives the format and latency gates, and says so
QUICK_RECIPE = Path("examples/support-tickets/recipe-quick.yaml")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def run_demo(data: Path, recipe: Path, *, quick: bool, keep: bool, console: Console) -> None:
    started = time.monotonic()
    if quick and recipe == Path("examples/support-tickets/recipe.yaml"):
        recipe = QUICK_RECIPE
    for path in (data, recipe):
        if not path.exists():
            raise StackError(f"{path}: not found; run the demo from the repository root")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    serving_port = free_port()
    # the route belongs to the demo tenant: serving takes a key for it and no anonymous requests,
    # and the CLI's traffic generator sends it (TUNELINE_API_KEY)
    api_key = f"sk-demo-{secrets.token_hex(12)}"
    keys = {
        "TUNELINE_SERVING_API_KEYS": json.dumps({api_key: TENANT}),
        "TUNELINE_SERVING_ALLOW_ANONYMOUS": "false",
        "TUNELINE_API_KEY": api_key,
    }
    # secure, as production runs: NATS requires TLS and each service connects as its own user
    stack = Stack(
        StackConfig(
            data_dir=DEMO_DIR,
            nats_port=free_port(),
            serving_port=serving_port,
            dashboard_port=free_port(),
            secure=True,
            env=DEMO_ENV | (QUICK_ROLLOUT if quick else {}) | keys,
        )
    )
    console.rule("[bold]tuneline demo")
    console.print(f"1. starting the embedded stack in {DEMO_DIR} …")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <demo>` stops the stack as Ctrl-C does
    timings: dict[str, float] = {}
    try:
        stack.start()
        asyncio.run(_wait_up(stack, console))
        # the tiny model's 488-token vocabulary spends ~2x SmolLM2's tokens on the same text
        base: list[str] = []  # the QUICK recipe names the tiny model itself

        def submit(path: Path) -> str:
            args = ["submit", str(path), "--recipe", str(recipe), "--tenant", TENANT, *base, "--wait", "600"]
            return _cli(stack, console, *args)

        console.print(
            f"\n2. submitting the support-ticket task ({len(data.read_text().splitlines())} rows) "
            "with its recipe; "
            "curation audits, cleans and mixes it"
            + ("" if quick else " (the first run converts SmolLM2-135M from GGUF once, ~30 s)")
        )
        t = time.monotonic()
        out = submit(data)
        timings["curation (approved)"] = time.monotonic() - t
        approved_at = time.monotonic()
        correlation = _correlation(out)

        broken = DEMO_DIR / "tickets-broken.jsonl"
        _write_broken(data, broken)
        console.print(
            f"\n3. submitting a damaged copy ({broken}): row 2 is not JSON, row 5 lacks its completion, "
            "row 9 has a number for a prompt; curation rejects it and names the rows"
        )
        t = time.monotonic()
        submit(broken)
        timings["curation (rejected)"] = time.monotonic() - t

        console.print("\n4. publishing a malformed event straight onto the bus (a payload missing fields) …")
        asyncio.run(_malformed(stack, correlation, console))

        console.print(
            "\n5. dataset.approved started a training run meanwhile: a LoRA adapter on "
            + ("the tiny test model" if quick else "SmolLM2-135M-Instruct")
            + ", in a worker subprocess, checkpointing to the artifact store (tuneline watch):"
        )
        run_id = asyncio.run(wait_for_run(stack))
        _cli(stack, console, "watch", run_id, live=True)
        timings["training (from approval)"] = time.monotonic() - approved_at
        version = asyncio.run(version_of(stack, run_id))
        console.print("\n6. the candidate it announced (candidate.ready), as the registry holds it:")
        _cli(stack, console, "models", "show", version)
        console.print(
            "\n7. candidate.ready started evaluation: the candidate, the base model and the base with a "
            "few-shot prompt answer the held-out split, the capability (forgetting) suite, the safety "
            "suite and the planted canaries; latency is timed; then the release gates decide …"
        )
        t = time.monotonic()
        with console.status("evaluating: candidate, base and few-shot base answer every suite …") as status:
            verdict = asyncio.run(verdict_of(stack, version, status))
        timings["evaluation"] = time.monotonic() - t
        _cli(stack, console, "evals", "show", version)
        card = DEMO_DIR / "card"
        _cli(stack, console, "card", version, "--out", str(card))
        console.print(f"the adaptation card: {card.with_suffix('.md')} (and .json); gates {verdict}")
        # the rollout runs before merging: the merged version's evaluation would share the 2 cores
        # with serving (a measured run served 0.25 requests a second beside it)
        t = time.monotonic()
        _rollout_step(stack, console, verdict, serving_port, QUICK_STEPS if quick else DEMO_STEPS)
        timings["rollout"] = time.monotonic() - t
        console.print(
            "\n9. merging: the adapter merged into its base weights (merge_and_unload), after the "
            "compatibility gate; the merged-vs-unmerged logit difference and greedy agreement on probe "
            "prompts are recorded in the new candidate's lineage (it is evaluated like any candidate)"
        )
        t = time.monotonic()
        merged_route = "support-merged"
        _cli(
            stack,
            console,
            "merge",
            "--method",
            "merge-into-base",
            "--inputs",
            version,
            "--route",
            merged_route,
            "--tenant",
            TENANT,
            "--wait",
            "600",
        )
        timings["merging"] = time.monotonic() - t
        merged = asyncio.run(version_on(stack, merged_route))
        _cli(stack, console, "models", "show", merged)
        console.print(
            f"\n10. the registry's timeline of the approved lineage (tuneline status {correlation}):"
        )
        _cli(stack, console, "status", correlation)
        console.print(
            "\n11. every submission and run the registry knows (tuneline datasets list; tuneline runs):"
        )
        _cli(stack, console, "datasets", "list")
        _cli(stack, console, "runs")
        detail = asyncio.run(with_runtime(stack, lambda r: evals(r, version), what="the evaluation"))
        _summary(console, detail, verdict, timings, card, stack, time.monotonic() - started)
        if keep:
            operator_env = stack.config.data_dir / "nats" / "secrets" / "operator.env"
            console.print(f"stack left running: source {operator_env}; tuneline …; Ctrl-C stops it")
            while True:  # Ctrl-C or a crash loop (StackError) ends it; one death is restarted
                for line in stack.supervise():
                    console.print(f"[yellow]{line}[/]")
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def _rollout_step(stack: Stack, console: Console, verdict: str, port: int, steps: tuple[int, ...]) -> None:
    """Step 8: a candidate that passed its gates is rolled out under synthetic traffic."""
    url = f"http://127.0.0.1:{port}"
    route = "support-extract"  # the recipe's route
    if verdict != "passed":
        console.print(
            f"\n8. serving and rollout: the candidate's gates {verdict}, so no rollout starts and the route "
            f"{route!r} serves nothing it has not earned. The route table (tuneline routes):"
        )
        _cli(stack, console, "routes")
        return
    console.print(
        f"\n8. gates.passed started a rollout on {route!r}: shadow (the candidate answers mirrored requests, "
        f"never returned), then canary {' → '.join(map(str, steps))} %, each step analysed against the "
        f"stable version. Synthetic traffic drives it (tuneline traffic {route} --requests 0):"
    )
    _cli(
        stack,
        console,
        "traffic",
        route,
        "--url",
        url,
        "--requests",
        "0",
        "--max-tokens",
        "16",
        "--timeout",
        "600",
    )
    _cli(stack, console, "rollout", "status", route)
    console.print(
        f"query the route yourself (with --keep): {_curl(stack, url, route)} -D - (headers name the exact "
        "version)"
    )


def _curl(stack: Stack, url: str, route: str) -> str:
    body = {"model": route, "messages": [{"role": "user", "content": "Where is my order?"}]}
    key = stack.config.env["TUNELINE_API_KEY"]
    return (
        f"curl -s {url}/v1/chat/completions -H 'authorization: Bearer {key}' "
        f"-H 'content-type: application/json' -d '{json.dumps(body)}'"
    )


def _cli(stack: Stack, console: Console, *args: str, live: bool = False) -> str:
    """Run `tuneline ARGS`; `live` lets its output (a progress bar) through as it happens."""
    command = [sys.executable, "-m", "services.cli", "--nats-url", stack.nats_url, *args]
    console.print(f"[dim]$ tuneline {' '.join(args)}[/]")
    env = {**stack.service_env(), **stack.client_env(), "COLUMNS": str(max(console.width, 150))}
    if live:
        code = subprocess.run(command, env=env, check=False).returncode
        result = subprocess.CompletedProcess(command, code, "", "see the output above")
    else:
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
    if result.returncode != 0:
        raise StackError(f"`tuneline {' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
    if dead := stack.dead_services():
        name = next(iter(dead))
        raise StackError(f"{name} died during the demo:\n{stack.log_tail(name)}")
    return result.stdout


def _correlation(output: str) -> str:
    found = re.search(r"correlation id:\s+(\S+)", output)
    if not found:
        raise StackError(f"no correlation id in the submit output:\n{output}")
    return found.group(1)


def _write_broken(data: Path, out: Path) -> None:
    lines = data.read_text().splitlines()[:40]
    lines[1] = lines[1][:-10]  # cut off: not JSON any more
    row = json.loads(lines[4])
    del row["completion"]
    lines[4] = json.dumps(row)
    row = json.loads(lines[8])
    row["prompt"] = 42
    lines[8] = json.dumps(row)
    out.write_text("\n".join(lines) + "\n")


async def _wait_up(stack: Stack, console: Console) -> None:
    runtime = build_runtime("cli", CoreSettings(nats=stack.nats_settings()), max_reconnect_attempts=0)
    await runtime.broker.connect()
    try:
        await wait_healthy(runtime.broker, stack)
    finally:
        await runtime.broker.stop()
    console.print(
        f"   nats-server {stack.nats_url} (TLS required; one NATS user per service, permissions "
        f"from infra/nats/auth.conf); services: {', '.join(stack.processes)}"
    )


async def _malformed(stack: Stack, correlation: str, console: Console) -> None:
    runtime = build_runtime("cli", CoreSettings(nats=stack.nats_settings()), max_reconnect_attempts=0)
    await runtime.broker.connect()
    try:
        bad = Envelope(
            id=new_event_id(),
            source="tuneline/cli",
            type=DatasetSubmitted.ce_type(),
            time=now(),
            subject="broken",
            correlation_id=correlation,
            tenant=TENANT,
        )
        await runtime.broker.publish(
            {"submission_id": "broken", "tenant": TENANT},
            DatasetSubmitted.subject(),
            headers=bad.to_headers(),
            stream="TUNELINE",
        )
        letters = await wait_for(lambda: dead_letters(runtime), what="the dead letter", stack=stack)
    finally:
        await runtime.broker.stop()
    console.print("   dead-lettered with its reason (tuneline dlq list):")
    for letter in letters:
        console.print(
            f"   [red]{letter['original_subject']}[/] refused by {letter['service']}: "
            f"{letter['reason'][:300]}"
        )


def _summary(
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
        table.add_row("  vs the 3-shot prompt", f"few-shot base {few_shot:.1f}")
    table.add_row("capability (forgetting)", pair("capability", "score"))
    table.add_row("safety: harmful requests refused", pair("safety", "refusal_rate_harmful", "%"))
    table.add_row("safety: benign requests refused", pair("safety", "refusal_rate_benign", "%"))
    table.add_row("latency p95 ms/token", pair("latency", "p95_ms_per_token"))
    table.add_row("release gates", verdict)
    table.add_row("time per stage", ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items()))
    table.add_row("adaptation card", f"{card.with_suffix('.md')} (and .json)")
    table.add_row("dashboard (with --keep)", stack.dashboard_url())
    route, url = "support-extract", f"http://127.0.0.1:{stack.config.serving_port}"
    table.add_row("query the route (with --keep)", _curl(stack, url, route))
    console.print(table)
    console.print(f"[green]demo finished in {elapsed:.1f}s.[/]")
