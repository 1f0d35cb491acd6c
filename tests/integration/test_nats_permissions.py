"""infra/nats on a real nats-server: TLS and one user per service, each able to do its job only.

The server runs infra/nats/nats-server.conf with the generated auth.conf, as `tuneline up --secure`
and the Helm chart do. The users' permissions come from services/core/security/access.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig

from schemas.subjects import EVENTS_STREAM, ROUTES_BUCKET, durable_name, event_subject
from services.core.messaging import uploads
from services.core.messaging.nats_server import SecureNats
from services.core.messaging.routes import RouteTable
from services.core.security.access import (
    ADMIN_USER,
    TRAINING_BUCKET,
    Access,
    inbox_prefix,
    publish_subject,
    publishers_of,
)
from services.training.control import BUCKET as RUN_CONTROL_BUCKET
from services.training.control import KvRunControl
from tests.support.secure_nats import TABLE, as_service, curation_as_itself, envelope

pytestmark = pytest.mark.integration


async def test_an_anonymous_client_or_a_wrong_password_is_refused(secure: SecureNats) -> None:
    context = ssl.create_default_context(cafile=str(secure.tls.ca_file))
    for credentials in ({}, {"user": "training", "password": "not-the-password"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                secure.server.url, tls=context, allow_reconnect=False, max_reconnect_attempts=0, **credentials
            )


def test_a_plaintext_client_is_refused(secure: SecureNats) -> None:
    """Speak the NATS protocol without TLS, with valid credentials: the server never says PONG."""
    with socket.create_connection(("127.0.0.1", secure.server.port), timeout=5) as sock:
        info = sock.recv(4096).decode()
        assert info.startswith("INFO ") and json.loads(info[5:])["tls_required"] is True
        connect = {
            "user": "training",
            "pass": secure.passwords["training"],
            "verbose": False,
            "tls_required": False,
        }
        sock.sendall(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"PONG" not in received  # the connection was closed, no session started


async def test_the_training_user_cannot_publish_gates_passed_but_publishes_its_own_events(
    as_user: Any,
) -> None:
    training = await as_user("training")
    js = training.nc.jetstream()
    ack = await js.publish(
        event_subject("training.started"), b"{}", headers=envelope("training.started", "t-1")
    )
    assert ack.stream == EVENTS_STREAM
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(
            event_subject("gates.passed"), b"{}", headers=envelope("gates.passed", "g-1"), timeout=2
        )
    await asyncio.sleep(0.2)
    assert any('publish to "tuneline.events.gates.passed"' in v for v in training.violations())
    admin = await as_user(ADMIN_USER)
    info = await admin.nc.jetstream().stream_info(
        EVENTS_STREAM, subjects_filter=event_subject("gates.passed")
    )
    assert not (info.state.subjects or {})  # nothing reached the stream


async def test_the_evaluation_user_cannot_take_trainings_work(as_user: Any) -> None:
    training, evaluation, curation = (
        await as_user("training"),
        await as_user("evaluation"),
        await as_user("curation"),
    )
    durable = durable_name("training", "dataset.approved")
    subject = event_subject("dataset.approved")
    tjs = training.nc.jetstream()
    await tjs.add_consumer(EVENTS_STREAM, ConsumerConfig(durable_name=durable, filter_subject=subject))
    await curation.nc.jetstream().publish(
        subject, b'{"work": 1}', headers=envelope("dataset.approved", "a-1")
    )

    # pulling from training's durable, reading the subject directly, or reading training's inbox
    ejs = evaluation.nc.jetstream()
    stolen = await ejs.pull_subscribe_bind(
        durable, EVENTS_STREAM, inbox_prefix=f"{inbox_prefix('evaluation')}.".encode()
    )
    with pytest.raises(nats.errors.TimeoutError):
        await stolen.fetch(1, timeout=2)
    await evaluation.nc.subscribe(subject)
    await evaluation.nc.subscribe(f"{inbox_prefix('training')}.>")
    await asyncio.sleep(0.3)
    violations = " ".join(evaluation.violations())  # nats-py lower-cases the server's message
    assert f"consumer.msg.next.{EVENTS_STREAM}.{durable}".lower() in violations
    assert f'subscription to "{subject}"' in violations
    assert f'subscription to "{inbox_prefix("training")}.>"'.lower() in violations

    # the work is still there, and training takes it
    mine = await tjs.pull_subscribe_bind(
        durable, EVENTS_STREAM, inbox_prefix=f"{inbox_prefix('training')}.".encode()
    )
    [message] = await mine.fetch(1, timeout=5)
    assert json.loads(message.data) == {"work": 1}
    await message.ack()
    assert training.violations() == []


async def pull_own_durables(js: Any, access: Access, user: str) -> None:
    own_inbox = f"{inbox_prefix(user)}.".encode()
    for event in access.consumes:
        durable = durable_name(access.service, event)
        await js.add_consumer(
            EVENTS_STREAM, ConsumerConfig(durable_name=durable, filter_subject=event_subject(event))
        )
        subscription = await js.pull_subscribe_bind(durable, EVENTS_STREAM, inbox_prefix=own_inbox)
        try:
            for message in await subscription.fetch(1, timeout=0.5):
                await message.ack()
        except nats.errors.TimeoutError:
            pass  # nothing to pull is fine; a refused pull shows up as a violation


async def use_buckets(js: Any, access: Access, user: str, as_user: Any) -> None:
    for kind, bucket, level in access.buckets:
        if bucket == ROUTES_BUCKET:
            table = await RouteTable.open(js, create=level != "read")
            await table.entries()
            if level == "write":
                await table.kv.put("probe", b"{}")
                await table.kv.delete("probe")  # readers skip a deleted route
        elif bucket == TRAINING_BUCKET:
            control = await KvRunControl.open(js)
            await control.claim_result(f"probe-{user}", {"ok": True})
            assert await control.result(f"probe-{user}") == {"ok": True}
        else:
            assert kind == "OBJ" and bucket == uploads.BUCKET
            fetched = await uploads.download(js, as_user.upload_uri, as_user.work / user)
            assert fetched.read_text() == '{"probe": 1}\n'
            if level == "write":
                (as_user.work / f"{user}.jsonl").write_text("{}\n")
                await uploads.upload(js, as_user.work / f"{user}.jsonl")


@pytest.mark.parametrize("user", sorted(TABLE))
async def test_each_user_can_do_its_job(as_user: Any, user: str) -> None:
    """Its durable consumers (create, pull, ack), its events (acked), its buckets, its queries."""
    access: Access = TABLE[user]
    session = await as_user(user)
    js = session.nc.jetstream()
    await pull_own_durables(js, access, user)
    for n, event in enumerate(access.publishes):
        subject = publish_subject(event, access.service)
        ack = await js.publish(subject, b"{}", headers=envelope(event, f"{user}-{n}"))
        assert ack.stream == EVENTS_STREAM
    await use_buckets(js, access, user, as_user)
    for target in access.calls:
        if target != "*":
            with pytest.raises(nats.errors.NoRespondersError):  # allowed to ask; nobody answers here
                await session.nc.request(f"tuneline.rpc.{target}.health", b"{}", timeout=1)
    await session.nc.flush()
    await asyncio.sleep(0.2)
    assert session.violations() == []


def test_the_bucket_names_of_the_access_table_are_the_services_own() -> None:
    assert TRAINING_BUCKET == RUN_CONTROL_BUCKET
    assert ("OBJ", uploads.BUCKET, "write") in TABLE["operator"].buckets


SERVICE_SETTINGS = {
    "registry": ("services.registry.config", "RegistrySettings"),
    "curation": ("services.curation.config", "CurationSettings"),
    "training": ("services.training.config", "TrainingSettings"),
    "merging": ("services.merging.config", "MergingSettings"),
    "evaluation": ("services.evaluation.config", "EvaluationSettings"),
    "rollout": ("services.rollout.config", "RolloutSettings"),
    "serving": ("services.serving.config", "ServingSettings"),
}


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` the rest."""
    wanted, given = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(given) > i
        if i >= len(given) or (token != "*" and token != given[i]):
            return False
    return len(wanted) == len(given)


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_the_access_table_matches_what_each_service_subscribes(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built from its real app: the durables it creates are the table's `consumes`, its pull
    subscriptions use its own inbox, and its core subscriptions are within its permissions."""
    import importlib

    monkeypatch.setenv("TUNELINE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("TUNELINE_REGISTRY_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.db'}")
    monkeypatch.setenv("TUNELINE_NATS_USER", service)
    monkeypatch.setenv("TUNELINE_NATS_PASSWORD", "unused")
    for name in SERVICE_SETTINGS:
        monkeypatch.setenv(f"TUNELINE_{name.upper()}_WORK_DIR", str(tmp_path / name))
    module, cls = SERVICE_SETTINGS[service]
    settings = getattr(importlib.import_module(module), cls)()
    app_module = importlib.import_module(f"services.{service}.app")
    if service == "serving":
        app = app_module.build_serving(settings).runtime.app
    else:
        app = app_module.create_app(settings)
    access = next(a for a in TABLE.values() if a.service == service)
    subscribers = list(app.broker.subscribers)
    pulled = [s for s in subscribers if s.extra_options.get("durable")]
    expected = {durable_name(service, event) for event in access.consumes}
    if access.reads_dead_letters:
        expected.add("registry_dead_letters")
    assert {s.extra_options["durable"] for s in pulled} == expected
    assert {s.extra_options["inbox_prefix"] for s in pulled} <= {f"{inbox_prefix(service)}.".encode()}
    allowed = access.subscribe_allow()
    for subscriber in subscribers:
        if subscriber not in pulled:
            subject = subscriber.subject.broker_address
            assert any(matches(pattern, subject) for pattern in allowed), (subject, allowed)


async def test_the_operator_cannot_delete_or_replace_a_services_durable_consumer(as_user: Any) -> None:
    """The attack: delete `curation_dataset_submitted` (curation stops) or recreate
    `rollout_gates_passed` with deliver-all (old gates.passed replayed). Both are refused."""
    from nats.js.api import DeliverPolicy

    rollout, operator = await as_user("rollout"), await as_user("operator")
    durable = durable_name("rollout", "gates.passed")
    subject = event_subject("gates.passed")
    config = ConsumerConfig(durable_name=durable, filter_subject=subject, deliver_policy=DeliverPolicy.NEW)
    admin = await as_user(ADMIN_USER)
    with contextlib.suppress(nats.js.errors.NotFoundError):  # another test of this module made one
        await admin.nc.jetstream().delete_consumer(EVENTS_STREAM, durable)
    await rollout.nc.jetstream().add_consumer(EVENTS_STREAM, config)

    ojs = operator.nc.jetstream()
    with pytest.raises(nats.errors.TimeoutError):
        await ojs.delete_consumer(EVENTS_STREAM, durable)
    replayer = ConsumerConfig(name=durable, filter_subject=subject, deliver_policy=DeliverPolicy.ALL)
    with pytest.raises(nats.errors.TimeoutError):
        await ojs.add_consumer(EVENTS_STREAM, replayer)  # CONSUMER.CREATE.<stream>.<name>
    with pytest.raises(nats.errors.TimeoutError):
        await ojs.add_consumer(EVENTS_STREAM, ConsumerConfig(durable_name=durable))  # DURABLE.CREATE
    # the unnamed-ephemeral subject with a service's name in the body: the server refuses it
    for body in ({"durable_name": durable}, {"name": durable}):
        request = {"stream_name": EVENTS_STREAM, "config": {**body, "deliver_policy": "all"}}
        reply = await operator.nc.request(
            f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}", json.dumps(request).encode(), timeout=2
        )
        answer = json.loads(reply.data)
        assert "error" in answer or answer.get("name") != durable, answer

    await asyncio.sleep(0.2)
    violations = " ".join(operator.violations())
    assert f"consumer.delete.{EVENTS_STREAM}.{durable}".lower() in violations
    info = await rollout.nc.jetstream().consumer_info(EVENTS_STREAM, durable)
    assert info.config.deliver_policy == DeliverPolicy.NEW  # untouched

    # what the operator needs still works: an ordered consumer tails the events
    seen: asyncio.Queue[Any] = asyncio.Queue()
    sub = await ojs.subscribe(f"{event_subject('>')}", ordered_consumer=True, cb=seen.put)
    await sub.unsubscribe()


async def test_a_service_may_only_publish_as_itself(as_user: Any, secure: SecureNats, running: Any) -> None:
    """The operator may publish dataset.submitted, but not claim to be curation while doing it: with
    one NATS user per service, a consumer dead-letters an event whose ce-source could not have sent
    it, and only what the sender's identity allows reaches the handler."""
    from schemas.dataset import DatasetSubmitted
    from schemas.subjects import DLQ_STREAM
    from services.core.messaging.bus import EventBus
    from services.core.messaging.delivery import DLQ_KIND, DLQ_REASON, HandlerContext
    from services.core.runtime import build_runtime
    from tests.conftest import wait_until
    from tests.support.events import submitted

    handled: list[str] = []

    async def record(event: DatasetSubmitted, ctx: HandlerContext) -> None:
        handled.append(ctx.envelope.source)

    curation = await curation_as_itself(as_user, secure, running, record)
    assert curation.bus.sources_bound  # per-user credentials: ce-source is checked
    ajs = (await as_user(ADMIN_USER)).nc.jetstream()
    operator = build_runtime("cli", as_service(secure, "operator"))
    await running(operator.app)
    await operator.bus.publish(submitted(1))
    forged = EventBus(operator.broker, "curation")  # the operator's connection, curation's name
    await forged.publish(submitted(2))
    await wait_until(lambda: handled == ["tuneline/cli"], timeout=10)

    sub = await ajs.pull_subscribe("tuneline.dlq.tuneline.events.dataset.submitted", stream=DLQ_STREAM)

    async def forged_letter() -> Any:
        try:
            letters = await sub.fetch(10, timeout=0.5)
        except nats.errors.TimeoutError:
            return None
        return next((m for m in letters if "forged source" in m.headers[DLQ_REASON]), None)

    letter = await wait_until(forged_letter, timeout=10)
    assert letter.headers[DLQ_KIND] == "invalid-envelope"
    assert "'tuneline/curation' may not publish dataset.submitted" in letter.headers[DLQ_REASON]
    await asyncio.sleep(0.5)
    assert handled == ["tuneline/cli"]


def test_secrets_are_created_readable_by_their_owner_only(secure: SecureNats) -> None:
    import stat

    secrets = secure.server.data_dir / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for path in [secrets / "passwords.json", *secrets.rglob("*key*.pem")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_write_secret_never_leaves_a_readable_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is created 0600: a reader racing the write finds it closed to others from the start."""
    import os
    import stat

    from services.core.security.pki import write_secret

    modes: list[int] = []
    real_write = os.fdopen

    def watching(fd: int, *args: Any, **kwargs: Any) -> Any:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))  # before a byte is written
        return real_write(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", watching)
    old = tmp_path / "operator.env"
    old.write_text("stale")
    old.chmod(0o644)
    write_secret(tmp_path / "new.env", "export A=1\n")
    write_secret(old, "export A=2\n")
    assert modes[0] == 0o600
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and old.read_text() == "export A=2\n"


async def test_an_event_with_two_publishers_tells_them_apart_by_subject(as_user: Any) -> None:
    """candidate.ready comes from training (the bare subject) and merging (`….candidate.ready.merging`),
    each allowed only its own: neither can pass for the other, so its ce-source is authenticated."""
    training, merging = await as_user("training"), await as_user("merging")
    bare, merged = event_subject("candidate.ready"), publish_subject("candidate.ready", "merging")
    assert merged == f"{bare}.merging" and publish_subject("candidate.ready", "training") == bare
    for session, own, other in ((training, bare, merged), (merging, merged, bare)):
        js = session.nc.jetstream()
        ack = await js.publish(own, b"{}", headers=envelope("candidate.ready", f"own-{own}"))
        assert ack.stream == EVENTS_STREAM
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(other, b"{}", headers=envelope("candidate.ready", f"other-{own}"), timeout=2)
    await asyncio.sleep(0.2)
    assert any(f'publish to "{merged}"' in v for v in training.violations())
    assert any(f'publish to "{bare}"' in v for v in merging.violations())
    assert publishers_of("candidate.ready") == {"tuneline/training"}
    assert publishers_of("candidate.ready", merged) == {"tuneline/merging"}
    assert publishers_of("drift.check-requested") == {"tuneline/cli"}
    assert publishers_of("drift.check-requested", f"{event_subject('drift.check-requested')}.evaluation") == {
        "tuneline/evaluation"
    }
