"""The official `openai` Python client against a real serving replica (real nats-server, real HTTP,
the tiny model behind an adapter): what a client relies on after the basics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import generate_latest

from services.core.artifacts import ArtifactStore
from services.core.settings import CoreSettings
from tests.conftest import wait_until
from tests.support.serving import adapter_refs, put_route, route, start_serving

pytestmark = pytest.mark.integration
KEY = "key-acme"


@pytest.fixture
async def served(core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any) -> tuple[Any, str]:
    store = ArtifactStore(core.artifact_root)
    adapter = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    serving, url = await start_serving(
        running, core, tmp_path / "s", api_keys={KEY: "acme"}, allow_anonymous=False
    )
    await put_route(core, route("support", "acme", adapter))

    async def ready() -> bool:
        async with httpx.AsyncClient() as client:
            listing = await client.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        return any(m["id"] == "support" for m in listing.json()["data"])

    await wait_until(ready, timeout=15)
    return serving, url


def client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


MESSAGES: Any = [{"role": "user", "content": "Write a long story about a ticket."}]


async def stream_text(api: openai.AsyncOpenAI, **kw: Any) -> tuple[str, list[Any]]:
    chunks = [
        c
        async for c in await api.chat.completions.create(
            model="support", messages=MESSAGES, stream=True, **kw
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def test_streaming_says_length_and_stop_like_the_whole_answer_and_counts_usage(
    served: tuple[Any, str],
) -> None:
    _, url = served
    api = client(url)
    whole = await api.chat.completions.create(model="support", messages=MESSAGES, max_tokens=12)
    text, chunks = await stream_text(api, max_tokens=12, stream_options={"include_usage": True})
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert whole.choices[0].finish_reason == "length" and finishes == ["length"], "max_tokens cut it"
    assert text == whole.choices[0].message.content
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert usage.completion_tokens == whole.usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + 12 and not chunks[-1].choices
    # a stop string taken from inside the answer: streamed and whole answers end before it
    cut = whole.choices[0].message.content[4:9]
    assert cut.strip(), whole.choices[0].message.content
    stopped = await api.chat.completions.create(model="support", messages=MESSAGES, max_tokens=12, stop=[cut])
    streamed, chunks = await stream_text(api, max_tokens=12, stop=[cut])
    assert streamed == stopped.choices[0].message.content and cut not in streamed
    assert (
        stopped.choices[0].finish_reason
        == "stop"
        == [c for c in chunks if c.choices][-1].choices[0].finish_reason
    )
    plain = await client(url).completions.create(
        model="support", prompt="Once upon a time", max_tokens=5, stream=True
    )
    assert [c.choices[0].finish_reason async for c in plain if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]


async def test_errors_follow_openais_conventions(served: tuple[Any, str]) -> None:
    serving, url = served
    api = client(url)
    with pytest.raises(openai.NotFoundError) as missing:
        await api.chat.completions.create(model="nowhere", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as wrong:
        await client(url, "sk-wrong").chat.completions.create(model="support", messages=MESSAGES)
    assert wrong.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as bad:
        await api.chat.completions.create(model="support", messages=MESSAGES, temperature=7)
    assert (bad.value.code, bad.value.param) == ("invalid_request", "temperature")
    with pytest.raises(openai.BadRequestError) as unsupported:
        await api.chat.completions.create(model="support", messages=MESSAGES, logprobs=True, top_logprobs=2)
    assert (unsupported.value.code, unsupported.value.param) == ("unsupported_parameter", "logprobs")
    assert (
        await api.chat.completions.create(model="support", messages=MESSAGES, max_tokens=2, logprobs=False)
    ).choices
    # GET /v1/models/{id}, and an unknown path in the same error shape
    found = await api.models.retrieve("support")
    assert found.id == "support" and found.owned_by == "acme"
    with pytest.raises(openai.NotFoundError) as absent:
        await api.models.retrieve("nowhere")
    assert absent.value.code == "model_not_found"
    async with httpx.AsyncClient() as raw:
        lost = await raw.get(f"{url}/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "unknown_url"
    # refused requests are counted among all requests, with their status
    metrics = generate_latest(serving.runtime.metrics.registry).decode()
    for status in ("401", "404", "400"):
        assert f'tuneline_serving_requests_total{{role="refused",route="",status="{status}"}}' in metrics, (
            status
        )
