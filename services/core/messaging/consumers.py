"""A service's durable consumers stay as the service declared them: checked at start and on a timer.

A durable's configuration is the service's, not whoever last wrote it. If a durable vanished (an
admin deleted it, a stream was restored without it) nothing else would ever recreate it: the
service would look healthy and do nothing. If it was replaced with another configuration (say,
deliver-all), old events would be replayed. So the guard:
- reads every durable's state at start and every `interval_s`, remembering its ack floor;
- recreates a missing durable from the stream sequence after the last ack floor it saw, so
  nothing acknowledged is replayed and nothing unacknowledged is lost;
- deletes and recreates one whose filter or delivery settings differ, from the same sequence;
- reports what it found to the health query: a service whose durable is missing or wrong is
  `unhealthy` until the guard has restored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerInfo

log = logging.getLogger(__name__)
# with the filter subjects, what decides which messages a durable delivers and how often
ENFORCED = ("ack_policy", "ack_wait", "max_deliver", "max_ack_pending")


@dataclass(frozen=True)
class DurableSpec:
    """One durable pull consumer as its service declares it."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    config: ConsumerConfig

    def differences(self, actual: ConsumerConfig) -> list[str]:
        """The enforced fields whose live value is not the declared one."""
        filters = tuple(
            sorted(actual.filter_subjects or ([actual.filter_subject] if actual.filter_subject else []))
        )
        wrong = (
            []
            if filters == tuple(sorted(self.filter_subjects))
            else [f"filter_subjects are {list(filters)}, not {list(self.filter_subjects)}"]
        )
        wanted = {name: getattr(self.config, name) for name in ENFORCED}
        return wrong + [
            f"{name} is {getattr(actual, name)!r}, not {value!r}"
            for name, value in wanted.items()
            if value is not None and getattr(actual, name) != value
        ]

    def recreated(self, start_seq: int | None) -> ConsumerConfig:
        """The declared consumer, delivering from `start_seq` (None: only new messages)."""
        single = len(self.filter_subjects) == 1
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.filter_subjects[0] if single else None,
            filter_subjects=None if single else list(self.filter_subjects),
            ack_policy=self.config.ack_policy,
            ack_wait=self.config.ack_wait,
            max_deliver=self.config.max_deliver,
            max_ack_pending=self.config.max_ack_pending,
        )
        if start_seq is None:
            config.deliver_policy = DeliverPolicy.NEW
        else:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        return config


@dataclass
class ConsumerGuard:
    """Checks and restores a service's durables (see the module docstring)."""

    service: str
    specs: list[DurableSpec] = field(default_factory=list)
    interval_s: float = 10.0
    ack_floors: dict[str, int] = field(default_factory=dict)
    repairs: list[dict[str, Any]] = field(default_factory=list)  # what the guard restored, newest last
    _task: asyncio.Task[None] | None = None

    def declare(self, spec: DurableSpec) -> None:
        self.specs.append(spec)

    async def inspect(self, js: JetStreamContext) -> dict[str, str]:
        """Every durable's problem ("missing", or its wrong fields); remembers the ack floors."""
        problems: dict[str, str] = {}

        async def info_of(spec: DurableSpec) -> ConsumerInfo | None:
            try:
                info: ConsumerInfo = await js.consumer_info(spec.stream, spec.durable)
                return info
            except NotFoundError:
                return None

        # in parallel: the registry has a durable per event type, and health must answer quickly
        infos = await asyncio.gather(*(info_of(spec) for spec in self.specs))
        for spec, info in zip(self.specs, infos, strict=True):
            if info is None:
                problems[spec.durable] = "missing"
                continue
            if info.ack_floor is not None and info.ack_floor.stream_seq is not None:
                floor = max(self.ack_floors.get(spec.durable, 0), info.ack_floor.stream_seq)
                self.ack_floors[spec.durable] = floor
            wrong = spec.differences(info.config)
            if wrong:
                problems[spec.durable] = "; ".join(wrong)
        return problems

    async def restore(self, js: JetStreamContext) -> list[str]:
        """Inspect, then recreate every missing or altered durable; returns the ones restored."""
        problems = await self.inspect(js)
        restored = []
        for spec in self.specs:
            problem = problems.get(spec.durable)
            if problem is None:
                continue
            floor = self.ack_floors.get(spec.durable)
            start = floor + 1 if floor is not None else None
            if problem != "missing":
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(spec.stream, spec.durable)
            await js.add_consumer(spec.stream, spec.recreated(start))
            log.error(
                "%s: durable consumer %s was %s; recreated it delivering from %s",
                self.service,
                spec.durable,
                problem if problem == "missing" else f"altered ({problem})",
                f"stream sequence {start}" if start is not None else "new messages (no ack floor seen)",
            )
            self.repairs.append(
                {"durable": spec.durable, "problem": problem, "from_seq": start, "at": time.time()}
            )
            restored.append(spec.durable)
        del self.repairs[:-20]
        await self.inspect(js)
        return restored

    def start(self, js: JetStreamContext) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.restore(js)
                except Exception:  # the next round retries; health reports the problem meanwhile
                    log.exception("%s: could not check its durable consumers", self.service)
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.create_task(loop(), name=f"{self.service}-consumer-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def health(self, js: JetStreamContext) -> dict[str, Any]:
        """For the health query: live problems (missing or altered durables) and past repairs."""
        problems = await self.inspect(js)
        return {"consumers": len(self.specs), "consumer_problems": problems, "consumer_repairs": self.repairs}
