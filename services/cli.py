"""The operator CLI, `tuneline`: run the embedded stack, publish and watch events, query the registry.

The CLI needs one address: the NATS URL (`--nats-url` or TUNELINE_NATS_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from nats.errors import NoRespondersError
from nats.js.api import DeliverPolicy
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from schemas.catalogue import EVENTS, UnknownEventType, event_class
from schemas.dataset import DatasetSubmitted, DataSource, SubmissionSpec
from schemas.envelope import Envelope, EnvelopeError
from schemas.events import validation_problems
from schemas.merge import MergeRequested
from schemas.specification import asyncapi_document, event_json_schemas
from schemas.subjects import DLQ_PREFIX, EVENTS_PREFIX, TENANT_QUERIES
from services.core import uploads
from services.core.access import tenant_of_user
from services.core.rpc import RpcError, query
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings, NatsSettings
from services.stack import Stack, StackConfig, StackError, wait_healthy

console = Console()
err = Console(stderr=True)

app = typer.Typer(
    help="tuneline: curate, train, evaluate, gate and roll out adapted language models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
events_app = typer.Typer(help="Publish, inspect and watch events.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions known to the registry.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schema and AsyncAPI documents.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered messages.", no_args_is_help=True)
datasets_app = typer.Typer(help="Submitted datasets and their audit reports.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(events_app, name="events")
app.add_typer(models_app, name="models")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
runs_app = typer.Typer(help="Training runs (no subcommand: list them).", invoke_without_command=True)
app.add_typer(runs_app, name="runs")

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", envvar="TUNELINE_NATS_URL", help="NATS server URL(s), comma-separated"),
]
GENERATED = Path(__file__).resolve().parent.parent / "schemas" / "generated"


class CliState:
    nats_url: str | None = None


STATE = CliState()


@app.callback()
def _root(nats_url: NatsUrl = None) -> None:
    STATE.nats_url = nats_url


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _settings() -> CoreSettings:
    try:
        nats = NatsSettings(url=STATE.nats_url) if STATE.nats_url else NatsSettings()
        return CoreSettings(nats=nats)
    except ValidationError as error:
        raise _fail(str(error)) from None


@contextlib.asynccontextmanager
async def _connected() -> AsyncIterator[ServiceRuntime]:
    settings = _settings()
    runtime = build_runtime("cli", settings, max_reconnect_attempts=0)
    try:
        await asyncio.wait_for(runtime.broker.connect(), timeout=settings.nats.connect_timeout_s + 1)
    except (OSError, TimeoutError) as error:
        raise _fail(
            f"cannot reach NATS at {settings.nats.url} ({type(error).__name__}: {error}); "
            "start the stack with `tuneline up` or pass --nats-url"
        ) from None
    try:
        yield runtime
    finally:
        await runtime.broker.stop()
        runtime.tracer_provider.shutdown()


async def _ask(
    runtime: ServiceRuntime, service: str, name: str, body: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """A query; a tenant operator (`operator-<tenant>`) asks the registry for its tenant's records."""
    tenant = tenant_of_user(runtime.settings.nats.user)
    scoped = tenant is not None and service == "registry" and name in TENANT_QUERIES
    return await query(runtime.broker, service, name, body, timeout, tenant=tenant if scoped else None)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except RpcError as error:
        raise _fail(str(error)) from None


