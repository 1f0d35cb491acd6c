"""The CLI session: the NATS address given on the command line, kept in Typer's context, and
the helpers every command uses to connect, ask, validate and fail with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from schemas.events import validation_problems
from schemas.queries import QuerySpec, Reply
from services.core.messaging import rpc
from services.core.messaging.rpc import RpcError
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.security.access import tenant_of_user
from services.core.settings import CoreSettings, NatsSettings

console = Console()
err = Console(stderr=True)

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", envvar="TUNELINE_NATS_URL", help="NATS server URL(s), comma-separated"),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error; raise the result to exit with `code`."""
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@dataclass
class Session:
    """What one invocation's root options set, kept as the root's object in Typer's context."""

    nats_url: str | None = None

    @classmethod
    def of(cls, ctx: typer.Context) -> Session:
        root = ctx.find_root()
        if not isinstance(root.obj, Session):
            root.obj = Session()
        return root.obj

    def settings(self) -> CoreSettings:
        try:
            nats = NatsSettings(url=self.nats_url) if self.nats_url else NatsSettings()
            return CoreSettings(nats=nats)
        except ValidationError as error:
            raise fail(str(error)) from None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[ServiceRuntime]:
        settings = self.settings()
        runtime = build_runtime("cli", settings, max_reconnect_attempts=0)
        try:
            await asyncio.wait_for(runtime.broker.connect(), timeout=settings.nats.connect_timeout_s + 1)
        except (OSError, TimeoutError) as error:
            raise fail(
                f"cannot reach NATS at {settings.nats.url} ({type(error).__name__}: {error}); "
                "start the stack with `tuneline up` or pass --nats-url"
            ) from None
        try:
            yield runtime
        finally:
            await runtime.broker.stop()
            runtime.tracer_provider.shutdown()

    def ask_now(self, spec: QuerySpec[Any, Reply], request: BaseModel, timeout: float = 15.0) -> Reply:
        """Connect, ask one query, return its validated reply (exit 1 when nobody answers)."""

        async def send() -> Reply:
            async with self.connected() as runtime:
                return await ask(runtime, spec, request, timeout=timeout)

        result: Reply = run_coro(send())
        return result


async def ask(
    runtime: ServiceRuntime, spec: QuerySpec[Any, Reply], request: BaseModel, timeout: float = 5.0
) -> Reply:
    """A query, its reply validated into the contract; a tenant operator (`operator-<tenant>`) asks
    the registry for its own tenant's records."""
    tenant = tenant_of_user(runtime.settings.nats.user)
    scoped = tenant is not None and spec.tenant_scoped
    return await rpc.ask(runtime.broker, spec, request, timeout=timeout, tenant=tenant if scoped else None)


def run_coro(coro: Any) -> Any:
    """Run a coroutine to its end; a query nobody could answer exits 1 with the reason."""
    try:
        return asyncio.run(coro)
    except RpcError as error:
        raise fail(str(error)) from None


def validated(cls: Any, raw: Any, headline: str, schema_of: str) -> Any:
    """cls(raw), or exit 1 naming every field and its problem."""
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        lines = [f"{headline}:"]
        lines += [f"  • {problem}" for problem in validation_problems(error)]
        lines.append(f"See the schema with: tuneline events schema {schema_of}")
        raise fail("\n".join(lines)) from None


def when(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]


def number(value: float | None, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)
