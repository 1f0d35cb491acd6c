"""What a backend is asked for and what it answers: sampling settings, one request, its result."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.refs import ModelRef


class BackendError(Exception):
    """A version that cannot be served here; the message names it and what to do."""


@dataclass(frozen=True)
class Sampling:
    """The settings that, with the model tuple, determine an answer; every response names them."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def batch_key(self) -> tuple[object, ...]:
        """Requests whose settings share this key can be decoded in one batch."""
        return (self.greedy, self.temperature, self.top_p, self.seed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
            "decoding": "greedy" if self.greedy else "sampling",
        }


def fingerprint(ref: ModelRef, sampling: Sampling, backend: str) -> str:
    """`system_fingerprint`: one hash of the exact tuple, the sampling settings and the backend."""
    blob = json.dumps(
        {
            "model": ref.model_dump(mode="json", exclude={"eval_suites"}),
            "sampling": sampling.as_dict(),
            "backend": backend,
        },
        sort_keys=True,
    )
    return "tl-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Job:
    """One request's generation: filled by the backend, awaited by the API."""

    ref: ModelRef
    prompt: str
    sampling: Sampling
    stream: asyncio.Queue[str | None] | None = None  # text deltas, then None
    done: asyncio.Future[Completion] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job: Job) -> Completion: ...

    def chat_prompt(self, ref: ModelRef, messages: list[dict[str, str]]) -> str: ...

    def status(self) -> dict[str, Any]: ...


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
