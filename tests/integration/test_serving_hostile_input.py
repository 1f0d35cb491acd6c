"""Serving under hostile input, over real HTTP: one request's failure stays its own, every error is an
OpenAI-shaped 4xx naming the parameter, bodies and prompts are bounded, and a fuzz run finds no 5xx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from services.core.artifacts import ArtifactStore
from services.core.settings import CoreSettings
from tests.conftest import wait_until
from tests.support.serving import adapter_refs, base_ref, put_route, route, start_serving

pytestmark = pytest.mark.integration
KEYS = {"key-acme": "acme", "key-globex": "globex"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str, text: Any = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4, **extra}


def assert_openai_error(reply: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    """The reply is `{"error": {"message", "type", "code", "param"}}` with `status`, as OpenAI's."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json"), reply.text
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    if param is not None:
        assert error["param"] == param, error
    return dict(error)


async def two_tenant_server(core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any) -> Any:
    store = ArtifactStore(core.artifact_root)
    adapter = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    await put_route(core, route("support", "acme", base_ref(tiny_model)))
    revision = await put_route(core, route("billing", "globex", adapter))
    serving, url = await start_serving(
        running, core, tmp_path / "s", api_keys=KEYS, batch_wait_ms=300.0, max_batch_size=8
    )
    await wait_until(lambda: serving.service.book.revisions.get("billing", 0) >= revision, timeout=10)
    return serving, url


