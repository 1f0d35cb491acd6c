"""Client side of the services' request/reply queries (`tuneline.rpc.<service>.<query>`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsMessage
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from schemas.events import validation_problems
from schemas.queries import QueryError, QuerySpec, Reply, Request
from schemas.subjects import rpc_subject, tenant_rpc_subject
from services.core.messaging.delivery import raw_body


class RpcError(RuntimeError):
    """A query that could not be answered; the message says why and what to do."""

    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


async def query(
    broker: NatsBroker,
    service: str,
    name: str,
    body: dict[str, Any],
    timeout: float = 5.0,
    *,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Ask `service` the query `name`; with `tenant`, for that tenant's records only."""
    subject = rpc_subject(service, name) if tenant is None else tenant_rpc_subject(service, name, tenant)
    try:
        reply = await broker.request(body, subject, timeout=timeout)
    except NoRespondersError:
        raise RpcError(
            f"no {service} service answers on {subject}; start the stack with `tuneline up` "
            "or check --nats-url"
        ) from None
    except (NatsTimeout, TimeoutError):
        raise RpcError(f"the {service} service did not answer {subject} within {timeout}s") from None
    answer = json.loads(reply.body) if reply.body else {}
    if isinstance(answer, dict) and "error" in answer and "code" in answer:
        raise RpcError(str(answer["error"]), code=str(answer["code"]))
    return dict(answer)


async def ask(
    broker: NatsBroker,
    spec: QuerySpec[Any, Reply],
    request: BaseModel,
    *,
    timeout: float = 5.0,
    tenant: str | None = None,
) -> Reply:
    """Ask `spec` with `request` (its request model) and return the reply validated into its
    reply model; with `tenant`, for that tenant's records only. A reply that is not what the
    contract says raises RpcError (code `bad-reply`) naming the fields."""
    if not isinstance(request, spec.request):
        raise TypeError(f"{spec.name} takes a {spec.request.__name__}, not a {type(request).__name__}")
    body = request.model_dump(mode="json", exclude_none=True)
    answer = await query(broker, spec.service, spec.name, body, timeout, tenant=tenant)
    try:
        return spec.reply.model_validate(answer)
    except ValidationError as error:
        raise RpcError(
            f"the {spec.service} service's reply to {spec.name} is not a {spec.reply.__name__}: "
            + "; ".join(validation_problems(error)),
            code="bad-reply",
        ) from None


def serve(
    broker: NatsBroker, service: str, name: str, fn: Callable[[Any], Awaitable[dict[str, Any]]]
) -> None:
    """Answer `tuneline.rpc.<service>.<name>` in a queue group: any replica of the service replies."""

    async def handle(body: Any) -> dict[str, Any]:
        return dict(await fn(body))

    handle.__name__ = f"rpc_{name.replace('.', '_').replace('-', '_')}"
    broker.subscriber(
        rpc_subject(service, name), queue=service, ack_policy=AckPolicy.MANUAL, title=f"{service}:rpc:{name}"
    )(handle)


def serve_query(
    broker: NatsBroker, spec: QuerySpec[Request, Reply], fn: Callable[[Request], Awaitable[Reply]]
) -> None:
    """Answer `spec` with `fn(request)`: the body is validated into the query's request model (a bad
    one is answered `bad-request` with the fields named), `fn` returns the reply model, and an
    `RpcError` it raises is answered with its code. The typed counterpart of `ask`."""

    async def typed(body: Any) -> dict[str, Any]:
        try:
            request = spec.request.model_validate(body if isinstance(body, dict) else {})
        except ValidationError as error:
            problems = "; ".join(validation_problems(error))
            return QueryError(error=f"bad {spec.name} request: {problems}", code="bad-request").model_dump()
        try:
            reply = await fn(request)
        except RpcError as error:
            return QueryError(error=str(error), code=error.code).model_dump()
        if not isinstance(reply, spec.reply):
            raise TypeError(f"{spec.name} answers a {spec.reply.__name__}, not a {type(reply).__name__}")
        return reply.model_dump(mode="json")

    serve(broker, spec.service, spec.name, typed)


def serve_for_tenants(
    broker: NatsBroker, service: str, name: str, fn: Callable[[Any, str], Awaitable[dict[str, Any]]]
) -> None:
    """Answer `tuneline.rpc.<service>.<name>.<tenant>` with `fn(body, tenant)`. The tenant is the
    subject's last token, which NATS permissions bind to the asking identity."""
    prefix = rpc_subject(service, name) + "."

    async def handle(msg: NatsMessage) -> dict[str, Any]:
        tenant = msg.raw_message.subject.removeprefix(prefix)
        try:
            body = json.loads(msg.body) if msg.body else {}
        except ValueError:
            body = None  # the query's contract refuses it with a reason
        return dict(await fn(body, tenant))

    handle.__name__ = f"rpc_{name.replace('.', '_').replace('-', '_')}_for_tenant"
    broker.subscriber(
        prefix + "*",
        queue=service,
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        title=f"{service}:rpc:{name}:tenant",
    )(handle)
