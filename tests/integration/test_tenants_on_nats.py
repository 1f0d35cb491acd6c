"""Tenants on a real nats-server with the secure configuration: `operator-acme` acts for acme
alone. Its events travel on acme's subjects, and its queries are the registry's tenant queries,
answered from acme's records only; the server refuses every other subject."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas.subjects import EVENTS_STREAM, event_subject, rpc_subject, tenant_rpc_subject
from services.core.messaging.nats_server import SecureNats
from services.core.messaging.rpc import RpcError, query
from services.core.security.access import ADMIN_USER
from tests.support.secure_nats import as_service, curation_as_itself, envelope

pytestmark = pytest.mark.integration


async def test_a_tenant_operator_acts_for_its_own_tenant_only(
    as_user: Any, secure: SecureNats, running: Any
) -> None:
    """`operator-acme` may send operator events for acme alone: on the bare subject or another
    tenant's the server refuses it; a payload or envelope naming another tenant on acme's subject
    is dead-lettered; its acme submission reaches curation as acme's."""
    from schemas.dataset import DatasetSubmitted
    from schemas.envelope import Envelope, new_event_id, now
    from schemas.subjects import DLQ_STREAM, tenant_subject
    from services.core.messaging.delivery import DLQ_REASON, HandlerContext
    from services.core.runtime import build_runtime
    from tests.conftest import wait_until
    from tests.support.events import submitted

    handled: list[tuple[str, str]] = []

    async def record(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        handled.append((event.submission_id, ctx.envelope.tenant))

    await curation_as_itself(as_user, secure, running, record)
    ajs = (await as_user(ADMIN_USER)).nc.jetstream()
    acme = build_runtime("cli", as_service(secure, "operator-acme"))
    await running(acme.app)
    assert acme.bus.tenant_scope == "acme"

    await acme.bus.publish(submitted(31, tenant="acme"))  # on tuneline.events.dataset.submitted.acme
    await wait_until(lambda: ("sub-31", "acme") in handled, timeout=10)
    with pytest.raises(ValueError, match="acts for tenant 'acme'"):
        await acme.bus.publish(submitted(32, tenant="globex"))

    # around the client's own check: the server and the consumers still hold the line
    session = await as_user("operator-acme")
    js = session.nc.jetstream()

    def raw(n: int, tenant: str) -> tuple[bytes, dict[str, str]]:
        event = submitted(n, tenant=tenant)
        envelope = Envelope(
            id=new_event_id(), source="tuneline/cli", type=event.ce_type(), time=now(),
            subject=event.entity_id(), correlation_id=f"c-{n}", tenant=tenant,
        )  # fmt: skip
        return event.model_dump_json().encode(), envelope.to_headers()

    for subject in (event_subject("dataset.submitted"), tenant_subject("dataset.submitted", "globex")):
        body, headers = raw(33, "globex")
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, body, headers=headers, timeout=2)
    body, headers = raw(34, "globex")  # another tenant's submission on acme's own subject
    await js.publish(tenant_subject("dataset.submitted", "acme"), body, headers=headers)
    await asyncio.sleep(0.3)
    violations = " ".join(session.violations())
    assert 'publish to "tuneline.events.dataset.submitted"' in violations
    assert 'publish to "tuneline.events.dataset.submitted.globex"' in violations

    sub = await ajs.pull_subscribe("tuneline.dlq.tuneline.events.dataset.submitted.acme", stream=DLQ_STREAM)
    [letter] = await sub.fetch(1, timeout=10)
    assert "which its sender may use for tenant 'acme' only" in letter.headers[DLQ_REASON]
    await asyncio.sleep(0.5)
    assert handled == [("sub-31", "acme")]


