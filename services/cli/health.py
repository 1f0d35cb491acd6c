"""Route health: `tuneline routes [health [<alias>]]` and `tuneline alerts`, from the route table
every replica reads (the guardian keeps its watch there) and the event stream."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from schemas.serving import RouteEntry
from services.cli.rollout import version_label
from services.cli.session import Session, console, fail, run_coro
from services.core.route_health import health_rows

routes_app = typer.Typer(
    help="The route table, and each production route's health against its objectives.",
    invoke_without_command=True,
)


async def _entries(session: Session) -> dict[str, RouteEntry]:
    from services.core.messaging.routes import NoRouteTable, RouteTable

    async with session.connected() as runtime:
        try:
            table = await RouteTable.open(runtime.broker.connection.jetstream(), create=False)
        except NoRouteTable:
            return {}
        return await table.entries()


@routes_app.callback()
def routes(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every route in the route table: stable and candidate versions, weight, shadow."""
    if ctx.invoked_subcommand is not None:
        return
    entries = run_coro(_entries(Session.of(ctx)))
    if as_json:
        console.print_json(json.dumps({k: v.model_dump(mode="json") for k, v in entries.items()}))
        return
    table = Table("route", "tenant", "stable", "candidate", "weight", "phase", "alerts")
    for name, entry in sorted(entries.items()):
        phase = (
            "—"
            if entry.rollout is None
            else entry.rollout.phase + (" (paused)" if entry.rollout.paused else "")
        )
        alerts = ", ".join(entry.guard.open_alerts) if entry.guard and entry.guard.open_alerts else "—"
        table.add_row(
            name, entry.tenant, version_label(entry.stable), version_label(entry.candidate),
            f"{entry.candidate_weight:g}%", phase, alerts,
        )  # fmt: skip
    console.print(
        table if entries else "no routes yet: a rollout creates one when a candidate passes its gates"
    )


