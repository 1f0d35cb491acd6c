"""Read what is really in the TUNELINE stream: every event, in order, with its envelope headers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from schemas.subjects import EVENTS_STREAM


@dataclass
class StoredEvent:
    type: str
    id: str
    subject: str
    payload: dict[str, Any]


async def stored_events(js: Any, event_type: str | None = None) -> list[StoredEvent]:
    info = await js.stream_info(EVENTS_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq)
        except NotFoundError:
            continue
        headers = msg.headers or {}
        kind = headers.get("ce-type", "").removeprefix("tuneline.").removesuffix(".v1")
        if event_type is None or kind == event_type:
            found.append(
                StoredEvent(
                    kind, headers.get("ce-id", ""), headers.get("ce-subject", ""), json.loads(msg.data)
                )
            )
    return found


async def first_event(runtime: Any, event_type: str, timeout: float = 90, **match: Any) -> StoredEvent:
    """The first stored event of the type whose payload has the given top-level values."""
    from tests.conftest import wait_until

    js = runtime.broker.connection.jetstream()

    async def found() -> StoredEvent | None:
        for event in await stored_events(js, event_type):
            if all(event.payload.get(k) == v for k, v in match.items()):
                return event
        return None

    return await wait_until(found, timeout=timeout, interval=0.2)


async def gate_verdict(runtime: Any, route: str, timeout: float = 180) -> StoredEvent:
    """The route's first gate verdict, passed or failed."""
    from tests.conftest import wait_until

    js = runtime.broker.connection.jetstream()

    async def found() -> StoredEvent | None:
        for event in await stored_events(js):
            if event.type in ("gates.passed", "gates.failed") and event.payload.get("route") == route:
                return event
        return None

    found_event: StoredEvent = await wait_until(found, timeout=timeout, interval=0.5)
    return found_event
