"""Rollouts: `tuneline rollout`, `tuneline rollback`, `tuneline traffic` (routes: services/cli/health.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from schemas.envelope import Envelope
from schemas.rollout import (
    RolloutAbortRequested,
    RolloutPauseRequested,
    RolloutPromoteRequested,
    RolloutResumeRequested,
    RolloutRollbackRequested,
)
from services.cli.session import Session, console, fail, number, run_coro
from services.core.runtime import ServiceRuntime

# -- rollout ---------------------------------------------------------------------------------
rollout_app = typer.Typer(help="Shadow and canary rollouts on routes.", no_args_is_help=True)


AliasArg = Annotated[str, typer.Argument(help="The route alias")]


TenantOpt = Annotated[str | None, typer.Option(help="Tenant of the route (default: the CLI's)")]


ReasonOpt = Annotated[str, typer.Option(help="Recorded with the request")]


async def _route_entry(runtime: ServiceRuntime, alias: str) -> tuple[Any, int]:
    from services.core.messaging.routes import NoRouteTable, RouteTable

    try:
        table = await RouteTable.open(runtime.broker.connection.jetstream(), create=False)
        entry, revision = await table.get(alias)
    except NoRouteTable:
        entry, revision = None, 0
    if entry is None:
        raise fail(f"route {alias!r} does not exist; `tuneline routes` lists the routes")
    return entry, revision


def version_label(ref: Any) -> str:
    return (
        "—"
        if ref is None
        else f"{ref.version_id()} ({'adapter' if ref.adapter else 'weights' if ref.weights else 'base'})"
    )


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context, alias: AliasArg, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """What the route serves now and where its rollout stands, from the route table every replica reads."""
    session = Session.of(ctx)

    async def read() -> tuple[Any, int]:
        async with session.connected() as runtime:
            return await _route_entry(runtime, alias)

    entry, revision = run_coro(read())
    if as_json:
        console.print_json(entry.model_dump_json())
        return
    console.print(f"[bold]{entry.route}[/] · tenant {entry.tenant} · revision {revision}")
    console.print(f"  stable:          {version_label(entry.stable)}")
    shadow = f" · shadow {entry.shadow_percent:g}%" if entry.shadow else ""
    console.print(
        f"  candidate:       {version_label(entry.candidate)} · weight {entry.candidate_weight:g}%{shadow}"
    )
    console.print(f"  rollback target: {version_label(entry.rollback_target)}")
    state = entry.rollout
    if state is None:
        console.print("  no rollout in progress")
        return
    step = "shadow" if state.phase == "shadow" else f"canary {state.traffic_percent:g}%"
    held = time.time() - state.step_started_at
    paused = " [yellow](paused)[/]" if state.paused else ""
    console.print(f"  rollout {state.rollout_id}: {step}{paused} · held {held:.0f}s")
    console.print(
        f"  candidate {state.candidate.count} requests ({state.candidate.errors} errors) · "
        f"stable {state.stable.count} requests"
    )
    table = Table("metric", "stable", "candidate", "events (cand/stable)", "likelihood ratio", "verdict")
    for a in state.last_analysis:
        events = f"{a.candidate_events}/{a.candidate_n} · {a.stable_events}/{a.stable_n}" if a.alpha else "—"
        limit = f"{a.threshold:g}"
        ratio = f"{number(a.statistic)} of {limit}" if a.statistic is not None else f"limit {limit}"
        table.add_row(a.metric, number(a.stable), number(a.candidate), events, ratio, a.judgement)
    if state.last_analysis:
        console.print(table)
        judged = next((a for a in state.last_analysis if a.alpha), None)
        if judged is not None:
            console.print(f"  {judged.method}; alpha {judged.alpha:g} per metric")


def _operator_request(session: Session, event_cls: Any, alias: str, tenant: str | None, reason: str) -> None:
    try:
        event = event_cls(
            route=alias, tenant=tenant or session.settings().tenant, requested_by="cli", reason=reason
        )
    except ValidationError as error:
        raise fail(f"route {alias!r}: {error.errors()[0]['msg']}") from None

    async def send() -> Envelope:
        async with session.connected() as runtime:
            await _route_entry(runtime, alias)
            return await runtime.bus.publish(event)

    envelope = run_coro(send())
    console.print(f"{event.event_type} sent for {alias} ({envelope.id}); `tuneline rollout status {alias}`")


# the operator's verbs on a rollout in progress: one event each, sent the same way
VERBS = (
    ("pause", RolloutPauseRequested, "Hold the rollout at its current step (breaches still roll it back)."),
    ("resume", RolloutResumeRequested, "Continue a paused rollout; the current step's hold starts again."),
    (
        "abort",
        RolloutAbortRequested,
        "Stop the rollout now: the candidate's weight drops to 0 (rollout.rolled-back).",
    ),
    (
        "promote",
        RolloutPromoteRequested,
        "Skip the remaining steps: the candidate becomes the stable version now.",
    ),
)


def _verb(event_cls: Any, doc: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context, alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = ""
    ) -> None:
        _operator_request(Session.of(ctx), event_cls, alias, tenant, reason)

    command.__doc__ = doc
    return command


for _name, _event, _doc in VERBS:
    rollout_app.command(_name)(_verb(_event, _doc))


def rollback(ctx: typer.Context, alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Return the route to its recorded rollback target (or abort a rollout in progress)."""
    _operator_request(Session.of(ctx), RolloutRollbackRequested, alias, tenant, reason)


