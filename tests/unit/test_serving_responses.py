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


def test_streamed_text_that_may_begin_a_stop_string_is_held_back() -> None:
    from services.serving.streaming import held_back

    assert held_back("Hello wor", ("world",)) == 3  # "wor" may become "world"
    assert held_back("Hello w", ("world", "Hel")) == 1
    assert held_back("Hello", ("world",)) == 0
    assert held_back("ab", ("abc", "b")) == 2, "the longest possible start wins"
    assert held_back("anything", ()) == 0


NEUTRAL = ({"logprobs": False}, {"best_of": 1}, {"tool_choice": "none"}, {"tools": []}, {"echo": None})
ASKED = (
    ({"logprobs": True}, "logprobs"),
    ({"echo": True, "logprobs": 2}, "logprobs"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"best_of": 3}, "best_of"),
)


def test_parameters_the_server_cannot_honour_are_refused_by_name() -> None:
    import pytest

    from services.serving.protocol import refuse_unsupported
    from services.serving.routing import RequestRefused

    for neutral in NEUTRAL:
        refuse_unsupported(neutral)  # asks for nothing
    for asked, name in ASKED:
        with pytest.raises(RequestRefused) as refused:
            refuse_unsupported(asked)
        found = refused.value
        assert (found.status, found.code, found.param) == (400, "unsupported_parameter", name)
        assert f"`{name}`" in found.message and "leave it out" in found.message
