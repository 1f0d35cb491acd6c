"""The OpenAI-compatible responses serving sends: completions, stream chunks, the model list.

Typed like vLLM's `protocol.py`; field names and nulls follow OpenAI's API reference, which the
official SDK parses (tests/integration/test_openai_sdk.py). Every answer also carries `tuneline`:
which exact version produced it and under which routing decision.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provenance(_Out):
    """Which weights answered, and why: the route, the arm, the version, the routing decision."""

    route: str
    role: str
    version_id: str
    decision_id: str
    backend: str
    sampling: dict[str, Any]
    model_ref: dict[str, Any]


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Out):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Out):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


class CompletionChoice(_Out):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class _Envelope(_Out):
    id: str
    created: int
    model: str
    system_fingerprint: str | None = None


class ChatCompletion(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    tuneline: Provenance


class TextCompletion(_Envelope):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage
    tuneline: Provenance


class Delta(_Out):
    """A chat chunk's increment: the role in the first chunk, then content; absent fields are left out."""

    role: Literal["assistant"] | None = Field(default=None, exclude_if=lambda v: v is None)
    content: str | None = Field(default=None, exclude_if=lambda v: v is None)


class ChatChunkChoice(_Out):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda v: v is None)
    tuneline: Provenance | None = Field(default=None, exclude_if=lambda v: v is None)


class TextCompletionChunk(_Envelope):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=lambda v: v is None)
    tuneline: Provenance | None = Field(default=None, exclude_if=lambda v: v is None)


class StreamError(_Out):
    """An error after the stream started: one `data:` line, then `[DONE]`."""

    error: dict[str, str | None]


class RouteState(_Out):
    stable_version: str | None
    candidate_version: str | None
    candidate_weight: float
    shadow: bool
    revision: int


class ModelCard(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    tuneline: RouteState


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelCard]


Chunk = ChatCompletionChunk | TextCompletionChunk


def sse(event: BaseModel) -> bytes:
    """One server-sent event carrying `event` as JSON."""
    return b"data: " + event.model_dump_json().encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