TRAFFIC_PROMPTS = (
    "My order #4411 arrived damaged, what can I do?",
    "How do I reset my password?",
    "The app crashes when I upload a photo.",
    "Can I change the delivery address of order 9921?",
    "I was charged twice for my subscription this month.",
    "Where can I download last year's invoices?",
)


def traffic(
    ctx: typer.Context,
    alias: AliasArg,
    url: Annotated[str, typer.Option(help="Serving's base URL")] = "http://127.0.0.1:8000",
    requests: Annotated[int, typer.Option(help="Requests to send (0: until the rollout ends)")] = 100,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 8,
    api_key: Annotated[str | None, typer.Option(envvar="TUNELINE_API_KEY", help="Bearer key")] = None,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of each request")] = 32,
    timeout: Annotated[float, typer.Option(help="With --requests 0: give up after S seconds")] = 600.0,
) -> None:
    """Synthetic traffic on a route: shows which versions answered, and drives a rollout's steps."""
    session = Session.of(ctx)
    import httpx
    from rich.progress import Progress

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    counts: dict[tuple[str, str, int], int] = {}

    async def one(client: httpx.AsyncClient, n: int) -> None:
        body = {
            "model": alias,
            "messages": [{"role": "user", "content": TRAFFIC_PROMPTS[n % len(TRAFFIC_PROMPTS)]}],
            "max_tokens": max_tokens,
        }
        try:
            reply = await client.post("/v1/chat/completions", json=body)
            key = (reply.headers.get("x-tuneline-role", "-"), reply.headers.get("x-tuneline-version", "-"),
                   reply.status_code)  # fmt: skip
        except httpx.HTTPError as error:
            key = ("-", type(error).__name__, 0)
        counts[key] = counts.get(key, 0) + 1

    async def rollout_live(runtime: ServiceRuntime) -> bool:
        entry, _ = await _route_entry(runtime, alias)
        return entry.rollout is not None

    async def send() -> None:
        deadline = time.monotonic() + timeout
        async with (
            session.connected() as runtime,
            httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client,
        ):
            sent = 0
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"traffic on {alias}", total=requests or None)
                while (requests and sent < requests) or (
                    not requests and time.monotonic() < deadline and await rollout_live(runtime)
                ):
                    batch = concurrency if not requests else min(concurrency, requests - sent)
                    await asyncio.gather(*(one(client, sent + i) for i in range(batch)))
                    sent += batch
                    progress.update(task, completed=sent)

    try:
        run_coro(send())
    except OSError as error:
        raise fail(f"cannot reach serving at {url}: {error}") from None
    table = Table("role", "version", "HTTP status", "requests")
    for (role, version, status_code), n in sorted(counts.items()):
        table.add_row(role, version, str(status_code), str(n))
    console.print(table)