async def test_a_lone_surrogate_fails_only_its_own_request_and_every_response_is_counted(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    serving, url = await two_tenant_server(core, tmp_path, tiny_model, running)
    # json.dumps writes "\ud800" as the escape a hostile client sends; Python reads it back as a
    # lone surrogate, which the tokenizer refuses with a TypeError
    poison = json.dumps(chat("support", "hi \ud800 there"))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        replies = await asyncio.gather(
            client.post(
                "/v1/chat/completions",
                content=poison,
                headers=auth("key-acme") | {"content-type": "application/json"},
            ),
            *(
                client.post("/v1/chat/completions", json=chat("support"), headers=auth("key-acme"))
                for _ in range(3)
            ),
            *(
                client.post(
                    "/v1/completions",
                    json={"model": "billing", "prompt": "Hi", "max_tokens": 4},
                    headers=auth("key-globex"),
                )
                for _ in range(3)
            ),
        )
    assert_openai_error(replies[0], 400, param="messages[0].content")
    assert [r.status_code for r in replies[1:]] == [200] * 6, [r.text for r in replies[1:]]
    metrics = generate_latest(serving.runtime.metrics.registry).decode()
    assert 'tuneline_serving_refused_requests_total{code="invalid_text",status="400"} 1.0' in metrics
    assert 'tuneline_serving_requests_total{role="stable",route="support",status="200"} 3.0' in metrics
    assert 'tuneline_serving_requests_total{role="stable",route="billing",status="200"} 3.0' in metrics


async def test_hostile_bodies_get_a_400_naming_the_parameter_never_a_500(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    serving, url = await two_tenant_server(core, tmp_path, tiny_model, running)
    acme = auth("key-acme") | {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=acme) as client:

        async def post(body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await client.post(path, content=raw)

        deep = b'{"model": "support", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert "nested too deeply" in assert_openai_error(await post(deep), 400)["message"]

        not_a_schema = chat(
            "support", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}
        )
        assert_openai_error(await post(not_a_schema), 400, param="response_format.json_schema.schema")
        bad_schema = chat(
            "support", response_format={"type": "json_schema", "json_schema": {"schema": {"type": 5}}}
        )
        assert_openai_error(await post(bad_schema), 400, param="response_format.json_schema.schema")

        number_part = chat("support", [{"type": "text", "text": 5}])
        assert_openai_error(await post(number_part), 400, param="messages[0].content")
        image_part = chat("support", [{"type": "image_url", "image_url": {"url": "x"}}])
        assert "only text" in assert_openai_error(await post(image_part), 400)["message"]

        assert_openai_error(await post(chat("support", seed=2**64)), 400, param="seed")
        # a temperature too small to divide by is greedy decoding, as vLLM treats it
        tiny_temperature = await post(chat("support", temperature=1e-300, seed=2**63 - 1))
        assert tiny_temperature.status_code == 200, tiny_temperature.text
        assert json.loads(tiny_temperature.headers["x-tuneline-sampling"])["decoding"] == "greedy"

        huge = json.dumps(chat("support", "x" * (5 * 1024 * 1024))).encode()
        assert "limit" in assert_openai_error(await post(huge), 413)["message"]

        # the tiny model's context is 2,048 tokens
        long_prompt = {"model": "support", "prompt": "hello " * 3000, "max_tokens": 4}
        error = assert_openai_error(await post(long_prompt, "/v1/completions"), 400, param="prompt")
        assert error["code"] == "context_length_exceeded" and "2048" in error["message"]

        assert_openai_error(await post(b"[1, 2"), 400)
        assert_openai_error(await post([1, 2]), 400)
        # the server still answers after all of it
        assert (await post(chat("support"))).status_code == 200
    metrics = generate_latest(serving.runtime.metrics.registry).decode()
    assert 'tuneline_serving_refused_requests_total{code="request_too_large",status="413"} 1.0' in metrics


async def test_public_health_names_no_routes_and_metrics_are_not_on_the_api_port(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    _, url = await two_tenant_server(core, tmp_path, tiny_model, running)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        health = await client.get("/health")
        assert health.status_code == 200 and set(health.json()) == {"service", "status", "uptime_s"}
        assert "support" not in health.text and "billing" not in health.text
        assert (await client.get("/metrics")).status_code == 404
        # without a key nothing is answered: anonymous access is off by default
        anonymous = await client.post("/v1/chat/completions", json=chat("support"))
        assert_openai_error(anonymous, 401)


# -- fuzzing ----------------------------------------------------------------------------------------
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
TEXT = st.text(max_size=30)  # includes lone surrogates
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool"]) | ANY_JSON},
    optional={
        "content": TEXT
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url"]) | ANY_JSON},
                optional={"text": TEXT | ANY_JSON},
            ),
            max_size=2,
        )
        | ANY_JSON
    },
)
FIELDS = {
    "max_tokens": st.integers(-2, 6) | ANY_JSON,
    "temperature": st.floats(allow_nan=True, allow_infinity=True) | ANY_JSON,
    "top_p": st.floats(-1, 2) | ANY_JSON,
    "seed": st.integers() | ANY_JSON,
    "stop": TEXT | st.lists(TEXT, max_size=3) | ANY_JSON,
    "stream": st.booleans() | ANY_JSON,
    "n": st.integers(-1, 3) | ANY_JSON,
    "user": TEXT | ANY_JSON,
    "response_format": st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema"]) | ANY_JSON},
        optional={"json_schema": st.fixed_dictionaries({}, optional={"schema": ANY_JSON, "name": TEXT})},
    )
    | ANY_JSON,
}
CHAT_BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["support", "billing", "nothing", "../x"]) | ANY_JSON},
    optional={"messages": st.lists(MESSAGE, max_size=3) | ANY_JSON, **FIELDS},
)
COMPLETION_BODY = st.fixed_dictionaries(
    {"model": st.sampled_from(["support", "billing"]) | ANY_JSON},
    optional={"prompt": TEXT | st.lists(TEXT, max_size=2) | ANY_JSON, "echo": ANY_JSON, **FIELDS},
)
FUZZ_EXAMPLES = 150


async def test_fuzzed_requests_never_get_a_5xx_and_every_error_is_openai_shaped(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    _, url = await two_tenant_server(core, tmp_path, tiny_model, running)
    seen: dict[int, int] = {}

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples on every run: a CI failure reproduces locally
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(kind=st.sampled_from(["chat", "completion"]), data=st.data())
    def fuzz(kind: str, data: st.DataObject) -> None:
        body = data.draw(CHAT_BODY if kind == "chat" else COMPLETION_BODY)
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        with httpx.Client(base_url=url, timeout=60) as client:
            reply = client.post(
                path,
                content=json.dumps(body).encode(),
                headers=auth("key-acme") | {"content-type": "application/json"},
            )
        seen[reply.status_code] = seen.get(reply.status_code, 0) + 1
        assert reply.status_code < 500, (body, reply.text)
        if reply.status_code >= 400:
            assert_openai_error(reply, reply.status_code)

    # the server runs on this event loop; the blocking client runs in a thread beside it
    await asyncio.to_thread(fuzz)
    assert sum(seen.values()) >= FUZZ_EXAMPLES and seen.get(400, 0) > 0, seen
