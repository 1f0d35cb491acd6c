"""Run control shared by every training replica: cancel requests and the one result of a run.

A NATS KV bucket, so a cancel handled by one replica reaches the replica that runs the job, and
`create` (which fails when the key exists) makes the first finished attempt the only winner.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from schemas.subjects import TRAINING_BUCKET

BUCKET = TRAINING_BUCKET


class RunControl(Protocol):
    async def request_cancel(self, run_id: str, reason: str) -> None: ...
    async def cancel_reason(self, run_id: str) -> str | None: ...
    async def claim_result(self, run_id: str, result: dict[str, Any]) -> bool: ...
    async def result(self, run_id: str) -> dict[str, Any] | None: ...


class KvRunControl:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: Any, *, replicas: int = 1) -> KvRunControl:
        from nats.js.api import KeyValueConfig

        try:
            kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET, history=1, replicas=replicas, description="tuneline run control"
                )
            )
        return cls(kv)

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def request_cancel(self, run_id: str, reason: str) -> None:
        await self.kv.put(f"{run_id}.cancel", json.dumps({"reason": reason}).encode())

    async def cancel_reason(self, run_id: str) -> str | None:
        value = await self._get(f"{run_id}.cancel")
        return None if value is None else str(json.loads(value).get("reason", ""))

    async def claim_result(self, run_id: str, result: dict[str, Any]) -> bool:
        try:
            await self.kv.create(f"{run_id}.result", json.dumps(result).encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def result(self, run_id: str) -> dict[str, Any] | None:
        value = await self._get(f"{run_id}.result")
        return None if value is None else dict(json.loads(value))


class MemoryRunControl:
    """The same contract in memory, for tests of the handler logic without a server."""

    def __init__(self) -> None:
        self.cancels: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}

    async def request_cancel(self, run_id: str, reason: str) -> None:
        self.cancels[run_id] = reason

    async def cancel_reason(self, run_id: str) -> str | None:
        return self.cancels.get(run_id)

    async def claim_result(self, run_id: str, result: dict[str, Any]) -> bool:
        if run_id in self.results:
            return False
        self.results[run_id] = result
        return True

    async def result(self, run_id: str) -> dict[str, Any] | None:
        return self.results.get(run_id)
