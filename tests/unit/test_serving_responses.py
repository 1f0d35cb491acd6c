"""Serving's typed OpenAI responses: the JSON they produce, field by field, as clients read it."""

from __future__ import annotations

import json

from services.serving.responses import (
    DONE,
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChoice,
    Delta,
    StreamError,
    TextCompletionChunk,
    sse,
)

HEAD = {"id": "chatcmpl-1", "created": 1_700_000_000, "model": "support", "system_fingerprint": "fp"}


def data(event: bytes) -> dict[str, object]:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return dict(json.loads(event[6:]))


def test_chat_chunks_carry_the_role_first_then_content_and_a_null_finish_reason() -> None:
    first = ChatCompletionChunk(**HEAD, choices=[ChatChunkChoice(delta=Delta(role="assistant"))])
    middle = ChatCompletionChunk(**HEAD, choices=[ChatChunkChoice(delta=Delta(content="Hel"))])
    last = ChatCompletionChunk(**HEAD, choices=[ChatChunkChoice(delta=Delta(), finish_reason="stop")])
    assert data(sse(first)) == {
        **HEAD,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
    }
    assert data(sse(middle))["choices"] == [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]
    assert data(sse(last))["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert "tuneline" not in data(sse(last))  # only the tail chunk carries the provenance


def test_text_chunks_and_stream_errors_keep_openais_shape() -> None:
    chunk = TextCompletionChunk(**HEAD, choices=[CompletionChoice(text="4", finish_reason=None)])
    assert data(sse(chunk))["choices"] == [{"index": 0, "text": "4", "finish_reason": None, "logprobs": None}]
    assert data(sse(chunk))["object"] == "text_completion"
    error = StreamError(error={"message": "generation failed", "type": "server_error", "code": "backend"})
    assert data(sse(error)) == {
        "error": {"message": "generation failed", "type": "server_error", "code": "backend"}
    }
    assert DONE == b"data: [DONE]\n\n"
