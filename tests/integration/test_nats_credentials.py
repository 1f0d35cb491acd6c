"""Every credential kind the services accept, against a real nats-server with TLS required:
user/password, token, NKey seed file and a decentralized-JWT `.creds` file. Each connects through
the services' own broker factory, creates the streams and publishes an event JetStream acks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nkeys
import pytest
from pydantic import SecretStr

from services.core.messaging.bus import ensure_streams
from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.runtime import build_runtime
from services.core.security.pki import make_server_tls
from services.core.settings import CoreSettings, NatsSettings
from tests.support.events import submitted
from tests.support.nats_auth import keypair, operator_mode

pytestmark = pytest.mark.integration


def server(tmp_path: Path, auth: str) -> tuple[EmbeddedNats, Path]:
    tls = make_server_tls(tmp_path / "tls")
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"jetstream {{ store_dir: {json.dumps(str(tmp_path / 'js'))} }}\n"
        f"tls {{ cert_file: {json.dumps(str(tls.cert_file))}, key_file: {json.dumps(str(tls.key_file))} }}\n"
        + auth
    )
    return EmbeddedNats(tmp_path, port=free_port(), config=conf, tls=True), tls.ca_file


async def publishes(nats: NatsSettings) -> str:
    """Connect as a service would, create the streams, publish; the stream's acked sequence."""
    runtime = build_runtime("curation", CoreSettings(nats=nats), max_reconnect_attempts=0)
    await runtime.broker.connect()
    try:
        await ensure_streams(runtime.broker.connection.jetstream(), runtime.settings.stream)
        envelope = await runtime.bus.publish(submitted())
        return envelope.id
    finally:
        await runtime.broker.stop()
        runtime.tracer_provider.shutdown()


async def refused(nats: NatsSettings) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization|authentication|nkey|signature"):
        await publishes(nats)


@pytest.mark.parametrize("kind", ["password", "token", "nkey", "creds"])
async def test_each_credential_kind_connects_over_tls_and_a_wrong_one_is_refused(
    kind: str, tmp_path: Path
) -> None:
    good: dict[str, Any]
    bad: dict[str, Any]
    if kind == "password":
        auth = 'authorization { users: [ { user: "curation", password: "t0psecret" } ] }\n'
        good = {"user": "curation", "password": SecretStr("t0psecret")}
        bad = {"user": "curation", "password": SecretStr("guess")}
    elif kind == "token":
        auth = 'authorization { token: "s3cr3t-token" }\n'
        good, bad = {"token": SecretStr("s3cr3t-token")}, {"token": SecretStr("nope")}
    elif kind == "nkey":
        user, stranger = keypair(nkeys.PREFIX_BYTE_USER), keypair(nkeys.PREFIX_BYTE_USER)
        auth = f'authorization {{ users: [ {{ nkey: "{user.public_key.decode()}" }} ] }}\n'
        (tmp_path / "user.nk").write_bytes(user.seed)
        (tmp_path / "stranger.nk").write_bytes(stranger.seed)
        good, bad = {"nkey_seed_file": tmp_path / "user.nk"}, {"nkey_seed_file": tmp_path / "stranger.nk"}
    else:
        auth, creds = operator_mode(tmp_path, "curation")
        _, foreign = (
            operator_mode(tmp_path / "other", "curation")
            if (tmp_path / "other").mkdir() is None
            else ("", None)
        )
        good, bad = {"creds_file": creds}, {"creds_file": foreign}
    nats_server, ca = server(tmp_path, auth)
    with nats_server:
        url = nats_server.url
        assert url.startswith("tls://")
        event_id = await publishes(NatsSettings(url=url, tls_ca_file=ca, **good))
        assert event_id
        await refused(NatsSettings(url=url, tls_ca_file=ca, **bad))
        await refused(NatsSettings(url=url, tls_ca_file=ca))  # no credentials at all
