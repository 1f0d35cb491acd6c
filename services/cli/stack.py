"""`tuneline up` and `tuneline demo`: the embedded stack."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.session import NatsUrl, Session, console, err, fail, run_coro
from services.core.messaging.rpc import RpcError
from services.stack import Stack, StackConfig, StackError, wait_healthy


# -- up --------------------------------------------------------------------------------------
def up(
    ctx: typer.Context,
    nats_url: NatsUrl = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where JetStream, the SQLite registry, artifacts and logs live")
    ] = Path(".tuneline"),
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="TUNELINE_REGISTRY_DATABASE_URL",
            help="Registry database; default SQLite in --data-dir. "
            "PostgreSQL: postgresql+psycopg://user:pw@host/db. Prefer the environment variable: a "
            "flag's password shows in `ps`; either way only the registry process receives it",
        ),
    ] = None,
    artifact_root: Annotated[
        str | None, typer.Option(help="Artifact store: a directory or s3://bucket/prefix")
    ] = None,
    nats_port: Annotated[int, typer.Option(help="Port of the embedded nats-server")] = 4222,
    serving_port: Annotated[int, typer.Option(help="Port of serving's OpenAI-compatible API")] = 8000,
    dashboard_port: Annotated[int, typer.Option(help="Port of the registry's dashboard (0: off)")] = 8090,
    log_level: Annotated[str, typer.Option(help="Log level of the services")] = "INFO",
    secure: Annotated[
        bool,
        typer.Option(
            help="NATS with TLS and one user per service (infra/nats); the CLI's credentials are "
            "written to <data-dir>/nats/secrets/operator.env"
        ),
    ] = False,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            help="With --secure: a NATS user `operator-<tenant>` that may act for this tenant only "
            "(credentials in <data-dir>/nats/secrets/operator-<tenant>.env); repeatable"
        ),
    ] = None,
) -> None:
    """Start the embedded stack: nats-server (JetStream), registry and every service. Ctrl-C stops it."""
    session = Session.of(ctx)
    config = StackConfig(
        data_dir=data_dir,
        nats_url=nats_url or session.nats_url,
        nats_port=nats_port,
        database_url=database_url,
        artifact_root=artifact_root,
        log_level=log_level,
        serving_port=serving_port,
        dashboard_port=dashboard_port,
        secure=secure,
        tenants=tuple(tenant or ()),
    )
    stack = Stack(config)
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        session.nats_url = stack.nats_url
        os.environ.update(stack.client_env())  # this process asks for health as the operator
        health = run_coro(_wait_healthy(session, stack))
        _print_stack(stack, config, health)
        while not stopping:
            for line in stack.supervise():  # restarts a dead service; a crash loop raises StackError
                err.print(f"[yellow]{line}[/]")
            time.sleep(0.5)
    except StackError as error:
        raise fail(str(error)) from None
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("[green]stopped[/]")


async def _wait_healthy(session: Session, stack: Stack) -> dict[str, dict[str, Any]]:
    async with session.connected() as runtime:
        return await wait_healthy(runtime.broker, stack)


def _print_stack(stack: Stack, config: StackConfig, health: dict[str, dict[str, Any]]) -> None:
    table = Table(title="tuneline embedded stack", show_lines=False)
    table.add_column("component")
    table.add_column("where")
    table.add_column("pid")
    if stack.nats is not None and stack.nats.process is not None:
        table.add_row("nats-server (JetStream)", stack.nats_url, str(stack.nats.process.pid))
    else:
        table.add_row("NATS (external)", stack.nats_url, "")
    for name, info in health.items():
        table.add_row(name, "healthy", str(info.get("pid", "")))
    table.add_row("registry database", config.masked_database_url(), "")
    table.add_row("artifact store", config.resolved_artifact_root(), "")
    if "serving" in health:
        table.add_row("serving API (OpenAI)", f"http://127.0.0.1:{config.serving_port}/v1", "")
    if "registry" in health and config.dashboard_port:
        table.add_row("dashboard (admin key)", stack.dashboard_url(), "")
    table.add_row("logs", str(config.data_dir / "logs"), "")
    if stack.secure is not None:
        table.add_row("NATS TLS CA", str(stack.secure.tls.ca_file), "")
        operator_env = config.data_dir / "nats" / "secrets" / "operator.env"
        table.add_row("CLI credentials", f"source {operator_env}", "")
        for name in config.tenants:
            tenant_env = config.data_dir / "nats" / "secrets" / f"operator-{name}.env"
            table.add_row(f"tenant {name}'s operator", f"source {tenant_env}", "")
    console.print(table)
    console.print("Ready. Press Ctrl-C to stop.")


# -- demo ------------------------------------------------------------------------------------
def demo(
    data: Annotated[Path, typer.Option(help="Task data to submit")] = Path(
        "examples/support-tickets/tickets.jsonl"
    ),
    recipe: Annotated[Path, typer.Option(help="Its recipe")] = Path("examples/support-tickets/recipe.yaml"),
    quick: Annotated[
        bool, typer.Option(envvar="QUICK", help="Use the tiny test model instead of SmolLM2-135M")
    ] = False,
    keep: Annotated[bool, typer.Option(help="Leave the stack running until Ctrl-C")] = False,
) -> None:
    """Run the pipeline as far as it exists, on a fresh embedded stack, and show what happened."""
    from services.demo import run_demo

    try:
        run_demo(data, recipe, quick=quick, keep=keep, console=console)
    except (StackError, RpcError) as error:
        raise fail(str(error)) from None
