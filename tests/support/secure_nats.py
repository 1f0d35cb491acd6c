"""A real nats-server with infra/nats's configuration (TLS, one user per service and the tenant
operator `operator-acme`), as `tuneline up --secure` and the Helm chart run it, and sessions that
connect to it as any user. A pytest plugin (tests/conftest.py): `secure` is one server per module.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from schemas.subjects import EVENTS_STREAM, durable_name, event_subject
from services.core.messaging import uploads
from services.core.messaging.bus import ensure_streams
from services.core.messaging.nats_server import SecureNats, free_port, secure_nats
from services.core.messaging.routes import RouteTable
from services.core.security.access import ADMIN_USER, inbox_prefix, service_access
from services.core.settings import StreamSettings
from services.training.control import KvRunControl

TENANTS = ("acme",)  # the secure server also has a tenant operator, `operator-acme`
TABLE = service_access(TENANTS)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNats]:
    server = secure_nats(tmp_path_factory.mktemp("secure-nats"), port=free_port(), tenants=TENANTS)
    with server.server:
        yield server


class Session:
    """One user's connection, with the permission errors the server reported to it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def connect(self, secure: SecureNats, user: str) -> Session:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error))

        self.nc = await nats.connect(
            secure.server.url,
            user=user,
            password=secure.passwords[user],
            tls=ssl.create_default_context(cafile=str(secure.tls.ca_file)),
            inbox_prefix=inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


@pytest.fixture
async def as_user(secure: SecureNats, tmp_path: Path) -> AsyncIterator[Any]:
    sessions: list[Session] = []

    async def connect(user: str) -> Session:
        session = await Session().connect(secure, user)
        sessions.append(session)
        return session

    # what exists before anyone works: the streams, the buckets, one uploaded file
    admin = await connect(ADMIN_USER)
    assert admin.nc is not None
    js = admin.nc.jetstream()
    await ensure_streams(js, StreamSettings())
    await RouteTable.open(js)
    await KvRunControl.open(js)
    (tmp_path / "probe.jsonl").write_text('{"probe": 1}\n')
    uri, _ = await uploads.upload(js, tmp_path / "probe.jsonl")
    connect.upload_uri = uri  # type: ignore[attr-defined]
    connect.work = tmp_path  # type: ignore[attr-defined]
    yield connect
    for session in sessions:
        if session.nc is not None and not session.nc.is_closed:
            await session.nc.close()


def envelope(event_type: str, event_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": event_id, "ce-type": f"tuneline.{event_type}.v1", "ce-id": event_id}


def as_service(secure: SecureNats, user: str) -> Any:
    """Core settings that connect to the secure server as `user`, as `tuneline up --secure` does."""
    from pydantic import SecretStr

    from services.core.settings import CoreSettings, NatsSettings

    nats_settings = NatsSettings(
        url=secure.server.url,
        user=user,
        password=SecretStr(secure.passwords[user]),
        tls_ca_file=secure.tls.ca_file,
    )
    return CoreSettings(nats=nats_settings, stream=StreamSettings(manage=False))


async def curation_as_itself(as_user: Any, secure: SecureNats, running: Any, handler: Any) -> Any:
    """Curation's dataset.submitted consumer as the curation user, from an empty subject (the
    module's server is shared: earlier tests leave a durable and messages behind)."""
    from schemas.dataset import DatasetSubmitted
    from services.core.messaging.delivery import subscribe_event
    from services.core.runtime import build_runtime

    ajs = (await as_user(ADMIN_USER)).nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await ajs.delete_consumer(EVENTS_STREAM, durable_name("curation", "dataset.submitted"))
    await ajs.purge_stream(EVENTS_STREAM, subject=f"{event_subject('dataset.submitted')}.>")
    await ajs.purge_stream(EVENTS_STREAM, subject=event_subject("dataset.submitted"))
    curation = build_runtime("curation", as_service(secure, "curation"))
    subscribe_event(
        curation.broker, DatasetSubmitted, handler, service="curation", bus=curation.bus,
        delivery=curation.settings.delivery,
    )  # fmt: skip
    await running(curation.app)
    return curation
