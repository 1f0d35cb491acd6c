"""The rollout controller's writes: a route change and the events it decided, exactly once.

The route table (a NATS KV bucket) and the event stream are two systems; a controller killed
between writing the route and publishing must not lose the decision, and one retried must not
double it. So the decided events go into the route's own outbox in the same compare-and-set
write, each under the envelope (and id) it will be published with, and leave the outbox once
published. Whoever writes the route next finds a non-empty outbox and publishes it first, under
the same ids: JetStream's duplicate window, and beyond it the registry's unique key, drop a copy
that did get out before the crash.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.catalogue import event_class_for_ce_type
from schemas.envelope import Envelope
from schemas.events import Event
from schemas.serving import PendingEvent, RouteEntry
from services.core.messaging.bus import EventBus
from services.core.messaging.routes import RouteConflict, RouteTable

CAS_ATTEMPTS = 20
Change = Callable[[RouteEntry | None], tuple[RouteEntry | None, list[Event]]]
Address = Callable[[list[Event]], list[Envelope]]


class RouteWriter:
    def __init__(self, table: RouteTable, bus: EventBus) -> None:
        self.table = table
        self.bus = bus

    async def change(self, route: str, change: Change, address: Address) -> list[Event]:
        """Read, change and compare-and-set the route, then publish what the change decided;
        retried when another writer got there first.

        The events go into the route's outbox in the same write, under the envelopes `address`
        gives them, and leave it once published: a controller killed in between leaves them there,
        and whoever writes the route next publishes them first, under the same ids (JetStream's
        duplicate window and the registry's unique key drop a second copy)."""
        for _ in range(CAS_ATTEMPTS):
            entry, revision = await self.table.get(route)
            if entry is not None and entry.outbox:
                await self._deliver(route, entry.outbox)  # a crashed writer's decisions first
                continue
            updated, events = change(entry)
            decided = list(zip(events, address(events), strict=True))
            if updated is not None:
                pending = tuple(
                    PendingEvent(envelope=env, payload=e.model_dump(mode="json")) for e, env in decided
                )
                try:
                    await self.table.put(updated.model_copy(update={"outbox": pending}), revision)
                except RouteConflict:
                    continue
            # nothing written (None): the cause stays unacked until these are out
            for event, envelope in decided:
                await self.bus.send(event, envelope)
            if updated is not None and decided:
                await self._clear(route, {envelope.id for _, envelope in decided})
            return events
        raise RuntimeError(f"route {route}: gave up after {CAS_ATTEMPTS} conflicting writes")

    async def _deliver(self, route: str, pending: tuple[PendingEvent, ...]) -> None:
        """Publish a left-over outbox's events, rebuilt from the entry, then clear them."""
        for item in pending:
            event = event_class_for_ce_type(item.envelope.type).model_validate(item.payload)
            await self.bus.send(event, item.envelope)
        await self._clear(route, {item.envelope.id for item in pending})

    async def _clear(self, route: str, sent: set[str]) -> None:
        """Take the published events out of the route's outbox (compare-and-set, retried)."""
        for _ in range(CAS_ATTEMPTS):
            entry, revision = await self.table.get(route)
            if entry is None or not any(item.envelope.id in sent for item in entry.outbox):
                return
            left = tuple(item for item in entry.outbox if item.envelope.id not in sent)
            try:
                await self.table.put(entry.model_copy(update={"outbox": left}), revision)
                return
            except RouteConflict:
                continue
        raise RuntimeError(f"route {route}: gave up clearing its outbox after {CAS_ATTEMPTS} conflicts")
