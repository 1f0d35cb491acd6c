"""A lineage and its model versions: `tuneline status`, `tuneline models`, `tuneline card`."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markdown import Markdown
from rich.table import Table

from schemas.queries import (
    CARDS_GET,
    MODELS_GET,
    MODELS_LIST,
    TIMELINE,
    CardQuery,
    ModelVersionQuery,
    ModelVersionsQuery,
    TimelineQuery,
)
from services.cli.session import Session, ask, console, err, fail, run_coro, when


def status(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(help="The lineage's correlation id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw timeline")] = False,
    wait: Annotated[
        float, typer.Option(help="Wait up to S seconds for at least one event to be recorded")
    ] = 0.0,
) -> None:
    """Print the ordered timeline of one lineage, from submission to rollout."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            deadline = time.monotonic() + wait
            while True:
                timeline = (
                    await ask(runtime, TIMELINE, TimelineQuery(correlation_id=correlation_id))
                ).model_dump(mode="json")
                if timeline["entries"] or time.monotonic() >= deadline:
                    return timeline
                await asyncio.sleep(0.2)

    timeline = run_coro(fetch())
    if as_json:
        console.print_json(json.dumps(timeline))
        return
    if not timeline["entries"]:
        raise fail(f"no events recorded for correlation id {correlation_id}")
    print_timeline(timeline)


def print_timeline(timeline: dict[str, Any]) -> None:
    table = Table(title=f"lineage {timeline['correlation_id']}")
    for column in ("#", "time", "event", "from", "subject", "details"):
        table.add_column(column)
    for entry in timeline["entries"]:
        table.add_row(
            str(entry["position"]),
            when(entry["time"]),
            entry["type"].removeprefix("tuneline.").rsplit(".v", 1)[0],
            entry["source"].removeprefix("tuneline/"),
            entry["subject"],
            entry["summary"],
        )
    console.print(table)


models_app = typer.Typer(help="Model versions known to the registry.", no_args_is_help=True)


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's versions")] = None,
    route: Annotated[str | None, typer.Option(help="Only versions for this route")] = None,
    limit: Annotated[int, typer.Option(help="At most N versions, newest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List model versions (newest first) with the key parts of their tuples."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            request = ModelVersionsQuery(tenant=tenant, route=route, limit=limit)
            return (await ask(runtime, MODELS_LIST, request)).model_dump(mode="json")

    result = run_coro(fetch())
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(title="model versions")
    for column in (
        "version",
        "status",
        "route",
        "base",
        "base sha256",
        "adapter sha256",
        "method",
        "quant",
        "dataset",
    ):
        table.add_column(column)
    for v in result["versions"]:
        table.add_row(
            v["version_id"],
            v["status"],
            v["route"] or "",
            v["base_name"],
            v["base_sha256"][:12],
            (v["adapter_sha256"] or "")[:12],
            v["method"] or "",
            v["quantization"],
            (v["dataset_id"] or "")[:12],
        )
    if not result["versions"]:
        console.print("no model versions yet")
    else:
        console.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    version_id: Annotated[str, typer.Argument(help="e.g. mv-0123456789abcdef")],
) -> None:
    """Show one model version: its full tuple, lineage and history."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            return (await ask(runtime, MODELS_GET, ModelVersionQuery(version_id=version_id))).model_dump(
                mode="json"
            )

    detail = run_coro(fetch())
    console.print_json(json.dumps({k: detail[k] for k in ("summary", "model_ref", "lineage")}))
    print_timeline({"correlation_id": detail["summary"]["version_id"], "entries": detail["history"]})


def card(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json", help="The card as data")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write <out>.md and <out>.json")] = None,
) -> None:
    """The adaptation card of a model version, assembled by the registry from its lineage."""
    session = Session.of(ctx)
    answer = session.ask_now(CARDS_GET, CardQuery(version_id=version)).model_dump(mode="json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(answer["markdown"], encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(answer["card"], indent=2, sort_keys=True) + "\n")
        err.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    if as_json:
        console.print_json(json.dumps(answer["card"]))
    else:
        console.print(Markdown(answer["markdown"]))
