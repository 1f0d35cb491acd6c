"""Training on a real nats-server: approved dataset → run → candidate.ready; cancel; refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from schemas.refs import ArtifactRef
from schemas.training import TrainingCancelRequested
from services.core.artifacts import ArtifactStore
from services.core.messaging.rpc import query
from services.core.ml.models import chat_template_sha256, tokenizer_sha256, weights_sha256
from services.core.runtime import ServiceRuntime
from services.core.settings import CoreSettings
from services.training.app import build_training
from services.training.config import TrainingSettings
from services.training.control import KvRunControl
from services.training.model_ref import recipe_sha256
from tests.conftest import wait_until
from tests.support.services import operator_runtime, registry_app
from tests.support.stream import StoredEvent, first_event, stored_events
from tests.support.training import approved, recipe

pytestmark = pytest.mark.integration


@pytest.fixture
def store(core: CoreSettings) -> ArtifactStore:
    return ArtifactStore(core.artifact_root)


@pytest.fixture
async def operator(
    core: CoreSettings, tmp_path: Path, running: Any, tiny_model: Path
) -> AsyncIterator[ServiceRuntime]:
    await running(registry_app(core, tmp_path))
    settings = TrainingSettings(
        core=core, work_dir=str(tmp_path / "work"), device="cpu", progress_interval_s=0, cancel_poll_s=0.2
    )
    await running(build_training(settings).app)
    async with operator_runtime(core) as runtime:
        yield runtime


async def first(operator: ServiceRuntime, event_type: str, timeout: float = 90, **match: Any) -> StoredEvent:
    return await first_event(operator, event_type, timeout, **match)


async def test_approved_dataset_trains_a_candidate_carrying_the_whole_tuple(
    operator: ServiceRuntime, store: ArtifactStore, tiny_model: Path
) -> None:
    training = recipe("sft-lora")
    event = approved(store, training)
    await operator.bus.publish(event)

    ready = await first(operator, "candidate.ready")
    ref = ready.payload["candidate"]
    run_id = ref["run_id"]
    assert ref["base"]["sha256"] == weights_sha256(tiny_model)
    assert ref["base"]["name"] == "tiny-llama" and ref["base"]["architecture"] == "LlamaForCausalLM"
    assert ref["tokenizer"] == {
        "tokenizer_sha256": tokenizer_sha256(tiny_model),
        "chat_template_sha256": chat_template_sha256(tiny_model),
    }
    assert ref["dataset"]["dataset_id"] == event.dataset_id
    assert ref["recipe_sha256"] == recipe_sha256(training)
    assert ref["method"] == "sft-lora"
    adapter = ref["adapter"]
    assert (adapter["rank"], adapter["alpha"], adapter["method"]) == (16, 32.0, "sft-lora")
    assert tuple(adapter["target_modules"]) == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert ready.payload["lineage"] == {
        "dataset_id": event.dataset_id,
        "run_id": run_id,
        "parents": [],
        "merge_difference": None,  # set by merging only
        "peak_memory_mb": None,
        "soup_steps": [],
        "ranked_by": None,
    }

    # the adapter is in the store, verified by hash on the way out, and it was trained
    folder = store.fetch_tree(ArtifactRef.model_validate(adapter["artifact"]), Path(store.root) / "check")
    weights = load_file(folder / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)

    js = operator.broker.connection.jetstream()
    progress = [e.payload for e in await stored_events(js, "training.progress") if e.subject == run_id]
    train_steps = [p for p in progress if p.get("loss") is not None]
    assert [p["step"] for p in train_steps] == list(range(1, 13))
    assert train_steps[-1]["loss"] < train_steps[0]["loss"]
    assert any(p.get("eval_loss") is not None for p in progress)
    assert any(p.get("tokens_per_second") for p in progress) and progress[-1]["eta_seconds"] == 0
    started = await first(operator, "training.started")
    assert started.payload["attempt"] == 1 and started.payload["resumed_from_step"] is None

    async def completed() -> dict[str, Any] | None:
        detail = await query(operator.broker, "registry", "runs.get", {"run_id": run_id})
        return detail if detail.get("summary", {}).get("status") == "completed" else None

    detail = await wait_until(completed, timeout=20)
    assert detail["summary"]["version_id"] == ready.subject and detail["summary"]["step"] == 12
    listed = await query(operator.broker, "registry", "runs.list", {})
    assert [r["run_id"] for r in listed["runs"]] == [run_id]


async def test_cancel_stops_a_running_run_within_seconds(
    operator: ServiceRuntime, store: ArtifactStore
) -> None:
    await operator.bus.publish(approved(store, recipe("sft-lora", max_steps=100_000, eval_steps=10_000)))
    progress = await first(operator, "training.progress")
    run_id = progress.subject
    asked = time.monotonic()
    await operator.bus.publish(TrainingCancelRequested(run_id=run_id, reason="wrong data"))
    cancelled = await first(operator, "training.cancelled", timeout=30)
    took = time.monotonic() - asked
    assert cancelled.subject == run_id and cancelled.payload["reason"] == "wrong data"
    assert took < 10, f"cancel took {took:.1f}s"
    assert cancelled.payload["step"] < 100_000
    js = operator.broker.connection.jetstream()
    await asyncio.sleep(1)
    assert await stored_events(js, "candidate.ready") == []

    async def status() -> str | None:
        detail = await query(operator.broker, "registry", "runs.get", {"run_id": run_id})
        return detail["summary"]["status"] if detail["summary"]["status"] == "cancelled" else None

    assert await wait_until(status, timeout=20) == "cancelled"


async def test_recipe_checked_against_the_model_fails_before_any_training(
    operator: ServiceRuntime, store: ArtifactStore
) -> None:
    bad_modules = recipe("sft-lora", lora={"target_modules": ["c_attn"]})
    await operator.bus.publish(approved(store, bad_modules, seed=1))
    failed = await first(operator, "training.failed")
    assert failed.payload["reason"] == "recipe-invalid"
    assert "['c_attn']" in failed.payload["error"] and "q_proj" in failed.payload["error"]

    await operator.bus.publish(approved(store, recipe("sft-qlora"), seed=2))
    no_cuda = await first(operator, "training.failed", reason="cuda-missing")
    assert "CUDA" in no_cuda.payload["error"]
    js = operator.broker.connection.jetstream()
    assert await stored_events(js, "training.started") == []


async def test_the_first_finished_attempt_wins_and_a_redelivery_republishes_it(
    operator: ServiceRuntime, store: ArtifactStore
) -> None:
    js = operator.broker.connection.jetstream()
    control = await KvRunControl.open(js)
    assert await control.claim_result("run-x", {"candidate": {"v": 1}})
    assert not await control.claim_result("run-x", {"candidate": {"v": 2}})  # a superseded attempt
    assert await control.result("run-x") == {"candidate": {"v": 1}}

    event = approved(store, recipe("sft-lora"), seed=3)
    envelope = await operator.bus.publish(event)
    ready = await first(operator, "candidate.ready")
    # the same dataset.approved delivered again (e.g. the ack was lost): no second training, no new event
    await operator.broker.publish(
        event.model_dump_json().encode(),
        event.subject(),
        headers={**envelope.to_headers(), "Nats-Msg-Id": "again"},
    )
    await asyncio.sleep(3)
    assert [e.id for e in await stored_events(js, "candidate.ready")] == [ready.id]
    assert len(await stored_events(js, "training.started")) == 1