async def test_a_tenant_operator_asks_the_registry_about_its_own_tenant_only(
    as_user: Any, secure: SecureNats, running: Any, tmp_path: Path
) -> None:
    """Listings are acme's whatever acme asks for; another tenant's record answers exactly as a
    missing one; unscoped queries, other tenants' and the dead letters are refused by the server;
    and the CLI, run as `operator-acme`, lists acme's datasets without being told the tenant."""
    from services.core.runtime import build_runtime
    from services.registry.app import build_registry
    from services.registry.config import RegistrySettings
    from tests.conftest import wait_until
    from tests.support.events import submitted

    await as_user(ADMIN_USER)  # the streams exist
    registry = build_registry(
        RegistrySettings(core=as_service(secure, "registry"), database_url=f"sqlite:///{tmp_path / 'r.db'}")
    )
    await running(registry.app)
    platform = build_runtime("cli", as_service(secure, "operator"))
    await running(platform.app)
    await platform.bus.publish(submitted(51, tenant="acme"), tenant="acme")
    await platform.bus.publish(submitted(52, tenant="globex"), tenant="globex")

    async def everyone(name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await query(platform.broker, "registry", name, body)

    async def recorded() -> bool:
        listed = await everyone("datasets.list", {})
        return {d["submission_id"] for d in listed["datasets"]} >= {"sub-51", "sub-52"}

    await wait_until(recorded, timeout=15)
    acme = build_runtime("cli", as_service(secure, "operator-acme"))
    await running(acme.app)

    async def as_acme(name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await query(acme.broker, "registry", name, body, tenant="acme")

    for asked in ({}, {"tenant": "globex"}):
        listed = await as_acme("datasets.list", asked)
        assert {d["tenant"] for d in listed["datasets"]} == {"acme"}, asked  # the server is shared
        assert "sub-51" in {d["submission_id"] for d in listed["datasets"]}
    own = await as_acme("datasets.get", {"id": "sub-51"})
    assert own["summary"]["tenant"] == "acme"
    timeline = await as_acme("timeline", {"correlation_id": own["summary"]["correlation_id"]})
    assert [e["tenant"] for e in timeline["entries"]] == ["acme"]
    answers = []
    for ident in ("sub-52", "sub-99"):  # globex's, and one that does not exist
        with pytest.raises(RpcError) as refused:
            await as_acme("datasets.get", {"id": ident})
        answers.append((refused.value.code, str(refused.value).replace(ident, "<id>")))
    assert (
        answers[0] == answers[1] == ("not-found", "datasets.get: '<id>' is not among tenant 'acme''s records")
    )
    other = await everyone("datasets.get", {"id": "sub-52"})  # the platform operator sees every tenant
    assert other["summary"]["tenant"] == "globex"

    await _the_server_refuses_acme_the_unscoped_and_the_foreign(as_user)
    await _the_cli_as_acme_lists_acme_only(secure)


async def _the_server_refuses_acme_the_unscoped_and_the_foreign(as_user: Any) -> None:
    session = await as_user("operator-acme")
    assert session.nc is not None
    refused_subjects = (
        rpc_subject("registry", "datasets.list"),
        tenant_rpc_subject("registry", "datasets.list", "globex"),
        tenant_rpc_subject("registry", "dead-letters.list", "acme"),
    )
    for subject in refused_subjects:
        with pytest.raises(nats.errors.TimeoutError):
            await session.nc.request(subject, b"{}", timeout=1)
    await asyncio.sleep(0.3)
    violations = " ".join(session.violations())
    assert all(f'publish to "{subject}"' in violations for subject in refused_subjects), violations


async def _the_cli_as_acme_lists_acme_only(secure: SecureNats) -> None:
    env = {
        **os.environ,
        "TUNELINE_NATS_URL": secure.server.url,
        "TUNELINE_NATS_USER": "operator-acme",
        "TUNELINE_NATS_PASSWORD": secure.passwords["operator-acme"],
        "TUNELINE_NATS_TLS_CA_FILE": str(secure.tls.ca_file),
        "COLUMNS": "200",
    }
    cli = [sys.executable, "-m", "services.cli", "datasets", "list"]
    listed_by_cli = await asyncio.to_thread(subprocess.run, cli, env=env, capture_output=True, text=True)
    assert listed_by_cli.returncode == 0, listed_by_cli.stderr
    assert "sub-51" in listed_by_cli.stdout and "sub-52" not in listed_by_cli.stdout


async def test_only_the_platform_operator_may_report_an_incident(as_user: Any) -> None:
    """A critical incident rolls a route back at once: no tenant's operator may send one."""
    from schemas.subjects import tenant_subject

    operator = await as_user("operator")
    ack = await operator.nc.jetstream().publish(
        event_subject("incident.reported"), b"{}", headers=envelope("incident.reported", "i-1")
    )
    assert ack.stream == EVENTS_STREAM
    tenant = await as_user("operator-acme")
    for subject in (event_subject("incident.reported"), tenant_subject("incident.reported", "acme")):
        with pytest.raises(nats.errors.TimeoutError):
            await tenant.nc.jetstream().publish(
                subject, b"{}", headers=envelope("incident.reported", "i-2"), timeout=2
            )
    await asyncio.sleep(0.2)
    assert any("incident.reported" in v for v in tenant.violations())
