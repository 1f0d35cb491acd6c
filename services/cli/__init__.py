"""The operator CLI, `tuneline`: run the embedded stack, publish and watch events, query the registry.

The CLI needs one address: the NATS URL (`--nats-url` or TUNELINE_NATS_URL). This module only
assembles the tree: one module per command group, registered in the order `--help` lists them
(docs/cli.md is that tree, checked byte for byte by a test).
"""

from __future__ import annotations

import typer

from services.cli import datasets, evals, events, generated, health, lineage, merge, rollout, runs, stack
from services.cli.session import NatsUrl, Session

app = typer.Typer(
    help="tuneline: curate, train, evaluate, gate and roll out adapted language models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.callback()
def _root(ctx: typer.Context, nats_url: NatsUrl = None) -> None:
    ctx.obj = Session(nats_url=nats_url)


for command in (
    stack.up,
    lineage.status,
    datasets.submit,
    runs.watch,
    runs.cancel,
    stack.demo,
    lineage.card,
    merge.merge,
    rollout.rollback,
    health.alerts,
    rollout.traffic,
):
    app.command()(command)

for name, group in (
    ("datasets", datasets.datasets_app),
    ("events", events.events_app),
    ("models", lineage.models_app),
    ("schemas", generated.schemas_app),
    ("dlq", events.dlq_app),
    ("runs", runs.runs_app),
    ("infra", generated.infra_app),
    ("evals", evals.evals_app),
    ("drift", evals.drift_app),
    ("suites", evals.suites_app),
    ("rollout", rollout.rollout_app),
    ("routes", health.routes_app),
    ("incident", health.incident_app),
):
    app.add_typer(group, name=name)


def main() -> None:
    app()


__all__ = ["app", "main"]
