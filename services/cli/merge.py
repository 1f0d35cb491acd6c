"""`tuneline merge`: publish merge.requested and follow the merged candidate."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from schemas.gate_policy import GatePolicy
from schemas.merge import MergeRequested
from schemas.queries import TIMELINE, TimelineQuery
from services.cli.lineage import print_timeline
from services.cli.session import Session, ask, console, fail, run_coro, validated


# -- merging ----------------------------------------------------------------------------------
def _gates(path: Path) -> GatePolicy:
    """A gate policy from a recipe (its `gates:` section) or a YAML file of GatePolicy fields."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"--gates {path}: {error}") from None
    if isinstance(raw, dict) and isinstance(raw.get("gates"), dict):
        raw = raw["gates"]
    policy: GatePolicy = validated(GatePolicy, raw, f"--gates {path} is not a gate policy", "merge.requested")
    return policy


def merge(
    ctx: typer.Context,
    method: Annotated[
        str,
        typer.Option(
            help="merge-into-base, linear, cat, svd, ties, dare_ties, dare_linear, "
            "magnitude_prune, uniform-soup, greedy-soup, quantize-int8-dynamic, quantize-bnb-8bit, "
            "quantize-bnb-4bit"
        ),
    ],
    inputs: Annotated[str, typer.Option(help="Comma-separated model version ids (or unique prefixes)")],
    weights: Annotated[str, typer.Option(help="Comma-separated weights, one per input")] = "",
    density: Annotated[
        float | None, typer.Option(help="Share of parameters kept (ties, dare_*, magnitude_prune)")
    ] = None,
    route: Annotated[
        str | None, typer.Option(help="Route of the result (default: the first input's)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant of the inputs (default: the CLI's)")] = None,
    rank_by: Annotated[
        str | None,
        typer.Option(help="greedy-soup: the suite whose scores rank and admit members (default: target)"),
    ] = None,
    gates: Annotated[
        Path | None,
        typer.Option(
            help="YAML of the release gates the result is judged by (a recipe's `gates:` section or "
            "a file of its fields; default: the first input's last policy)"
        ),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Wait up to S seconds for candidate.ready or merge.failed")
    ] = 0.0,
) -> None:
    """Publish merge.requested; merging checks compatibility first and announces a new candidate."""
    session = Session.of(ctx)
    try:
        event = MergeRequested(
            request_id=f"merge-{uuid.uuid4().hex[:12]}",
            tenant=tenant or session.settings().tenant,
            inputs=tuple(i.strip() for i in inputs.split(",") if i.strip()),
            method=method,
            weights=tuple(float(w) for w in weights.split(",") if w.strip()),
            density=density,
            route=route,
            rank_by=rank_by,
            gate_policy=_gates(gates) if gates else None,
        )
    except (ValidationError, ValueError) as error:
        raise fail(f"merge request: {error}") from None

    async def send() -> dict[str, Any] | None:
        async with session.connected() as runtime:
            envelope = await runtime.bus.publish(event)
            console.print(f"merge {event.request_id} requested ({event.method} of {', '.join(event.inputs)})")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                request = TimelineQuery(correlation_id=envelope.correlation_id)
                timeline = (await ask(runtime, TIMELINE, request)).model_dump(mode="json")
                for entry in timeline["entries"]:
                    if entry["type"].endswith((".candidate.ready.v1", ".merge.failed.v1")):
                        return dict(timeline)
                await asyncio.sleep(0.5)
            return None

    timeline = run_coro(send())
    if timeline is None:
        if wait:
            raise fail(
                f"no answer within {wait:g}s; `tuneline status` on the request's lineage shows progress"
            )
        return
    print_timeline(timeline)
    if any(e["type"].endswith(".merge.failed.v1") for e in timeline["entries"]):
        raise typer.Exit(1)
