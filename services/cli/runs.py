"""Training runs: `tuneline runs`, `tuneline watch`, `tuneline cancel`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from schemas.queries import RUNS_GET, RUNS_LIST, RunQuery, RunsQuery
from schemas.subjects import EVENTS_PREFIX
from services.cli.lineage import print_timeline
from services.cli.session import Session, ask, console, fail, number, run_coro, when
from services.core.messaging.rpc import RpcError
from services.core.runtime import ServiceRuntime

runs_app = typer.Typer(help="Training runs (no subcommand: list them).", invoke_without_command=True)


# -- training runs ---------------------------------------------------------------------------
RUN_TERMINAL = {"completed": "green", "failed": "red", "cancelled": "yellow"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


async def _run_detail(runtime: ServiceRuntime, ident: str) -> dict[str, Any]:
    try:
        detail = await ask(runtime, RUNS_GET, RunQuery(run_id=ident))
    except RpcError as error:
        if error.code == "not-found":
            raise fail(f"{error}; `tuneline runs` lists the runs") from None
        raise
    return detail.model_dump(mode="json")


@runs_app.callback()
def runs_root(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's")] = None,
    status: Annotated[
        str | None, typer.Option(help="started | running | completed | failed | cancelled")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most N, newest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List training runs, newest first: status, progress, loss, throughput."""
    session = Session.of(ctx)
    if ctx.invoked_subcommand is not None:
        return

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            request = RunsQuery(tenant=tenant, status=status, limit=limit)
            return (await ask(runtime, RUNS_LIST, request)).model_dump(mode="json")

    runs = run_coro(fetch())["runs"]
    if as_json:
        console.print_json(json.dumps(runs))
        return
    table = Table(
        "run", "status", "method", "base", "step", "loss", "eval loss", "tok/s", "version", "updated"
    )
    for r in runs:
        colour = RUN_TERMINAL.get(r["status"], "cyan")
        steps = f"{r['step'] or 0}/{r['total_steps'] or '?'}"
        table.add_row(
            r["run_id"],
            f"[{colour}]{r['status']}[/]",
            r["method"] or "",
            r["base_name"] or "",
            steps,
            number(r["loss"]),
            number(r["eval_loss"]),
            number(r["tokens_per_second"], ".0f"),
            r["version_id"] or "",
            when(r["updated_at"]),
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run: its state, hashes and events (progress excluded)."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            return await _run_detail(runtime, run)

    detail = run_coro(fetch())
    if as_json:
        console.print_json(json.dumps(detail))
        return
    s = detail["summary"]
    head = Table(show_header=False, title=f"run {s['run_id']}")
    head.add_row("status", f"[{RUN_TERMINAL.get(s['status'], 'cyan')}]{s['status']}[/]")
    head.add_row("method / base", f"{s['method'] or '—'} / {s['base_name'] or '—'}")
    head.add_row("base sha256", detail["base_sha256"] or "—")
    head.add_row("recipe sha256", detail["recipe_sha256"] or "—")
    head.add_row("dataset id", s["dataset_id"] or "—")
    head.add_row("step", f"{s['step'] or 0}/{s['total_steps'] or '?'} (attempts: {s['attempts']})")
    head.add_row("loss / eval loss", f"{number(s['loss'])} / {number(s['eval_loss'])}")
    head.add_row("candidate", s["version_id"] or "—")
    if s["error"]:
        head.add_row("error", f"[red]{s['error']}[/]")
    console.print(head)
    print_timeline({"entries": detail["history"], "correlation_id": s["correlation_id"]})


def _apply_run_event(
    state: dict[str, Any], run_id: str, headers: dict[str, str], payload: dict[str, Any]
) -> dict[str, Any]:
    """The run's state after one live event (events of other runs leave it as it is)."""
    kind = headers.get("ce-type", "")
    if kind.endswith("candidate.ready.v1"):
        if payload.get("lineage", {}).get("run_id") != run_id:
            return state
        step = state.get("total_steps") or state.get("step")
        return {**state, "status": "completed", "version_id": headers.get("ce-subject"), "step": step}
    if headers.get("ce-subject") != run_id:
        return state
    if kind.endswith("training.progress.v1"):  # an evaluation's progress carries no training loss
        return {**state, **{k: v for k, v in payload.items() if v is not None}}
    if kind.endswith("training.failed.v1"):
        return {**state, "status": "failed", "error": payload.get("error")}
    if kind.endswith("training.cancelled.v1"):
        return {**state, "status": "cancelled", "error": payload.get("reason")}
    return state


class _RunBar:
    """A rich progress bar for one run: steps, loss, eval loss, tokens/s, ETA."""

    def __init__(self, run_id: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}"),
            TextColumn("{task.fields[tps]} tok/s  ETA {task.fields[eta]}"),
            console=console,
        )
        self.task = self.progress.add_task(run_id, total=None, loss="—", eval="—", tps="—", eta="—")

    def show(self, s: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "loss": number(s.get("loss")),
            "tps": number(s.get("tokens_per_second"), ".0f"),
        }
        if s.get("eval_loss") is not None:
            fields["eval"] = number(s["eval_loss"])
        if s.get("eta_seconds") is not None:
            fields["eta"] = _duration(s["eta_seconds"])
        self.progress.update(
            self.task, total=s.get("total_steps") or None, completed=s.get("step") or 0, **fields
        )


