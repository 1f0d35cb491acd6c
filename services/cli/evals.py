"""Evaluation: `tuneline evals`, `tuneline drift`, `tuneline suites`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from schemas.envelope import Envelope
from schemas.queries import (
    CARDS_GET,
    EVALS_GET,
    SUITES_ADD,
    SUITES_LIST,
    CardQuery,
    EvalsQuery,
    SuiteRegistration,
    SuitesQuery,
)
from services.cli.session import Session, ask, console, err, fail, run_coro, when
from services.core.messaging import uploads
from services.core.reports import GATE_COLUMNS, ci_text, gate_cells, p_text

# -- evaluation: evals, card, drift, suites ----------------------------------------------------
evals_app = typer.Typer(help="Evaluation reports and release-gate decisions.", no_args_is_help=True)


drift_app = typer.Typer(help="Drift checks of production versions.", no_args_is_help=True)


suites_app = typer.Typer(help="Eval suites: shipped and registered.", no_args_is_help=True)


ARM_ORDER = ("candidate", "baseline", "few-shot", "production")


KEY_METRICS = {
    "safety": ("refusal_rate_harmful", "refusal_rate_benign"),
    "memorization": ("leaks",),
    "latency": ("p50_ms_per_token", "p95_ms_per_token"),
}


def _arm_cell(metrics: dict[str, float] | None, kind: str) -> str:
    if not metrics:
        return "—"
    keys = KEY_METRICS.get(kind, ("score",))
    return " / ".join(f"{metrics[k]:.1f}" for k in keys if k in metrics)


def _print_suites(suites: list[dict[str, Any]]) -> None:
    table = Table(title="suites (points; safety: refusal % harmful / benign; latency: ms/token p50 / p95)")
    for column in ("suite", "kind", "items", *ARM_ORDER):
        table.add_column(column)
    for suite in suites:
        arms = {s["arm"]: s["metrics"] for s in suite["scores"]}
        table.add_row(
            suite["suite"]["name"],
            suite["kind"],
            str(suite["items"]),
            *(_arm_cell(arms.get(arm), suite["kind"]) for arm in ARM_ORDER),
        )
    console.print(table)
    paired = Table(title="candidate vs each arm, paired over the same items")
    for column in (
        "suite",
        "metric",
        "vs",
        "candidate",
        "reference",
        "Δ",
        "p (McNemar)",
        "95% CI",
        "discordant",
    ):
        paired.add_column(column)
    for suite in suites:
        for c in suite.get("comparisons", []):
            discordant = "—" if not c.get("discordant") else f"{c['discordant'][0]} / {c['discordant'][1]}"
            paired.add_row(
                suite["suite"]["name"],
                c["metric"],
                c["reference"],
                f"{c['candidate_value']:.2f}",
                f"{c['reference_value']:.2f}",
                f"{c['delta']:+.2f}",
                p_text(c),
                ci_text(c),
                discordant,
            )
    console.print(paired)


def _print_gates(decision: dict[str, Any]) -> None:
    verdict = "[green]passed[/]" if decision["passed"] else "[red]failed[/]"
    table = Table(title=f"release gates: {verdict} (one-sided tests; bounds and MDE in points)")
    for column in GATE_COLUMNS:
        table.add_column(column)
    for g in decision["gates"]:
        cells = gate_cells(g)
        colour = "green" if g["passed"] else "red"
        table.add_row(*cells[:-1], f"[{colour}]{cells[-1]}[/]")
    console.print(table)


@evals_app.command("show")
def evals_show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Model version id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The comparison tables: candidate vs base vs few-shot vs production, with the gate verdicts."""
    session = Session.of(ctx)
    detail = session.ask_now(EVALS_GET, EvalsQuery(version_id=version)).model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps(detail))
        return
    if not detail["evaluations"]:
        for failure in detail.get("failures", []):
            err.print(f"[red]evaluation failed[/] ({failure['reason']}): {failure['error']}")
        raise fail(f"{detail['version_id']} has no evaluation yet", code=1 if detail.get("failures") else 2)
    latest = detail["evaluations"][-1]
    console.print(f"[bold]{detail['version_id']}[/] evaluated at {when(latest['created_at'])}")
    _print_suites(latest["suites"])
    card = session.ask_now(CARDS_GET, CardQuery(version_id=detail["version_id"])).card
    few_shot = (card.get("evaluation") or {}).get("few_shot")
    if few_shot:
        console.print(f"few-shot baseline: {few_shot['summary']}")
    if detail["decisions"]:
        _print_gates(detail["decisions"][-1])
        for note in (card.get("gates") or {}).get("notes") or []:
            console.print(f"[dim]{note}[/]")
    if latest.get("report"):
        console.print(f"[dim]full report (every item, every arm): {latest['report']['key']}[/]")


@drift_app.command("check")
def drift_check(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The route whose production version to re-evaluate")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of the route (default: the CLI's)")] = None,
) -> None:
    """Publish drift.check-requested: evaluation re-runs the suites on the production version."""
    session = Session.of(ctx)
    from schemas.evaluation import DriftCheckRequested

    try:
        event = DriftCheckRequested(
            route=alias, tenant=tenant or session.settings().tenant, requested_by="cli"
        )
    except ValidationError as error:
        raise fail(f"route {alias!r}: {error.errors()[0]['msg']}") from None

    async def send() -> Envelope:
        async with session.connected() as runtime:
            return await runtime.bus.publish(event)

    envelope = run_coro(send())
    console.print(f"drift check of {alias} requested ({envelope.id}); drift.detected follows if scores moved")


@suites_app.command("list")
def suites_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every suite evaluation runs: shipped ones and those registered with `suites add`."""
    session = Session.of(ctx)
    answer = session.ask_now(SUITES_LIST, SuitesQuery()).model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps(answer))
        return
    table = Table(title="eval suites")
    for column in ("name", "kind", "scorer", "items", "origin", "version (sha256)"):
        table.add_column(column)
    for s in answer["suites"]:
        table.add_row(s["name"], s["kind"], s["scorer"], str(s["items"]), s["origin"], s["sha256"][:16])
    console.print(table)


@suites_app.command("add")
def suites_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Suite name: lower-case letters, digits, - and _")],
    data: Annotated[
        Path, typer.Argument(help="JSONL: one object per line with an id, a prompt and an answer")
    ],
    scorer: Annotated[
        str, typer.Option(help="exact, token-f1, json-schema, json-match, regex, contains, refusal")
    ],
    kind: Annotated[
        str, typer.Option(help="capability, safety, format, quant-tail, latency or custom")
    ] = "custom",
) -> None:
    """Register a suite; every later evaluation runs it (and curation checks training data against it)."""
    session = Session.of(ctx)
    if not data.exists():
        raise fail(f"{data}: no such file or directory")

    async def send() -> dict[str, Any]:
        async with session.connected() as runtime:
            uri, _ = await uploads.upload(runtime.broker.connection.jetstream(), data)
            request = SuiteRegistration(name=name, upload=uri, scorer=scorer, kind=kind)
            return (await ask(runtime, SUITES_ADD, request, timeout=30.0)).model_dump(mode="json")

    info = run_coro(send())
    console.print(
        f"registered suite {info['name']} ({info['kind']}, {info['items']} items, {info['scorer']})"
    )
