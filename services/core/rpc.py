"""Client side of the services' request/reply queries (`tuneline.rpc.<service>.<query>`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from schemas.subjects import rpc_subject


class RpcError(RuntimeError):
    """A query that could not be answered; the message says why and what to do."""

    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


async def query(
    broker: NatsBroker, service: str, name: str, body: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    subject = rpc_subject(service, name)
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