async def _follow_run(runtime: Any, run: str, timeout: float) -> dict[str, Any]:
    """The run's state, updated from its events (and re-read every 2 s) until it is terminal."""
    detail = await _run_detail(runtime, run)
    run_id, state = detail["summary"]["run_id"], detail["summary"]
    queue: asyncio.Queue[Any] = asyncio.Queue()
    nc = runtime.broker.connection
    subs = [
        await nc.subscribe(f"{EVENTS_PREFIX}.training.>", cb=queue.put),
        await nc.subscribe(f"{EVENTS_PREFIX}.candidate.ready", cb=queue.put),
    ]
    deadline = time.monotonic() + timeout if timeout else None
    bar = _RunBar(run_id)
    try:
        with bar.progress:
            bar.show(state)
            while state["status"] not in RUN_TERMINAL:
                wait = 2.0 if deadline is None else min(2.0, max(0.0, deadline - time.monotonic()))
                try:
                    msg = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise fail(f"{run_id} still {state['status']} after {timeout:g}s") from None
                    state = (await _run_detail(runtime, run_id))["summary"]  # events can be missed
                else:
                    state = _apply_run_event(state, run_id, dict(msg.headers or {}), json.loads(msg.data))
                bar.show(state)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return dict(state)


def watch(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    timeout: Annotated[float, typer.Option(help="Give up after S seconds (0: never)")] = 0.0,
) -> None:
    """Follow a training run live: a progress bar with loss, eval loss, tokens/s and ETA.

    Exits 0 when the run produced its candidate, 1 when it failed or was cancelled.
    """
    session = Session.of(ctx)

    async def follow() -> str:
        async with session.connected() as runtime:
            state = await _follow_run(runtime, run, timeout)
        if state["status"] == "completed":
            console.print(f"[green]completed[/]: candidate {state.get('version_id') or '—'}")
        else:
            console.print(
                f"[{RUN_TERMINAL[state['status']]}]{state['status']}[/]: {state.get('error') or ''}"
            )
        return str(state["status"])

    with contextlib.suppress(KeyboardInterrupt):
        if run_coro(follow()) != "completed":
            raise typer.Exit(1)


def cancel(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    reason: Annotated[str, typer.Option(help="Recorded with the cancellation")] = "",
    wait: Annotated[float, typer.Option(help="Wait up to S seconds for training.cancelled")] = 30.0,
) -> None:
    """Ask training to stop a run; it stops at the next step and emits training.cancelled."""
    session = Session.of(ctx)
    from schemas.training import TrainingCancelRequested

    async def request() -> dict[str, Any]:
        async with session.connected() as runtime:
            detail = await _run_detail(runtime, run)
            summary = detail["summary"]
            if summary["status"] in RUN_TERMINAL:
                raise fail(f"run {summary['run_id']} already {summary['status']}; nothing to cancel")
            event = TrainingCancelRequested(run_id=summary["run_id"], reason=reason, requested_by="cli")
            await runtime.bus.publish(
                event, correlation_id=summary["correlation_id"], tenant=summary["tenant"]
            )
            console.print(f"cancel requested for {summary['run_id']}")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                summary = (await _run_detail(runtime, summary["run_id"]))["summary"]
                if summary["status"] in RUN_TERMINAL:
                    break
                await asyncio.sleep(0.3)
            return dict(summary)

    summary = run_coro(request())
    if summary["status"] == "cancelled":
        console.print(f"[yellow]cancelled[/] at step {summary['step'] or 0}/{summary['total_steps'] or '?'}")
    elif summary["status"] in RUN_TERMINAL:
        console.print(f"run ended {summary['status']} before the cancel took effect")
    else:
        raise fail(f"no training.cancelled within {wait:g}s; `tuneline runs show {summary['run_id']}`")
