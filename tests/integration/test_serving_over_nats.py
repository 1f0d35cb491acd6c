"""Serving over a real nats-server and real HTTP: route table in KV, tenants, provenance, streaming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from schemas.serving import DecisionRecord
from schemas.subjects import DECISIONS_STREAM
from services.core.artifacts import ArtifactStore
from services.core.settings import CoreSettings
from tests.conftest import wait_until
from tests.support.serving import adapter_refs, base_ref, put_route, route, start_serving

pytestmark = pytest.mark.integration
KEYS = {"key-acme": "acme", "key-globex": "globex"}


def chat(model: str, text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 6, **extra}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def models_seen(url: str, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        listing = (await client.get(f"{url}/v1/models", headers=auth(key))).json()
    return {m["id"]: m["tuneline"] for m in listing["data"]}


async def test_two_replicas_see_the_same_route_changes_also_after_a_restart(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    store = ArtifactStore(core.artifact_root)
    adapter = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    stable = base_ref(tiny_model)
    _, url_a = await start_serving(running, core, tmp_path / "a", api_keys=KEYS, allow_anonymous=False)
    _, url_b = await start_serving(running, core, tmp_path / "b", api_keys=KEYS, allow_anonymous=False)

    revision = await put_route(core, route("support", "acme", stable, adapter, candidate_weight=10))
    for url in (url_a, url_b):
        seen = await wait_until(lambda u=url: _at(u, revision), timeout=10)
        assert seen["candidate_version"] == adapter.version_id() and seen["candidate_weight"] == 10

    revision = await put_route(core, route("support", "acme", adapter))  # promoted: candidate gone
    for url in (url_a, url_b):
        seen = await wait_until(lambda u=url: _at(u, revision), timeout=10)
        assert seen["stable_version"] == adapter.version_id() and seen["candidate_version"] is None

    # a replica started later (a restart) reads the same table
    _, url_c = await start_serving(running, core, tmp_path / "c", api_keys=KEYS, allow_anonymous=False)
    seen = (await models_seen(url_c, "key-acme"))["support"]
    assert seen["revision"] == revision and seen["stable_version"] == adapter.version_id()


async def _at(url: str, revision: int) -> dict[str, Any] | None:
    seen = (await models_seen(url, "key-acme")).get("support")
    return seen if seen and seen["revision"] >= revision else None


async def test_tenants_cannot_reach_each_others_routes_and_paths_are_refused(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    revision = await put_route(core, route("support", "acme", base_ref(tiny_model)))
    _, url = await start_serving(running, core, tmp_path / "s", api_keys=KEYS, allow_anonymous=False)
    await wait_until(lambda: _at(url, revision), timeout=10)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        ok = await client.post("/v1/chat/completions", json=chat("support"), headers=auth("key-acme"))
        assert ok.status_code == 200, ok.text

        other = await client.post("/v1/chat/completions", json=chat("support"), headers=auth("key-globex"))
        missing = await client.post("/v1/chat/completions", json=chat("nothing"), headers=auth("key-globex"))
        assert other.status_code == missing.status_code == 404  # the same answer: no route name leaks
        assert other.json()["error"]["code"] == missing.json()["error"]["code"] == "model_not_found"
        assert "support" not in await models_seen(url, "key-globex")

        by_path = await client.post(
            "/v1/chat/completions", json=chat("/tmp/artifacts/adapter"), headers=auth("key-acme")
        )
        assert by_path.status_code == 403 and by_path.json()["error"]["code"] == "adapter_by_path_refused"
        by_field = await client.post(
            "/v1/completions",
            json={"model": "support", "prompt": "x", "lora_path": "/tmp/a"},
            headers=auth("key-acme"),
        )
        assert by_field.status_code == 403 and by_field.json()["error"]["param"] == "lora_path"

        no_key = await client.post("/v1/chat/completions", json=chat("support"))
        bad_key = await client.post("/v1/chat/completions", json=chat("support"), headers=auth("nope"))
        assert (no_key.status_code, bad_key.status_code) == (401, 401)


async def test_every_answer_names_its_exact_tuple_and_is_logged(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    import nats

    store = ArtifactStore(core.artifact_root)
    adapter = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    revision = await put_route(core, route("support", "default", adapter))
    serving, url = await start_serving(running, core, tmp_path / "s", allow_anonymous=True)
    await wait_until(lambda: _models_at(url, revision), timeout=10)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answer = await client.post("/v1/chat/completions", json=chat("support", seed=7))
        body = answer.json()
        assert answer.status_code == 200, body
        assert body["model"] == f"support@{adapter.version_id()}"
        assert body["system_fingerprint"].startswith("tl-")
        assert answer.headers["x-tuneline-version"] == adapter.version_id()
        assert answer.headers["x-tuneline-adapter-sha256"] == adapter.adapter.artifact.sha256  # type: ignore[union-attr]
        assert answer.headers["x-tuneline-base-sha256"] == adapter.base.sha256
        assert json.loads(answer.headers["x-tuneline-sampling"])["max_tokens"] == 6
        assert body["tuneline"]["model_ref"] == adapter.model_dump(mode="json")

        # streaming: the chunks add up to the same greedy answer
        text = ""
        async with client.stream("POST", "/v1/chat/completions", json=chat("support", stream=True)) as stream:
            assert stream.headers["x-tuneline-version"] == adapter.version_id()
            async for line in stream.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    for choice in chunk["choices"]:
                        text += choice["delta"].get("content", "")
        assert text == body["choices"][0]["message"]["content"]

        # Prometheus' labels name routes: they are on the internal metrics port, not the public API
        assert (await client.get("/metrics")).status_code == 404
        metrics = generate_latest(serving.runtime.metrics.registry).decode()
        assert 'tuneline_serving_requests_total{role="stable",route="support",status="200"} 2.0' in metrics

    nc = await nats.connect(core.nats.servers)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("tuneline.decisions.support", stream=DECISIONS_STREAM)

        async def records() -> list[DecisionRecord]:
            try:
                msgs = await sub.fetch(10, timeout=0.5)
            except Exception:  # noqa: BLE001  (nothing yet)
                return []
            return [DecisionRecord.model_validate_json(m.data) for m in msgs]

        found = await wait_until(records, timeout=10)
        first = next(r for r in found if r.decision_id == answer.headers["x-tuneline-decision-id"])
        assert first.model == adapter and first.status == 200 and first.sampling["seed"] == 7
        assert first.system_fingerprint == body["system_fingerprint"]
    finally:
        await nc.close()


async def _models_at(url: str, revision: int) -> bool:
    async with httpx.AsyncClient() as client:
        listing = (await client.get(f"{url}/v1/models")).json()
    return any(m["tuneline"]["revision"] >= revision for m in listing["data"])
