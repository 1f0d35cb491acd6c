"""The route table: the `tuneline_routes` KV bucket that rollout writes and every serving replica watches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import ValidationError

from schemas.serving import RouteEntry
from schemas.subjects import ROUTES_BUCKET

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

logger = logging.getLogger(__name__)

RouteListener = Callable[[str, RouteEntry | None, int], Awaitable[None] | None]


class NoRouteTable(LookupError):
    pass


class RouteConflict(Exception):
    """Someone else wrote the route since it was read; read it again and retry."""


def decode(route: str, value: bytes | None) -> RouteEntry | None:
    """A stored entry, or None for a deleted key. Fields a newer writer added are ignored."""
    if not value:
        return None
    try:
        return RouteEntry.model_validate_json(value)
    except ValidationError:
        data = json.loads(value)
        known = {k: v for k, v in data.items() if k in RouteEntry.model_fields}
        logger.warning("route %s: ignoring unknown fields %s", route, sorted(set(data) - set(known)))
        return RouteEntry.model_validate(known)


class RouteTable:
    """Read, compare-and-set and watch route entries. Writes are CAS on the KV revision."""

    def __init__(self, kv: KeyValue | None = None) -> None:
        self._kv = kv

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the route table is not open yet (RouteTable.open at startup)")
        return self._kv

    def attach(self, other: RouteTable) -> None:
        """Take over an opened table's bucket: for services that build handlers before connecting."""
        self._kv = other.kv

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, replicas: int = 1, history: int = 20, create: bool = True
    ) -> RouteTable:
        """The bucket, created on first use (history keeps the last route changes for forensics).

        `create=False` (readers such as the CLI): a missing bucket raises `NoRouteTable`.
        """
        try:
            kv = await js.key_value(ROUTES_BUCKET)
        except BucketNotFoundError:
            if not create:
                raise NoRouteTable(f"no route table ({ROUTES_BUCKET}) yet: no rollout has run") from None
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=ROUTES_BUCKET,
                    history=history,
                    storage=StorageType.FILE,
                    replicas=replicas,
                    description="tuneline routes: alias → stable/candidate versions (rollout writes)",
                )
            )
        return cls(kv)

    async def get(self, route: str) -> tuple[RouteEntry | None, int]:
        """(entry, revision); (None, 0) when the route was never written or was deleted."""
        try:
            found = await self.kv.get(route)
        except KeyNotFoundError:
            return None, 0
        return decode(route, found.value), int(found.revision or 0)

    async def put(self, entry: RouteEntry, revision: int) -> int:
        """Write `entry` if the route is still at `revision` (0: it must not exist); the new revision."""
        entry = entry.model_copy(update={"updated_at": time.time()})
        data = entry.model_dump_json().encode()
        try:
            if revision == 0:
                return int(await self.kv.create(entry.route, data))
            return int(await self.kv.update(entry.route, data, last=revision))
        except KeyWrongLastSequenceError as error:
            raise RouteConflict(f"route {entry.route} changed since revision {revision}") from error
        except Exception as error:  # nats-py raises a plain APIError for "key exists" on create
            if "wrong last sequence" in str(error).lower() or "key exists" in str(error).lower():
                raise RouteConflict(f"route {entry.route} was written by someone else") from error
            raise

    async def entries(self) -> dict[str, RouteEntry]:
        found: dict[str, RouteEntry] = {}
        watcher = await self.kv.watchall(ignore_deletes=True)
        try:
            async for update in watcher:
                if update is None:
                    break
                entry = decode(update.key, update.value)
                if entry is not None:
                    found[update.key] = entry
                if update.delta == 0:
                    break
        finally:
            await watcher.stop()
        return found

    async def watch(self, listener: RouteListener, ready: asyncio.Event | None = None) -> None:
        """Call `listener(route, entry, revision)` for every current entry, then for every change.

        Runs until cancelled; `ready` is set once the current entries have been delivered.
        """
        watcher = await self.kv.watchall()
        try:
            async for update in watcher:
                if update is None:
                    if ready is not None:
                        ready.set()
                    continue
                try:
                    entry = None if update.operation else decode(update.key, update.value)
                except ValidationError as error:
                    logger.error("route %s revision %s is unreadable: %s", update.key, update.revision, error)
                    continue
                result = listener(update.key, entry, int(update.revision or 0))
                if result is not None:
                    await result
                if ready is not None and update.delta == 0:
                    ready.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
