"""What a backend is asked for and what it answers: sampling settings, one request, its result."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas.refs import ModelRef

# Below this, a temperature is greedy decoding (vLLM's rule): dividing logits by 1e-300 gives inf
# and NaN probabilities, which would fail the whole batch the request shares.
SAMPLING_EPS = 1e-5


class BackendError(Exception):
    """A version that cannot be served here; the message names it and what to do."""


class PromptRefused(ValueError):
    """This one request's prompt cannot be generated from (too long, untokenizable): a 400, alone."""


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
        return self.temperature < SAMPLING_EPS

    def batch_key(self) -> tuple[object, ...]:
        """Requests whose settings share this key can be decoded in one batch."""
        if self.greedy:
            return (True,)  # greedy decoding ignores temperature, top_p and seed
        return (False, self.temperature, self.top_p, self.seed)

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

    def check_prompt(self, ref: ModelRef, prompt: str, max_tokens: int) -> int:
        """The prompt's token count; `PromptRefused` when it and `max_tokens` exceed the context."""
        ...

    def status(self) -> dict[str, Any]: ...


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to the first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(base_dir: Path) -> int | None:
    """The model's context window in tokens, from its `config.json` (None when it does not say)."""
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for key in CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def within_context(prompt_tokens: int, max_tokens: int, context: int | None) -> int:
    """`prompt_tokens`, or `PromptRefused` when the prompt and the answer cannot fit the context."""
    if prompt_tokens == 0:
        raise PromptRefused("the prompt is empty: send at least one token of text")
    if context is not None and prompt_tokens + max_tokens > context:
        raise PromptRefused(
            f"this model's context is {context} tokens; the prompt has {prompt_tokens} and max_tokens "
            f"asks for {max_tokens} more: shorten the prompt to at most {max(context - max_tokens, 0)} "
            "tokens or lower max_tokens"
        )
    return prompt_tokens