@routes_app.command("health")
def health(
    ctx: typer.Context,
    alias: Annotated[str | None, typer.Argument(help="One route (default: every production route)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each production route against its objectives: the rate now, the error budget left, alerts open."""
    entries = run_coro(_entries(Session.of(ctx)))
    chosen = {k: v for k, v in entries.items() if alias is None or k == alias}
    report = {name: health_rows(entry) for name, entry in sorted(chosen.items())}
    if as_json:
        console.print_json(json.dumps(report))
        return
    if alias is not None and alias not in entries:
        console.print(f"[red]route {alias!r} does not exist; `tuneline routes` lists the routes[/]")
        raise typer.Exit(1)
    for name, rows in report.items():
        entry = chosen[name]
        if not rows:
            console.print(f"[bold]{name}[/]: not watched (no promoted version with objectives yet)")
            continue
        assert entry.guard is not None and entry.objectives is not None
        console.print(
            f"[bold]{name}[/] · {entry.guard.version_id} · a statistic alarms at "
            f"{entry.objectives.arl_days:g} days of windows (Shiryaev-Roberts: a false alarm at most "
            "that rarely on average)"
        )
        table = Table(
            "objective",
            "means",
            "rate now",
            "events / requests",
            "budget left",
            "statistic",
            "detects",
            "alert",
        )
        for row in rows:
            rate = "—" if row["rate"] is None else f"{row['rate']:.4g}"
            budget = "—" if row["budget_left"] is None else f"{100 * row['budget_left']:.0f}%"
            alert = f"[red]{row['alert']['severity']} → {row['action']}[/]" if row["alert"] else "—"
            table.add_row(
                row["objective"], row["meaning"], rate, f"{row['events']} / {row['requests']}",
                budget, f"{row['statistic']:.3g}", _detects(row["detects"]), alert,
            )  # fmt: skip
        console.print(table)


def _detects(found: dict[str, Any] | None) -> str:
    """The breach the objective's watch states it catches at the route's traffic, and how soon."""
    if not found:
        return "—"
    if found["windows"] is None:
        return f"{found['rate']:.3g}: not at this traffic"
    return f"{found['rate']:.3g} in ~{found['windows']} windows ({found['seconds']:.0f} s)"


def alerts(
    ctx: typer.Context,
    history: Annotated[int, typer.Option(help="Also list the last N raised/resolved alert events")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alerts open on production routes (the guardian's), and optionally the recent alert events."""
    session = Session.of(ctx)
    entries = run_coro(_entries(session))
    open_alerts = [
        {"route": name, **alert.model_dump(mode="json")}
        for name, entry in sorted(entries.items())
        if entry.guard is not None
        for alert in entry.guard.open_alerts.values()
    ]
    events = run_coro(_alert_events(session, history)) if history else []
    if as_json:
        console.print_json(json.dumps({"open": open_alerts, "events": events}))
        return
    if not open_alerts:
        console.print("no alerts open")
    for alert in open_alerts:
        console.print(
            f"[red]{alert['severity']}[/] {alert['route']}: {alert['objective']} {alert['value']:.4g} "
            f"against {alert['bound']:.4g} ({alert['events']} events in {alert['requests']} requests) "
            f"→ {alert['action']} · {alert['version_id']}"
        )
    for event in events:
        console.print(f"  {event['type']:22} {event['route']}: {event['objective']} · {event['version_id']}")


async def _alert_events(session: Session, last: int) -> list[dict[str, Any]]:
    """The last `last` route.alert-* events in the stream."""
    from nats.js.api import DeliverPolicy

    found: list[dict[str, Any]] = []
    async with session.connected() as runtime:
        js = runtime.broker.connection.jetstream()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sub = await js.subscribe(
            "tuneline.events.route.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=queue.put
        )
        try:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    break
                data = json.loads(msg.data)
                payload = data.get("data", data)
                found.append(
                    {
                        "type": msg.subject.split(".")[2] + "." + msg.subject.split(".")[3],
                        "route": payload.get("route"),
                        "objective": payload.get("alert", {}).get("objective"),
                        "version_id": payload.get("alert", {}).get("version_id"),
                    }
                )
        finally:
            await sub.unsubscribe()
    return found[-last:]


incident_app = typer.Typer(help="Incidents on routes (the platform operator only).", no_args_is_help=True)


@incident_app.command("report")
def incident_report(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The route alias")],
    reason: Annotated[str, typer.Option(help="What happened, for the record")],
    severity: Annotated[str, typer.Option(help="info | warning | critical")] = "critical",
    tenant: Annotated[str | None, typer.Option(help="Tenant of the route (default: the route's)")] = None,
) -> None:
    """Report an incident: a critical one rolls the route back at once when its objectives say so
    (`incident_action: rollback`, the default)."""
    from pydantic import ValidationError

    from schemas.slo import IncidentReported

    session = Session.of(ctx)

    def build(route_tenant: str) -> IncidentReported:
        try:
            return IncidentReported(
                route=alias, tenant=tenant or route_tenant, severity=severity,
                reason=reason, reported_by="cli",
            )  # fmt: skip
        except ValidationError as error:
            problem = error.errors()[0]
            raise fail(
                f"incident on {alias!r}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}"
            ) from None

    async def send() -> str:
        entries = await _entries(session)
        if alias not in entries:
            raise fail(f"route {alias!r} does not exist; `tuneline routes` lists the routes")
        event = build(entries[alias].tenant)  # the route's own tenant unless --tenant says otherwise
        async with session.connected() as runtime:
            return (await runtime.bus.publish(event)).id

    sent = run_coro(send())
    console.print(
        f"incident.reported ({severity}) sent for {alias} ({sent}); `tuneline rollout status {alias}`"
    )


@routes_app.command("retrain")
def retrain(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The route alias")],
    reason: Annotated[str, typer.Option(help="Why, for the record")],
    tenant: Annotated[str | None, typer.Option(help="Tenant of the route (default: the route's)")] = None,
) -> None:
    """Publish retrain.requested: curation resubmits the route's last approved dataset with its
    recipe, and training starts the next generation (what an objective with `action: retrain` does)."""
    from schemas.slo import RetrainRequested

    session = Session.of(ctx)

    async def send() -> str:
        entries = await _entries(session)
        if alias not in entries:
            raise fail(f"route {alias!r} does not exist; `tuneline routes` lists the routes")
        entry = entries[alias]
        event = RetrainRequested(
            route=alias, tenant=tenant or entry.tenant, trigger="operator", reason=reason, requested_by="cli",
            version_id=entry.stable.version_id() if entry.stable is not None else None,
        )  # fmt: skip
        async with session.connected() as runtime:
            return (await runtime.bus.publish(event)).id

    sent = run_coro(send())
    console.print(f"retrain of {alias} requested ({sent}); `tuneline datasets list` shows the resubmission")
