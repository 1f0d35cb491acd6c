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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from schemas.dataset import DatasetSubmitted
from schemas.envelope import Envelope, new_event_id, now
from services.core.messaging.nats_server import free_port
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings
from services.demo_registry import (
    curl_command,
    dead_letters,
    evals,
    rollout_begun,
    summary,
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


def _stack(quick: bool) -> Stack:
    """The embedded stack, secure as production runs: NATS requires TLS, each service is its own
    user, and the route belongs to the demo tenant (serving takes its key, no anonymous requests;
    the CLI's traffic generator sends it as TUNELINE_API_KEY)."""
    api_key = f"sk-demo-{secrets.token_hex(12)}"
    keys = {
        "TUNELINE_SERVING_API_KEYS": json.dumps({api_key: TENANT}),
        "TUNELINE_SERVING_ALLOW_ANONYMOUS": "false",
        "TUNELINE_API_KEY": api_key,
    }
    return Stack(
        StackConfig(
            data_dir=DEMO_DIR,
            nats_port=free_port(),
            serving_port=free_port(),
            dashboard_port=free_port(),
            secure=True,
            env=DEMO_ENV | (QUICK_ROLLOUT if quick else {}) | keys,
        )
    )


@dataclass
class _Demo:
    """One walk through the pipeline on a running stack; each step prints what it shows."""

    stack: Stack
    console: Console
    recipe: Path
    quick: bool
    timings: dict[str, float] = field(default_factory=dict)

    def cli(self, *args: str, live: bool = False) -> str:
        return _cli(self.stack, self.console, *args, live=live)

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started

    def submit(self, path: Path) -> str:
        return self.cli(
            "submit", str(path), "--recipe", str(self.recipe), "--tenant", TENANT, "--wait", "600"
        )

    def curation(self, data: Path) -> tuple[str, float]:
        """Steps 2 to 4: the task approved, a damaged copy rejected by row, a malformed event."""
        self.console.print(
            f"\n2. submitting the support-ticket task ({len(data.read_text().splitlines())} rows) "
            "with its recipe; curation audits, cleans and mixes it"
            + ("" if self.quick else " (the first run converts SmolLM2-135M from GGUF once, ~30 s)")
        )
        t = time.monotonic()
        correlation = _correlation(self.submit(data))
        self.timed("curation (approved)", t)
        approved_at = time.monotonic()
        broken = DEMO_DIR / "tickets-broken.jsonl"
        _write_broken(data, broken)
        self.console.print(
            f"\n3. submitting a damaged copy ({broken}): row 2 is not JSON, row 5 lacks its completion, "
            "row 9 has a number for a prompt; curation rejects it and names the rows"
        )
        t = time.monotonic()
        self.submit(broken)
        self.timed("curation (rejected)", t)
        self.console.print(
            "\n4. publishing a malformed event straight onto the bus (a payload missing fields) …"
        )
        asyncio.run(_malformed(self.stack, correlation, self.console))
        return correlation, approved_at

    def training(self, approved_at: float) -> str:
        """Steps 5 and 6: the run dataset.approved started, followed live, and the candidate it announced."""
        self.console.print(
            "\n5. dataset.approved started a training run meanwhile: a LoRA adapter on "
            + ("the tiny test model" if self.quick else "SmolLM2-135M-Instruct")
            + ", in a worker subprocess, checkpointing to the artifact store (tuneline watch):"
        )
        run_id = asyncio.run(wait_for_run(self.stack))
        self.cli("watch", run_id, live=True)
        self.timed("training (from approval)", approved_at)
        version = asyncio.run(version_of(self.stack, run_id))
        self.console.print("\n6. the candidate it announced (candidate.ready), as the registry holds it:")
        self.cli("models", "show", version)
        return version

    def evaluation(self, version: str) -> tuple[str, Path]:
        """Step 7: every suite on the candidate, the base and the few-shot base; the gates; the card."""
        self.console.print(
            "\n7. candidate.ready started evaluation: the candidate, the base model and the base with a "
            "few-shot prompt answer the test split (training never read it), the capability (forgetting) "
            "suite, the safety and jailbreak suites and the planted canaries; latency is timed; then the "
            "release gates decide, each a one-sided test that states its items, margin and MDE …"
        )
        t = time.monotonic()
        with self.console.status(
            "evaluating: candidate, base and few-shot base answer every suite …"
        ) as status:
            verdict = asyncio.run(verdict_of(self.stack, version, status))
        self.timed("evaluation", t)
        self.cli("evals", "show", version)
        card = DEMO_DIR / "card"
        self.cli("card", version, "--out", str(card))
        self.console.print(f"the adaptation card: {card.with_suffix('.md')} (and .json); gates {verdict}")
        return verdict, card

    def merging(self, version: str) -> None:
        """Step 9: the adapter merged into its base, with the merged-vs-unmerged difference recorded."""
        self.console.print(
            "\n9. merging: the adapter merged into its base weights (merge_and_unload), after the "
            "compatibility gate; the merged-vs-unmerged logit difference and greedy agreement on probe "
            "prompts are recorded in the new candidate's lineage (it is evaluated like any candidate)"
        )
        t, route = time.monotonic(), "support-merged"
        self.cli("merge", "--method", "merge-into-base", "--inputs", version, "--route", route,
                 "--tenant", TENANT, "--wait", "600")  # fmt: skip
        self.timed("merging", t)
        self.cli("models", "show", asyncio.run(version_on(self.stack, route)))

    def lineage(self, correlation: str) -> None:
        """Steps 10 and 11: the approved lineage's timeline, and every submission and run."""
        self.console.print(
            f"\n10. the registry's timeline of the approved lineage (tuneline status {correlation}):"
        )
        self.cli("status", correlation)
        self.console.print(
            "\n11. every submission and run the registry knows (tuneline datasets list; tuneline runs):"
        )
        self.cli("datasets", "list")
        self.cli("runs")

    def keep_running(self) -> None:
        operator_env = self.stack.config.data_dir / "nats" / "secrets" / "operator.env"
        self.console.print(f"stack left running: source {operator_env}; tuneline …; Ctrl-C stops it")
        while True:  # Ctrl-C or a crash loop (StackError) ends it; one death is restarted
            for line in self.stack.supervise():
                self.console.print(f"[yellow]{line}[/]")
            time.sleep(0.5)


def run_demo(data: Path, recipe: Path, *, quick: bool, keep: bool, console: Console) -> None:
    started = time.monotonic()
    if quick and recipe == Path("examples/support-tickets/recipe.yaml"):
        recipe = QUICK_RECIPE  # it names the tiny model itself
    for path in (data, recipe):
        if not path.exists():
            raise StackError(f"{path}: not found; run the demo from the repository root")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    stack = _stack(quick)
    demo = _Demo(stack, console, recipe, quick)
    console.rule("[bold]tuneline demo")
    console.print(f"1. starting the embedded stack in {DEMO_DIR} …")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill <demo>` stops the stack as Ctrl-C does
    try:
        stack.start()
        asyncio.run(_wait_up(stack, console))
        correlation, approved_at = demo.curation(data)
        version = demo.training(approved_at)
        verdict, card = demo.evaluation(version)
        # the rollout runs before merging: the merged version's evaluation would share the 2 cores
        # with serving (a measured run served 0.25 requests a second beside it)
        t = time.monotonic()
        steps = QUICK_STEPS if quick else DEMO_STEPS
        _rollout_step(stack, console, verdict, version, stack.config.serving_port, steps)
        demo.timed("rollout", t)
        demo.merging(version)
        demo.lineage(correlation)
        detail = asyncio.run(with_runtime(stack, lambda r: evals(r, version), what="the evaluation"))
        summary(console, detail, verdict, demo.timings, card, stack, time.monotonic() - started)
        if keep:
            demo.keep_running()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def _rollout_step(
    stack: Stack, console: Console, verdict: str, version: str, port: int, steps: tuple[int, ...]
) -> None:
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
    asyncio.run(rollout_begun(stack, route, version))  # rollout checks the verdict with the registry first
    _cli(stack, console, "traffic", route, "--url", url, "--requests", "0", "--max-tokens", "16",
         "--timeout", "600")  # fmt: skip
    _cli(stack, console, "rollout", "status", route)
    console.print(
        "Promoted, the version is not left alone: the guardian holds the route to its objectives "
        "(errors, p95 latency, schema validity, refusals) window after window, and rolls it back or "
        "pages on a breach (docs/serving.md):"
    )
    _cli(stack, console, "traffic", route, "--url", url, "--requests", "24", "--max-tokens", "16")
    time.sleep(5)  # serving reports every 1-2 s in the demo: its last windows reach the guardian
    _cli(stack, console, "routes", "health", route)
    curl = curl_command(stack, url, route)
    console.print(f"query the route yourself (with --keep): {curl} -D - (headers name the exact version)")


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
