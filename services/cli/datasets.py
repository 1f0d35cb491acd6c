"""`tuneline submit` and `tuneline datasets`: uploads, submissions and audit reports."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from nats.errors import NoRespondersError
from pydantic import ValidationError
from rich.table import Table

from schemas.dataset import DatasetSubmitted, DataSource, SubmissionSpec
from schemas.envelope import Envelope
from schemas.events import validation_problems
from schemas.queries import DATASETS_GET, DATASETS_LIST, DatasetQuery, DatasetsQuery
from services.cli.session import Session, ask, console, fail, run_coro, validated, when
from services.core.formats import UnknownFormat, infer_format
from services.core.messaging import uploads
from services.core.messaging.rpc import RpcError
from services.core.security.access import tenant_of_user

datasets_app = typer.Typer(help="Submitted datasets and their audit reports.", no_args_is_help=True)


# -- submit / datasets -----------------------------------------------------------------------
def _load_spec(recipe: Path) -> SubmissionSpec:
    try:
        raw = yaml.safe_load(recipe.read_text())
    except FileNotFoundError:
        raise fail(f"{recipe}: no such file; pass the recipe with --recipe path/to/recipe.yaml") from None
    except yaml.YAMLError as error:
        raise fail(f"{recipe}: not valid YAML: {error}") from None
    spec: SubmissionSpec = validated(
        SubmissionSpec, raw if raw is not None else {}, f"{recipe} is not a valid recipe", "dataset.submitted"
    )
    return spec


def _source_format(path: Path) -> str:
    if str(path).startswith("artifact:"):  # already in the artifact store: nothing to upload
        suffix = Path(str(path)).suffix.lower()
        return {".parquet": "parquet", ".csv": "csv"}.get(suffix, "jsonl")
    if not path.exists():
        raise fail(f"{path}: no such file or directory")
    try:
        return infer_format(path)
    except UnknownFormat as error:
        raise fail(str(error)) from None


def submit(
    ctx: typer.Context,
    data: Annotated[
        list[Path], typer.Argument(help="Task data: .jsonl, .parquet, .csv or a saved datasets dir")
    ],
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Recipe YAML (task, route, training, …)")],
    eval_data: Annotated[
        list[Path] | None,
        typer.Option("--test", "--eval", help="The gates' held-out split (else curation draws one)"),
    ] = None,
    validation_data: Annotated[
        list[Path] | None,
        typer.Option("--validation", help="Early-stopping rows (else curation draws them from the data)"),
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
    session = Session.of(ctx)
    spec = _load_spec(recipe)
    overrides = {k: v for k, v in (("base_model", base_model), ("max_seq_len", max_seq_len)) if v is not None}
    if overrides:
        try:
            training = type(spec.training).model_validate({**spec.training.model_dump(), **overrides})
        except ValidationError as error:
            raise fail("; ".join(validation_problems(error))) from None
        spec = spec.model_copy(update={"training": training})
    files = [(path, _source_format(path), "train") for path in data]
    files += [(path, _source_format(path), "test") for path in eval_data or []]
    files += [(path, _source_format(path), "validation") for path in validation_data or []]
    settings = session.settings()
    # a tenant operator (`operator-<tenant>`) submits for its own tenant unless told otherwise
    who = tenant or spec.tenant or tenant_of_user(settings.nats.user) or settings.tenant
    if dry_run:
        console.print(f"[green]valid[/] recipe {recipe} and {len(files)} source(s) (not sent: --dry-run)")
        return

    async def send() -> tuple[Envelope, DatasetSubmitted]:
        async with session.connected() as runtime:
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
                raise fail(str(error)) from None
            except NoRespondersError:
                raise fail(
                    "no JetStream stream answers on tuneline.events.>; is `tuneline up` running?"
                ) from None
            return envelope, event

    envelope, event = run_coro(send())
    console.print(f"[green]submitted[/] {event.submission_id} ({len(files)} source(s) uploaded)")
    console.print(f"  correlation id: {envelope.correlation_id}")
    console.print(f"  audit report:   tuneline datasets show {event.submission_id}")
    if wait > 0:
        detail = run_coro(_dataset_detail(session, event.submission_id, wait=wait, until_decided=True))
        _print_dataset(detail, findings=30)


async def _dataset_detail(
    session: Session, ident: str, *, wait: float = 0.0, until_decided: bool = False
) -> dict[str, Any]:
    async with session.connected() as runtime:
        deadline = time.monotonic() + wait
        while True:
            try:
                detail = (await ask(runtime, DATASETS_GET, DatasetQuery(id=ident))).model_dump(mode="json")
            except RpcError:
                if time.monotonic() >= deadline:
                    raise
                detail = None
            decided = detail is not None and detail["summary"]["status"] != "submitted"
            if detail is not None and (decided or not until_decided or time.monotonic() >= deadline):
                return detail
            await asyncio.sleep(0.3)


def _audit_table(audit: list[dict[str, Any]]) -> Table:
    checks = Table("check", "verdict", "value", "threshold", "detail", title="audit")
    for c in audit:
        verdict = "[green]pass[/]" if c["passed"] else "[bold red]FAIL[/]"
        value = "" if c["value"] is None else f"{c['value']:g}"
        threshold = "" if c["threshold"] is None else f"{c['threshold']:g}"
        checks.add_row(c["name"], verdict, value, threshold, c["detail"])
    return checks


def _detail_tables(detail: dict[str, Any], extra: dict[str, Any]) -> list[Table]:
    """The sources, the training mix and the curated splits, each when the dataset has them."""
    tables = []
    if extra.get("sources"):
        table = Table("source", "format", "split", "rows", "kept", "sha256", title="sources")
        for src in extra["sources"]:
            row = (
                src["uri"],
                src["format"],
                src["split"],
                str(src["rows"]),
                str(src["kept"]),
                src["sha256"][:12],
            )
            table.add_row(*row)
        tables.append(table)
    if extra.get("mix"):
        table = Table("component", "ratio", "rows", "available", title="training mix")
        for m in extra["mix"]:
            table.add_row(m["name"], f"{m['ratio']:.0%}", str(m["rows"]), str(m["available"]))
        tables.append(table)
    if detail.get("splits"):
        table = Table("split", "rows", "artifact", title="curated splits")
        for sp in detail["splits"]:
            table.add_row(sp["name"], str(sp["rows"]), sp["artifact"]["key"])
        tables.append(table)
    return tables


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
    console.print(_audit_table(detail.get("audit") or []))
    for table in _detail_tables(detail, extra):
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
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(help="Submission id, dataset id or a dataset id prefix")],
    findings: Annotated[int, typer.Option(help="Show up to N findings")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print a dataset's audit report as tables: checks, sources, mix, splits, findings."""
    detail = run_coro(_dataset_detail(Session.of(ctx), ident))
    if as_json:
        console.print_json(json.dumps(detail))
        return
    _print_dataset(detail, findings=findings)


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's")] = None,
    status: Annotated[str | None, typer.Option(help="submitted | approved | rejected")] = None,
    limit: Annotated[int, typer.Option(help="At most N, newest first")] = 100,
) -> None:
    """List submissions and their curation verdicts, newest first."""
    session = Session.of(ctx)

    async def fetch() -> dict[str, Any]:
        async with session.connected() as runtime:
            request = DatasetsQuery(tenant=tenant, status=status, limit=limit)
            return (await ask(runtime, DATASETS_LIST, request)).model_dump(mode="json")

    table = Table("submission", "status", "dataset id", "task", "route", "tenant", "updated")
    for d in run_coro(fetch())["datasets"]:
        table.add_row(
            d["submission_id"],
            d["status"],
            (d["dataset_id"] or "")[:16],
            d["task"],
            d["route"] or "",
            d["tenant"],
            when(d["updated_at"]),
        )
    console.print(table)