# -- up --------------------------------------------------------------------------------------
@app.command()
def up(
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
    config = StackConfig(
        data_dir=data_dir,
        nats_url=nats_url or STATE.nats_url,
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
        STATE.nats_url = stack.nats_url
        os.environ.update(stack.client_env())  # this process asks for health as the operator
        health = _run(_wait_healthy(stack))
        _print_stack(stack, config, health)
        while not stopping:
            for line in stack.supervise():  # restarts a dead service; a crash loop raises StackError
                err.print(f"[yellow]{line}[/]")
            time.sleep(0.5)
    except StackError as error:
        raise _fail(str(error)) from None
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("[green]stopped[/]")


async def _wait_healthy(stack: Stack) -> dict[str, dict[str, Any]]:
    async with _connected() as runtime:
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


# -- events ----------------------------------------------------------------------------------
def _validated(cls: Any, raw: Any, headline: str, schema_of: str) -> Any:
    """cls(raw), or exit 1 naming every field and its problem."""
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        lines = [f"{headline}:"]
        lines += [f"  • {problem}" for problem in validation_problems(error)]
        lines.append(f"See the schema with: tuneline events schema {schema_of}")
        raise _fail("\n".join(lines)) from None


def _load_event(event_type: str, data: Path) -> Any:
    try:
        cls = event_class(event_type)
    except UnknownEventType as error:
        raise _fail(str(error)) from None
    try:
        raw = json.loads(data.read_text())
    except FileNotFoundError:
        raise _fail(f"{data}: no such file; pass the payload as --data path/to/event.json") from None
    except json.JSONDecodeError as error:
        raise _fail(f"{data}: not valid JSON: {error}") from None
    return _validated(cls, raw, f"{data} is not a valid {event_type} payload", event_type)


@events_app.command("publish")
def events_publish(
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. dataset.submitted")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSON file with the payload")],
    correlation_id: Annotated[
        str | None, typer.Option(help="Join an existing lineage; default: a new one")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant; default: the payload's")] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate only, send nothing")] = False,
) -> None:
    """Validate a payload against its event schema, then publish it."""
    event = _load_event(event_type, data)
    if dry_run:
        console.print(f"[green]valid[/] {event.ce_type()} (not sent: --dry-run)")
        return

    async def send() -> Envelope:
        async with _connected() as runtime:
            try:
                return await runtime.bus.publish(event, correlation_id=correlation_id, tenant=tenant)
            except ValueError as error:
                raise _fail(str(error)) from None
            except NoRespondersError:
                raise _fail(
                    "no JetStream stream answers on tuneline.events.>; is `tuneline up` running?"
                ) from None

    envelope = _run(send())
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
        raise _fail(str(error)) from None
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
    from_start: Annotated[bool, typer.Option(help="Replay the stream from its first event")] = False,
    dead_letters: Annotated[bool, typer.Option(help="Also show dead letters")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    count: Annotated[int, typer.Option(help="Stop after N events (0: never)")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after S seconds (0: never)")] = 0.0,
) -> None:
    """Show events as they happen (and dead letters, in red)."""

    async def tail() -> None:
        async with _connected() as runtime:
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
        _run(tail())


# -- status / models / dlq -------------------------------------------------------------------
def _when(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]


@app.command()
def status(
    correlation_id: Annotated[str, typer.Argument(help="The lineage's correlation id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw timeline")] = False,
    wait: Annotated[
        float, typer.Option(help="Wait up to S seconds for at least one event to be recorded")
    ] = 0.0,
) -> None:
    """Print the ordered timeline of one lineage, from submission to rollout."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            deadline = time.monotonic() + wait
            while True:
                timeline = await _ask(runtime, "registry", "timeline", {"correlation_id": correlation_id})
                if timeline["entries"] or time.monotonic() >= deadline:
                    return timeline
                await asyncio.sleep(0.2)

    timeline = _run(fetch())
    if as_json:
        console.print_json(json.dumps(timeline))
        return
    if not timeline["entries"]:
        raise _fail(f"no events recorded for correlation id {correlation_id}")
    _print_timeline(timeline)


def _print_timeline(timeline: dict[str, Any]) -> None:
    table = Table(title=f"lineage {timeline['correlation_id']}")
    for column in ("#", "time", "event", "from", "subject", "details"):
        table.add_column(column)
    for entry in timeline["entries"]:
        table.add_row(
            str(entry["position"]),
            _when(entry["time"]),
            entry["type"].removeprefix("tuneline.").rsplit(".v", 1)[0],
            entry["source"].removeprefix("tuneline/"),
            entry["subject"],
            entry["summary"],
        )
    console.print(table)


@models_app.command("list")
def models_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's versions")] = None,
    route: Annotated[str | None, typer.Option(help="Only versions for this route")] = None,
    limit: Annotated[int, typer.Option(help="At most N versions, newest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List model versions (newest first) with the key parts of their tuples."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            body = {"tenant": tenant, "route": route, "limit": limit}
            return await _ask(runtime, "registry", "models.list", body)

    result = _run(fetch())
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
    version_id: Annotated[str, typer.Argument(help="e.g. mv-0123456789abcdef")],
) -> None:
    """Show one model version: its full tuple, lineage and history."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            return await _ask(runtime, "registry", "models.get", {"version_id": version_id})

    detail = _run(fetch())
    console.print_json(json.dumps({k: detail[k] for k in ("summary", "model_ref", "lineage")}))
    _print_timeline({"correlation_id": detail["summary"]["version_id"], "entries": detail["history"]})


@dlq_app.command("list")
def dlq_list(limit: Annotated[int, typer.Option(help="At most N, newest first")] = 50) -> None:
    """Dead letters recorded by the registry, with the reason each was refused."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            return await _ask(runtime, "registry", "dead-letters.list", {"limit": limit})

    table = Table("recorded", "subject", "refused by", "kind", "reason")
    for letter in _run(fetch())["dead_letters"]:
        table.add_row(
            _when(letter["recorded_at"]),
            letter["original_subject"],
            letter["service"],
            letter["kind"],
            letter["reason"],
        )
    console.print(table)


# -- submit / datasets -----------------------------------------------------------------------
def _load_spec(recipe: Path) -> SubmissionSpec:
    try:
        raw = yaml.safe_load(recipe.read_text())
    except FileNotFoundError:
        raise _fail(f"{recipe}: no such file; pass the recipe with --recipe path/to/recipe.yaml") from None
    except yaml.YAMLError as error:
        raise _fail(f"{recipe}: not valid YAML: {error}") from None
    spec: SubmissionSpec = _validated(
        SubmissionSpec, raw if raw is not None else {}, f"{recipe} is not a valid recipe", "dataset.submitted"
    )
    return spec


def _source_format(path: Path) -> str:
    from services.curation.sources import SourceError, infer_format

    if str(path).startswith("artifact:"):  # already in the artifact store: nothing to upload
        suffix = Path(str(path)).suffix.lower()
        return {".parquet": "parquet", ".csv": "csv"}.get(suffix, "jsonl")
    if not path.exists():
        raise _fail(f"{path}: no such file or directory")
    try:
        return infer_format(path)
    except SourceError as error:
        raise _fail(str(error)) from None


@app.command()
def submit(
    data: Annotated[
        list[Path], typer.Argument(help="Task data: .jsonl, .parquet, .csv or a saved datasets dir")
    ],
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Recipe YAML (task, route, training, …)")],
    eval_data: Annotated[
        list[Path] | None, typer.Option("--eval", help="A held-out split (else curation makes one)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant; default: the recipe's, else 'default'")] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Override the recipe's training.base_model (e.g. tiny-llama)")
    ] = None,
    max_seq_len: Annotated[
        int | None, typer.Option(help="Override the recipe's training.max_seq_len (tokens per row)")
    ] = None,
    wait: Annotated[float, typer.Option(help="Wait up to S seconds for the verdict and print it")] = 0.0,
    dry_run: Annotated[bool, typer.Option(help="Validate the recipe and files, upload nothing")] = False,
) -> None:
    """Upload data files and publish dataset.submitted; curation audits them and approves or rejects."""
    spec = _load_spec(recipe)
    overrides = {k: v for k, v in (("base_model", base_model), ("max_seq_len", max_seq_len)) if v is not None}
    if overrides:
        try:
            training = type(spec.training).model_validate({**spec.training.model_dump(), **overrides})
        except ValidationError as error:
            raise _fail("; ".join(validation_problems(error))) from None
        spec = spec.model_copy(update={"training": training})
    files = [(path, _source_format(path), "train") for path in data]
    files += [(path, _source_format(path), "eval") for path in eval_data or []]
    settings = _settings()
    # a tenant operator (`operator-<tenant>`) submits for its own tenant unless told otherwise
    who = tenant or spec.tenant or tenant_of_user(settings.nats.user) or settings.tenant
    if dry_run:
        console.print(f"[green]valid[/] recipe {recipe} and {len(files)} source(s) (not sent: --dry-run)")
        return

    async def send() -> tuple[Envelope, DatasetSubmitted]:
        async with _connected() as runtime:
            js = runtime.broker.connection.jetstream()
            sources = []
            for path, fmt, split in files:
                if str(path).startswith("artifact:"):
                    sources.append(DataSource(uri=str(path), format=fmt, split=split))
                    continue
                uri, sha = await uploads.upload(js, path)
                sources.append(DataSource(uri=uri, format=fmt, sha256=sha, split=split))
            event = DatasetSubmitted(
                submission_id=f"sub-{uuid.uuid4().hex[:12]}",
                tenant=who,
                task=spec.task,
                route=spec.route,
                sources=tuple(sources),
                mix=spec.mix,
                curation=spec.curation,
                recipe=spec.training,
                gate_policy=spec.gates,
            )
            try:
                envelope = await runtime.bus.publish(event, tenant=who)
            except ValueError as error:  # e.g. a tenant operator sending for another tenant
                raise _fail(str(error)) from None
            except NoRespondersError:
                raise _fail(
                    "no JetStream stream answers on tuneline.events.>; is `tuneline up` running?"
                ) from None
            return envelope, event

    envelope, event = _run(send())
    console.print(f"[green]submitted[/] {event.submission_id} ({len(files)} source(s) uploaded)")
    console.print(f"  correlation id: {envelope.correlation_id}")
    console.print(f"  audit report:   tuneline datasets show {event.submission_id}")
    if wait > 0:
        detail = _run(_dataset_detail(event.submission_id, wait=wait, until_decided=True))
        _print_dataset(detail, findings=30)


async def _dataset_detail(ident: str, *, wait: float = 0.0, until_decided: bool = False) -> dict[str, Any]:
    async with _connected() as runtime:
        deadline = time.monotonic() + wait
        while True:
            try:
                detail = await _ask(runtime, "registry", "datasets.get", {"id": ident})
            except RpcError:
                if time.monotonic() >= deadline:
                    raise
                detail = None
            decided = detail is not None and detail["summary"]["status"] != "submitted"
            if detail is not None and (decided or not until_decided or time.monotonic() >= deadline):
                return detail
            await asyncio.sleep(0.3)


def _print_dataset(detail: dict[str, Any], *, findings: int) -> None:
    s = detail["summary"]
    extra = detail.get("details") or {}
    colour = {"approved": "green", "rejected": "red"}.get(s["status"], "yellow")
    head = Table(show_header=False, title=f"dataset {s['submission_id']}")
    head.add_row("status", f"[{colour}]{s['status']}[/]")
    head.add_row("dataset id", s["dataset_id"] or "—")
    head.add_row("task / route", f"{s['task']} / {s['route'] or '—'}")
    head.add_row("tenant", s["tenant"])
    head.add_row("correlation id", s["correlation_id"])
    if detail.get("manifest"):
        head.add_row("manifest", detail["manifest"]["key"])
    if detail.get("report"):
        head.add_row("full report", detail["report"]["key"])
    console.print(head)
    if s["status"] == "submitted":
        console.print("curation has not decided yet; try again in a moment")
        return
    checks = Table("check", "verdict", "value", "threshold", "detail", title="audit")
    for c in detail.get("audit") or []:
        verdict = "[green]pass[/]" if c["passed"] else "[bold red]FAIL[/]"
        value = "" if c["value"] is None else f"{c['value']:g}"
        threshold = "" if c["threshold"] is None else f"{c['threshold']:g}"
        checks.add_row(c["name"], verdict, value, threshold, c["detail"])
    console.print(checks)
    if extra.get("sources"):
        table = Table("source", "format", "split", "rows", "kept", "sha256", title="sources")
        for src in extra["sources"]:
            table.add_row(
                src["uri"],
                src["format"],
                src["split"],
                str(src["rows"]),
                str(src["kept"]),
                src["sha256"][:12],
            )
        console.print(table)
    if extra.get("mix"):
        table = Table("component", "ratio", "rows", "available", title="training mix")
        for m in extra["mix"]:
            table.add_row(m["name"], f"{m['ratio']:.0%}", str(m["rows"]), str(m["available"]))
        console.print(table)
    if detail.get("splits"):
        table = Table("split", "rows", "artifact", title="curated splits")
        for sp in detail["splits"]:
            table.add_row(sp["name"], str(sp["rows"]), sp["artifact"]["key"])
        console.print(table)
    listed = detail.get("findings") or []
    if listed and findings:
        total = extra.get("findings_total", len(listed))
        table = Table("check", "source", "row", "field", "finding", title=f"findings ({total} in all)")
        for f in listed[:findings]:
            source = (f.get("source") or "").removeprefix("upload:")
            source = source.split("/", 1)[-1] if len(source) > 64 else source
            table.add_row(f["check"], source, str(f.get("row") or ""), f.get("field") or "", f["message"])
        console.print(table)
        if total > findings:
            console.print(f"… {total - findings} more: --findings N shows more; all are in the full report")


@datasets_app.command("show")
def datasets_show(
    ident: Annotated[str, typer.Argument(help="Submission id, dataset id or a dataset id prefix")],
    findings: Annotated[int, typer.Option(help="Show up to N findings")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print a dataset's audit report as tables: checks, sources, mix, splits, findings."""
    detail = _run(_dataset_detail(ident))
    if as_json:
        console.print_json(json.dumps(detail))
        return
    _print_dataset(detail, findings=findings)


@datasets_app.command("list")
def datasets_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's")] = None,
    status: Annotated[str | None, typer.Option(help="submitted | approved | rejected")] = None,
    limit: Annotated[int, typer.Option(help="At most N, newest first")] = 100,
) -> None:
    """List submissions and their curation verdicts, newest first."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            body = {"tenant": tenant, "status": status, "limit": limit}
            return await _ask(runtime, "registry", "datasets.list", body)

    table = Table("submission", "status", "dataset id", "task", "route", "tenant", "updated")
    for d in _run(fetch())["datasets"]:
        table.add_row(
            d["submission_id"],
            d["status"],
            (d["dataset_id"] or "")[:16],
            d["task"],
            d["route"] or "",
            d["tenant"],
            _when(d["updated_at"]),
        )
    console.print(table)


# -- training runs ---------------------------------------------------------------------------
RUN_TERMINAL = {"completed": "green", "failed": "red", "cancelled": "yellow"}


def _number(value: float | None, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


async def _run_detail(runtime: ServiceRuntime, ident: str) -> dict[str, Any]:
    detail = await _ask(runtime, "registry", "runs.get", {"run_id": ident})
    if detail.get("code") == "not-found":
        raise _fail(f"{detail['error']}; `tuneline runs` lists the runs")
    if "error" in detail and "summary" not in detail:
        raise _fail(detail["error"])
    return detail


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
    if ctx.invoked_subcommand is not None:
        return

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            body = {"tenant": tenant, "status": status, "limit": limit}
            return await _ask(runtime, "registry", "runs.list", body)

    runs = _run(fetch())["runs"]
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
            _number(r["loss"]),
            _number(r["eval_loss"]),
            _number(r["tokens_per_second"], ".0f"),
            r["version_id"] or "",
            _when(r["updated_at"]),
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run: its state, hashes and events (progress excluded)."""

    async def fetch() -> dict[str, Any]:
        async with _connected() as runtime:
            return await _run_detail(runtime, run)

    detail = _run(fetch())
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
    head.add_row("loss / eval loss", f"{_number(s['loss'])} / {_number(s['eval_loss'])}")
    head.add_row("candidate", s["version_id"] or "—")
    if s["error"]:
        head.add_row("error", f"[red]{s['error']}[/]")
    console.print(head)
    _print_timeline({"entries": detail["history"], "correlation_id": s["correlation_id"]})


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


@app.command()
def watch(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    timeout: Annotated[float, typer.Option(help="Give up after S seconds (0: never)")] = 0.0,
) -> None:
    """Follow a training run live: a progress bar with loss, eval loss, tokens/s and ETA.

    Exits 0 when the run produced its candidate, 1 when it failed or was cancelled.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    async def follow() -> str:
        async with _connected() as runtime:
            detail = await _run_detail(runtime, run)
            run_id = detail["summary"]["run_id"]
            queue: asyncio.Queue[Any] = asyncio.Queue()
            nc = runtime.broker.connection
            subs = [
                await nc.subscribe(f"{EVENTS_PREFIX}.training.>", cb=queue.put),
                await nc.subscribe(f"{EVENTS_PREFIX}.candidate.ready", cb=queue.put),
            ]
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}"),
                TextColumn("{task.fields[tps]} tok/s  ETA {task.fields[eta]}"),
            )
            deadline = time.monotonic() + timeout if timeout else None
            state = detail["summary"]
            try:
                with Progress(*columns, console=console) as bar:
                    task = bar.add_task(run_id, total=None, loss="—", eval="—", tps="—", eta="—")

                    def show(s: dict[str, Any]) -> None:
                        fields: dict[str, Any] = {
                            "loss": _number(s.get("loss")),
                            "tps": _number(s.get("tokens_per_second"), ".0f"),
                        }
                        if s.get("eval_loss") is not None:
                            fields["eval"] = _number(s["eval_loss"])
                        if s.get("eta_seconds") is not None:
                            fields["eta"] = _duration(s["eta_seconds"])
                        bar.update(
                            task, total=s.get("total_steps") or None, completed=s.get("step") or 0, **fields
                        )

                    show(state)
                    while state["status"] not in RUN_TERMINAL:
                        wait = 2.0 if deadline is None else min(2.0, max(0.0, deadline - time.monotonic()))
                        try:
                            msg = await asyncio.wait_for(queue.get(), wait)
                        except TimeoutError:
                            if deadline is not None and time.monotonic() >= deadline:
                                raise _fail(f"{run_id} still {state['status']} after {timeout:g}s") from None
                            state = (await _run_detail(runtime, run_id))["summary"]  # events can be missed
                            show(state)
                            continue
                        state = _apply_run_event(state, run_id, dict(msg.headers or {}), json.loads(msg.data))
                        show(state)
            finally:
                for sub in subs:
                    await sub.unsubscribe()
            if state["status"] == "completed":
                console.print(f"[green]completed[/]: candidate {state.get('version_id') or '—'}")
            else:
                console.print(
                    f"[{RUN_TERMINAL[state['status']]}]{state['status']}[/]: {state.get('error') or ''}"
                )
            return str(state["status"])

    with contextlib.suppress(KeyboardInterrupt):
        if _run(follow()) != "completed":
            raise typer.Exit(1)


@app.command()
def cancel(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix")],
    reason: Annotated[str, typer.Option(help="Recorded with the cancellation")] = "",
    wait: Annotated[float, typer.Option(help="Wait up to S seconds for training.cancelled")] = 30.0,
) -> None:
    """Ask training to stop a run; it stops at the next step and emits training.cancelled."""
    from schemas.training import TrainingCancelRequested

    async def request() -> dict[str, Any]:
        async with _connected() as runtime:
            detail = await _run_detail(runtime, run)
            summary = detail["summary"]
            if summary["status"] in RUN_TERMINAL:
                raise _fail(f"run {summary['run_id']} already {summary['status']}; nothing to cancel")
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

    summary = _run(request())
    if summary["status"] == "cancelled":
        console.print(f"[yellow]cancelled[/] at step {summary['step'] or 0}/{summary['total_steps'] or '?'}")
    elif summary["status"] in RUN_TERMINAL:
        console.print(f"run ended {summary['status']} before the cancel took effect")
    else:
        raise _fail(f"no training.cancelled within {wait:g}s; `tuneline runs show {summary['run_id']}`")


# -- schemas ---------------------------------------------------------------------------------
def _generated_files() -> dict[str, str]:
    files = {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in event_json_schemas().items()
    }
    files["asyncapi.json"] = json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
    return files


@schemas_app.command("export")
def schemas_export(
    out: Annotated[
        Path, typer.Option(help="Output directory", show_default="<repository>/schemas/generated")
    ] = GENERATED,
    check: Annotated[
        bool, typer.Option(help="Fail if the files on disk differ from the models (CI)")
    ] = False,
) -> None:
    """Write the JSON Schema of every event and the AsyncAPI document to schemas/generated/."""
    files = _generated_files()
    if check:
        stale = [n for n, text in files.items() if not (out / n).exists() or (out / n).read_text() != text]
        extra = sorted(p.name for p in out.glob("*.json") if p.name not in files)
        if stale or extra:
            raise _fail(
                f"schemas/generated is out of date ({', '.join(stale + extra)}); "
                "run `make schemas` and commit the result"
            )
        console.print(f"[green]schemas/generated is up to date[/] ({len(files)} files)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    for path in out.glob("*.json"):
        if path.name not in files:
            path.unlink()
    console.print(f"wrote {len(files)} files to {out}")


# -- infra ------------------------------------------------------------------------------------
infra_app = typer.Typer(help="Deployment files generated from code (NATS permissions).", no_args_is_help=True)
app.add_typer(infra_app, name="infra")


def _infra_files() -> dict[str, str]:
    from services.core.access import auth_conf, helm_users_template

    auth = auth_conf()
    return {
        "infra/nats/auth.conf": auth,
        "deploy/helm/tuneline/files/nats-auth.conf": auth,
        "deploy/helm/tuneline/templates/_nats_users.tpl": helm_users_template(),
    }


@infra_app.command("export")
def infra_export(
    root: Annotated[
        Path, typer.Option(help="Repository root", show_default="this checkout")
    ] = GENERATED.parents[1],
    check: Annotated[bool, typer.Option(help="Fail if the files on disk differ (CI)")] = False,
) -> None:
    """Write the NATS users and permissions (services/core/access.py) to infra/ and the Helm chart."""
    files = _infra_files()
    if check:
        stale = [n for n, text in files.items() if not (root / n).exists() or (root / n).read_text() != text]
        if stale:
            raise _fail(f"{', '.join(stale)} out of date; run `tuneline infra export` and commit the result")
        console.print(f"[green]NATS permissions are up to date[/] ({len(files)} files)")
        return
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    console.print(f"wrote {', '.join(files)}")


@infra_app.command("secrets")
def infra_secrets(
    out: Annotated[
        Path, typer.Option(help="Where compose.yaml lives", show_default="<repository>/infra")
    ] = GENERATED.parents[1] / "infra",
) -> None:
    """Passwords (infra/.env) and a development CA and NATS certificate (infra/tls/) for compose.

    Existing passwords and certificates are kept, so running it again changes nothing.
    """
    from services.core.access import ADMIN_USER, password_variable, service_access
    from services.core.pki import make_server_tls, new_password

    out.mkdir(parents=True, exist_ok=True)
    env_file = out / ".env"
    values: dict[str, str] = {}
    if env_file.exists():
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    wanted = [password_variable(u) for u in [*service_access(), ADMIN_USER]]
    for name in [*wanted, "TUNELINE_POSTGRES_PASSWORD", "TUNELINE_MINIO_PASSWORD"]:
        values.setdefault(name, new_password())
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env_file.chmod(0o600)
    tls = out / "tls"
    if not (tls / "server.pem").exists():
        make_server_tls(tls, hosts=("nats", "localhost", "127.0.0.1"))
    operator = out / ".env.operator"
    operator.write_text(
        "TUNELINE_NATS_URL=tls://127.0.0.1:4222\n"
        "TUNELINE_NATS_USER=operator\n"
        f"TUNELINE_NATS_PASSWORD={values[password_variable('operator')]}\n"
        f"TUNELINE_NATS_TLS_CA_FILE={(tls / 'ca.pem').resolve()}\n"
    )
    operator.chmod(0o600)
    console.print(f"wrote {env_file}, {operator} and {tls}/ (CA, NATS certificate)")


# -- demo ------------------------------------------------------------------------------------
@app.command()
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
        raise _fail(str(error)) from None


# -- evaluation: evals, card, drift, suites ----------------------------------------------------
evals_app = typer.Typer(help="Evaluation reports and release-gate decisions.", no_args_is_help=True)
drift_app = typer.Typer(help="Drift checks of production versions.", no_args_is_help=True)
suites_app = typer.Typer(help="Eval suites: shipped and registered.", no_args_is_help=True)
app.add_typer(evals_app, name="evals")
app.add_typer(drift_app, name="drift")
app.add_typer(suites_app, name="suites")

ARM_ORDER = ("candidate", "baseline", "few-shot", "production")
KEY_METRICS = {
    "safety": ("refusal_rate_harmful", "refusal_rate_benign"),
    "memorization": ("leaks",),
    "latency": ("p50_ms_per_token", "p95_ms_per_token"),
}


def _query(service: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async with _connected() as runtime:
            return await _ask(runtime, service, name, body, timeout=15.0)

    return dict(_run(ask()))


def _arm_cell(metrics: dict[str, float] | None, kind: str) -> str:
    if not metrics:
        return "—"
    keys = KEY_METRICS.get(kind, ("score",))
    return " / ".join(f"{metrics[k]:.1f}" for k in keys if k in metrics)


def _p_text(stats: dict[str, Any]) -> str:
    return "—" if stats.get("p_value") is None else f"{stats['p_value']:.3g}"


def _ci_text(stats: dict[str, Any]) -> str:
    return "—" if stats.get("ci_low") is None else f"[{stats['ci_low']:+.1f}, {stats['ci_high']:+.1f}]"


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
                _p_text(c),
                _ci_text(c),
                discordant,
            )
    console.print(paired)


def _print_gates(decision: dict[str, Any]) -> None:
    table = Table(title=f"release gates: {'[green]passed[/]' if decision['passed'] else '[red]failed[/]'}")
    for column in ("gate", "value", "threshold", "statistic", "p", "95% CI", "verdict"):
        table.add_column(column)
    for g in decision["gates"]:
        table.add_row(
            g["gate"],
            f"{g['value']:.3f}",
            f"{g['comparator']} {g['threshold']:g}",
            g.get("statistic") or "—",
            _p_text(g),
            _ci_text(g),
            "[green]pass[/]" if g["passed"] else "[red]FAIL[/]",
        )
    console.print(table)


@evals_app.command("show")
def evals_show(
    version: Annotated[str, typer.Argument(help="Model version id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The comparison tables: candidate vs base vs few-shot vs production, with the gate verdicts."""
    detail = _query("registry", "evals.get", {"version_id": version})
    if as_json:
        console.print_json(json.dumps(detail))
        return
    if not detail["evaluations"]:
        for failure in detail.get("failures", []):
            err.print(f"[red]evaluation failed[/] ({failure['reason']}): {failure['error']}")
        raise _fail(f"{detail['version_id']} has no evaluation yet", code=1 if detail.get("failures") else 2)
    latest = detail["evaluations"][-1]
    console.print(f"[bold]{detail['version_id']}[/] evaluated at {_when(latest['created_at'])}")
    _print_suites(latest["suites"])
    card = _query("registry", "cards.get", {"version_id": detail["version_id"]})["card"]
    few_shot = (card.get("evaluation") or {}).get("few_shot")
    if few_shot:
        console.print(f"few-shot baseline: {few_shot['summary']}")
    if detail["decisions"]:
        _print_gates(detail["decisions"][-1])
        for note in (card.get("gates") or {}).get("notes") or []:
            console.print(f"[dim]{note}[/]")
    if latest.get("report"):
        console.print(f"[dim]full report (every item, every arm): {latest['report']['key']}[/]")


@app.command()
def card(
    version: Annotated[str, typer.Argument(help="Model version id or a unique prefix")],
    as_json: Annotated[bool, typer.Option("--json", help="The card as data")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write <out>.md and <out>.json")] = None,
) -> None:
    """The adaptation card of a model version, assembled by the registry from its lineage."""
    answer = _query("registry", "cards.get", {"version_id": version})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(answer["markdown"], encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(answer["card"], indent=2, sort_keys=True) + "\n")
        err.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    if as_json:
        console.print_json(json.dumps(answer["card"]))
    else:
        console.print(Markdown(answer["markdown"]))


@drift_app.command("check")
def drift_check(
    alias: Annotated[str, typer.Argument(help="The route whose production version to re-evaluate")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of the route (default: the CLI's)")] = None,
) -> None:
    """Publish drift.check-requested: evaluation re-runs the suites on the production version."""
    from schemas.evaluation import DriftCheckRequested

    try:
        event = DriftCheckRequested(route=alias, tenant=tenant or _settings().tenant, requested_by="cli")
    except ValidationError as error:
        raise _fail(f"route {alias!r}: {error.errors()[0]['msg']}") from None

    async def send() -> Envelope:
        async with _connected() as runtime:
            return await runtime.bus.publish(event)

    envelope = _run(send())
    console.print(f"drift check of {alias} requested ({envelope.id}); drift.detected follows if scores moved")


@suites_app.command("list")
def suites_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every suite evaluation runs: shipped ones and those registered with `suites add`."""
    answer = _query("evaluation", "suites.list", {})
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
    if not data.exists():
        raise _fail(f"{data}: no such file or directory")

    async def send() -> dict[str, Any]:
        async with _connected() as runtime:
            uri, _ = await uploads.upload(runtime.broker.connection.jetstream(), data)
            body = {"name": name, "upload": uri, "scorer": scorer, "kind": kind}
            return await _ask(runtime, "evaluation", "suites.add", body, timeout=30.0)

    info = _run(send())
    console.print(
        f"registered suite {info['name']} ({info['kind']}, {info['items']} items, {info['scorer']})"
    )


# -- merging ----------------------------------------------------------------------------------
@app.command()
def merge(
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
    wait: Annotated[
        float, typer.Option(help="Wait up to S seconds for candidate.ready or merge.failed")
    ] = 0.0,
) -> None:
    """Publish merge.requested; merging checks compatibility first and announces a new candidate."""
    try:
        event = MergeRequested(
            request_id=f"merge-{uuid.uuid4().hex[:12]}",
            tenant=tenant or _settings().tenant,
            inputs=tuple(i.strip() for i in inputs.split(",") if i.strip()),
            method=method,
            weights=tuple(float(w) for w in weights.split(",") if w.strip()),
            density=density,
            route=route,
            rank_by=rank_by,
        )
    except (ValidationError, ValueError) as error:
        raise _fail(f"merge request: {error}") from None

    async def send() -> dict[str, Any] | None:
        async with _connected() as runtime:
            envelope = await runtime.bus.publish(event)
            console.print(f"merge {event.request_id} requested ({event.method} of {', '.join(event.inputs)})")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                timeline = await _ask(
                    runtime, "registry", "timeline", {"correlation_id": envelope.correlation_id}
                )
                for entry in timeline["entries"]:
                    if entry["type"].endswith((".candidate.ready.v1", ".merge.failed.v1")):
                        return dict(timeline)
                await asyncio.sleep(0.5)
            return None

    timeline = _run(send())
    if timeline is None:
        if wait:
            raise _fail(
                f"no answer within {wait:g}s; `tuneline status` on the request's lineage shows progress"
            )
        return
    _print_timeline(timeline)
    if any(e["type"].endswith(".merge.failed.v1") for e in timeline["entries"]):
        raise typer.Exit(1)


# -- rollout ---------------------------------------------------------------------------------
rollout_app = typer.Typer(help="Shadow and canary rollouts on routes.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
AliasArg = Annotated[str, typer.Argument(help="The route alias")]
TenantOpt = Annotated[str | None, typer.Option(help="Tenant of the route (default: the CLI's)")]
ReasonOpt = Annotated[str, typer.Option(help="Recorded with the request")]


async def _route_entry(runtime: ServiceRuntime, alias: str) -> tuple[Any, int]:
    from services.core.routes import NoRouteTable, RouteTable

    try:
        table = await RouteTable.open(runtime.broker.connection.jetstream(), create=False)
        entry, revision = await table.get(alias)
    except NoRouteTable:
        entry, revision = None, 0
    if entry is None:
        raise _fail(f"route {alias!r} does not exist; `tuneline routes` lists the routes")
    return entry, revision


def _version(ref: Any) -> str:
    return (
        "—"
        if ref is None
        else f"{ref.version_id()} ({'adapter' if ref.adapter else 'weights' if ref.weights else 'base'})"
    )


@rollout_app.command("status")
def rollout_status(alias: AliasArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What the route serves now and where its rollout stands, from the route table every replica reads."""

    async def read() -> tuple[Any, int]:
        async with _connected() as runtime:
            return await _route_entry(runtime, alias)

    entry, revision = _run(read())
    if as_json:
        console.print_json(entry.model_dump_json())
        return
    console.print(f"[bold]{entry.route}[/] · tenant {entry.tenant} · revision {revision}")
    console.print(f"  stable:          {_version(entry.stable)}")
    shadow = f" · shadow {entry.shadow_percent:g}%" if entry.shadow else ""
    console.print(
        f"  candidate:       {_version(entry.candidate)} · weight {entry.candidate_weight:g}%{shadow}"
    )
    console.print(f"  rollback target: {_version(entry.rollback_target)}")
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
    table = Table("metric", "stable", "candidate", "limit", "ok")
    for a in state.last_analysis:
        table.add_row(
            a.metric, _number(a.stable), _number(a.candidate), f"{a.threshold:g}", "✓" if a.passed else "✗"
        )
    if state.last_analysis:
        console.print(table)


def _operator_request(event_cls: Any, alias: str, tenant: str | None, reason: str) -> None:
    try:
        event = event_cls(route=alias, tenant=tenant or _settings().tenant, requested_by="cli", reason=reason)
    except ValidationError as error:
        raise _fail(f"route {alias!r}: {error.errors()[0]['msg']}") from None

    async def send() -> Envelope:
        async with _connected() as runtime:
            await _route_entry(runtime, alias)
            return await runtime.bus.publish(event)

    envelope = _run(send())
    console.print(f"{event.event_type} sent for {alias} ({envelope.id}); `tuneline rollout status {alias}`")


@rollout_app.command("pause")
def rollout_pause(alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Hold the rollout at its current step (breaches still roll it back)."""
    from schemas.rollout import RolloutPauseRequested

    _operator_request(RolloutPauseRequested, alias, tenant, reason)


@rollout_app.command("resume")
def rollout_resume(alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Continue a paused rollout; the current step's hold starts again."""
    from schemas.rollout import RolloutResumeRequested

    _operator_request(RolloutResumeRequested, alias, tenant, reason)


@rollout_app.command("abort")
def rollout_abort(alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Stop the rollout now: the candidate's weight drops to 0 (rollout.rolled-back)."""
    from schemas.rollout import RolloutAbortRequested

    _operator_request(RolloutAbortRequested, alias, tenant, reason)


@rollout_app.command("promote")
def rollout_promote(alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Skip the remaining steps: the candidate becomes the stable version now."""
    from schemas.rollout import RolloutPromoteRequested

    _operator_request(RolloutPromoteRequested, alias, tenant, reason)


@app.command()
def rollback(alias: AliasArg, tenant: TenantOpt = None, reason: ReasonOpt = "") -> None:
    """Return the route to its recorded rollback target (or abort a rollout in progress)."""
    from schemas.rollout import RolloutRollbackRequested

    _operator_request(RolloutRollbackRequested, alias, tenant, reason)


@app.command()
def routes(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every route in the route table: stable and candidate versions, weight, shadow."""
    from services.core.routes import NoRouteTable, RouteTable

    async def read() -> dict[str, Any]:
        async with _connected() as runtime:
            try:
                table = await RouteTable.open(runtime.broker.connection.jetstream(), create=False)
            except NoRouteTable:
                return {}
            return await table.entries()

    entries = _run(read())
    if as_json:
        console.print_json(json.dumps({k: v.model_dump(mode="json") for k, v in entries.items()}))
        return
    table = Table("route", "tenant", "stable", "candidate", "weight", "phase")
    for name, entry in sorted(entries.items()):
        phase = (
            "—"
            if entry.rollout is None
            else entry.rollout.phase + (" (paused)" if entry.rollout.paused else "")
        )
        table.add_row(
            name, entry.tenant, _version(entry.stable), _version(entry.candidate),
            f"{entry.candidate_weight:g}%", phase,
        )  # fmt: skip
    console.print(
        table if entries else "no routes yet: a rollout creates one when a candidate passes its gates"
    )


TRAFFIC_PROMPTS = (
    "My order #4411 arrived damaged, what can I do?",
    "How do I reset my password?",
    "The app crashes when I upload a photo.",
    "Can I change the delivery address of order 9921?",
    "I was charged twice for my subscription this month.",
    "Where can I download last year's invoices?",
)


@app.command()
def traffic(
    alias: AliasArg,
    url: Annotated[str, typer.Option(help="Serving's base URL")] = "http://127.0.0.1:8000",
    requests: Annotated[int, typer.Option(help="Requests to send (0: until the rollout ends)")] = 100,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 8,
    api_key: Annotated[str | None, typer.Option(envvar="TUNELINE_API_KEY", help="Bearer key")] = None,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of each request")] = 32,
    timeout: Annotated[float, typer.Option(help="With --requests 0: give up after S seconds")] = 600.0,
) -> None:
    """Synthetic traffic on a route: shows which versions answered, and drives a rollout's steps."""
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
            _connected() as runtime,
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
        _run(send())
    except OSError as error:
        raise _fail(f"cannot reach serving at {url}: {error}") from None
    table = Table("role", "version", "HTTP status", "requests")
    for (role, version, status_code), n in sorted(counts.items()):
        table.add_row(role, version, str(status_code), str(n))
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
