"""`tuneline events` (publish, types, schema, tail) and `tuneline dlq`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy
from rich.table import Table

from schemas.catalogue import EVENTS, UnknownEventType, event_class
from schemas.envelope import Envelope, EnvelopeError
from schemas.queries import DEAD_LETTERS_LIST, DeadLettersQuery
from schemas.subjects import DLQ_PREFIX, EVENTS_PREFIX
from services.cli.session import Session, ask, console, fail, run_coro, validated, when

events_app = typer.Typer(help="Publish, inspect and watch events.", no_args_is_help=True)


dlq_app = typer.Typer(help="Dead-lettered messages.", no_args_is_help=True)


# -- events ----------------------------------------------------------------------------------
def _load_event(event_type: str, data: Path) -> Any:
    try:
        cls = event_class(event_type)
    except UnknownEventType as error:
        raise fail(str(error)) from None
    try:
        raw = json.loads(data.read_text())
    except FileNotFoundError:
        raise fail(f"{data}: no such file; pass the payload as --data path/to/event.json") from None
    except json.JSONDecodeError as error:
        raise fail(f"{data}: not valid JSON: {error}") from None
    return validated(cls, raw, f"{data} is not a valid {event_type} payload", event_type)


@events_app.command("publish")
def events_publish(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. dataset.submitted")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSON file with the payload")],
    correlation_id: Annotated[
        str | None, typer.Option(help="Join an existing lineage; default: a new one")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant; default: the payload's")] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate only, send nothing")] = False,
) -> None:
    """Validate a payload against its event schema, then publish it."""
    session = Session.of(ctx)
    event = _load_event(event_type, data)
    if dry_run:
        console.print(f"[green]valid[/] {event.ce_type()} (not sent: --dry-run)")
        return

    async def send() -> Envelope:
        async with session.connected() as runtime:
            try:
                return await runtime.bus.publish(event, correlation_id=correlation_id, tenant=tenant)
            except ValueError as error:
                raise fail(str(error)) from None
            except NoRespondersError:
                raise fail(
                    "no JetStream stream answers on tuneline.events.>; is `tuneline up` running?"
                ) from None

    envelope = run_coro(send())
    console.print(f"[green]published[/] {envelope.type}")
    console.print(f"  id:             {envelope.id}")
    console.print(f"  correlation id: {envelope.correlation_id}")
    console.print(f"  follow it with: tuneline status {envelope.correlation_id}")


@events_app.command("types")
def events_types() -> None:
    """List every event type of the catalogue."""
    table = Table("event type", "CloudEvents type", "subject")
    for name, cls in sorted(EVENTS.items()):
        table.add_row(name, cls.ce_type(), cls.subject())
    console.print(table)


@events_app.command("schema")
def events_schema(
    event_type: Annotated[str, typer.Argument(help="e.g. dataset.submitted")],
) -> None:
    """Print the JSON Schema of one event's payload."""
    try:
        cls = event_class(event_type)
    except UnknownEventType as error:
        raise fail(str(error)) from None
    console.print_json(json.dumps(cls.model_json_schema()))


def _describe(subject: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    item: dict[str, Any] = {"subject": subject}
    try:
        envelope = Envelope.from_headers(headers)
        item["envelope"] = envelope.model_dump(mode="json", exclude_none=True)
    except EnvelopeError as error:
        item["envelope_error"] = str(error)
    try:
        item["data"] = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        item["data"] = body.decode(errors="replace")
    if subject.startswith(DLQ_PREFIX):
        item["dead_letter"] = {k: v for k, v in headers.items() if k.lower().startswith("tuneline-dlq-")}
    return item


def _print_event_line(item: dict[str, Any]) -> None:
    env = item.get("envelope", {})
    when = env.get("time", "")[11:23] if env.get("time") else "?"
    if "dead_letter" in item:
        reason = item["dead_letter"].get("tuneline-dlq-reason", "")
        console.print(f"[red]{when} DEAD-LETTER[/] {item['subject']}: {reason}")
        return
    if "envelope_error" in item:
        console.print(f"[yellow]{when} {item['subject']}[/] ({item['envelope_error']})")
        return
    raw = item.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    keys = ("task", "run_id", "step", "loss", "route", "phase", "error")
    extra = " ".join(f"{k}={data[k]}" for k in keys if data.get(k) is not None)
    console.print(
        f"[dim]{when}[/] [bold cyan]{env.get('type', '?')}[/] subject={env.get('subject')} "
        f"from={env.get('source', '').removeprefix('tuneline/')} "
        f"corr={str(env.get('correlation_id', ''))[:8]} {extra}"
    )


@events_app.command("tail")
def events_tail(
    ctx: typer.Context,
    from_start: Annotated[bool, typer.Option(help="Replay the stream from its first event")] = False,
    dead_letters: Annotated[bool, typer.Option(help="Also show dead letters")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    count: Annotated[int, typer.Option(help="Stop after N events (0: never)")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after S seconds (0: never)")] = 0.0,
) -> None:
    """Show events as they happen (and dead letters, in red)."""
    session = Session.of(ctx)

    async def tail() -> None:
        async with session.connected() as runtime:
            js = runtime.broker.connection.jetstream()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            policy = DeliverPolicy.ALL if from_start else DeliverPolicy.NEW
            subs = [
                await js.subscribe(
                    f"{EVENTS_PREFIX}.>", ordered_consumer=True, deliver_policy=policy, cb=queue.put
                )
            ]
            if dead_letters:
                subs.append(
                    await js.subscribe(
                        f"{DLQ_PREFIX}.>",
                        ordered_consumer=True,
                        deliver_policy=policy,
                        cb=queue.put,
                    )
                )
            seen = 0
            deadline = time.monotonic() + timeout if timeout else None
            try:
                while not count or seen < count:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        msg = await asyncio.wait_for(queue.get(), wait)
                    except TimeoutError:
                        break
                    item = _describe(msg.subject, dict(msg.headers or {}), msg.data)
                    if as_json:
                        sys.stdout.write(json.dumps(item) + "\n")
                        sys.stdout.flush()
                    else:
                        _print_event_line(item)
                    seen += 1
            finally:
                for sub in subs:
                    await sub.unsubscribe()

    with contextlib.suppress(KeyboardInterrupt):
        run_coro(tail())


# -- status / models / dlq -------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context, limit: Annotated[int, typer.Option(help="At most N, newest first")] = 50
) -> None:
    """Dead letters recorded by the registry, with the reason each was refused."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            return (await ask(runtime, DEAD_LETTERS_LIST, DeadLettersQuery(limit=limit))).model_dump(
                mode="json"
            )

    table = Table("recorded", "subject", "refused by", "kind", "reason")
    for letter in run_coro(fetch())["dead_letters"]:
        table.add_row(
            when(letter["recorded_at"]),
            letter["original_subject"],
            letter["service"],
            letter["kind"],
            letter["reason"],
        )
    console.print(table)
