"""Checkpoint choice by guardrails on a real stack: training asks evaluation to screen every
checkpoint of a run (a real nats-server, real training, real generation) and releases the best
one that shows no harm; the release gates never read the items that chose it.

The base is the tiny model that knows twelve facts (`knowing_base`); the facts are the capability
suite the screen samples six of. A LoRA trained hard on arithmetic forgets the facts as it goes:
its late checkpoints show the loss and are dropped, whatever their validation loss. (Six items see
only large harm: a checkpoint that lost three of them is not shown to have lost more than the
margin, p 0.054, and may be chosen; the release gates then judge it on the other six.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.checkpoints import CheckpointSelection
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef
from services.core.artifacts import ArtifactStore
from services.core.runtime import ServiceRuntime
from services.training.job import RESUMABLE_STATE
from tests.support.stream import first_event
from tests.support.training import approved, recipe

pytestmark = pytest.mark.integration

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# six of the twelve facts: a screen this small sees only large harm, and says so (its MDE)
SCREEN = CheckpointSelection(
    capability_suite="facts", capability_items=6, capability_max_loss=5, safety_items=20
)


def _forgetting(knowing_base: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "base_model": str(knowing_base),
        "learning_rate": 3e-3,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_steps": 30,
        "eval_steps": 5,
        "batch_size": 8,
        "lora": {"rank": 16, "alpha": 32, "target_modules": TARGETS},
        "checkpoint_selection": SCREEN,
        **overrides,
    }
    return recipe("sft-lora", **values)


async def test_the_checkpoints_that_forgot_are_dropped_and_the_gates_skip_the_screened_items(
    operator: ServiceRuntime, store: ArtifactStore, knowing_base: Path, tmp_path: Path
) -> None:
    policy = GatePolicy(target_gain_min=-100, capability_regression_max=25, accept_underpowered=True)
    event = approved(store, _forgetting(knowing_base), rows=64, seed=1, route="screened", gate_policy=policy)
    await operator.bus.publish(event)

    ready = (await first_event(operator, "candidate.ready", timeout=300, route="screened")).payload
    choice = ready["checkpoint_choice"]
    rows = {row["step"]: row for row in choice["checkpoints"]}
    table = json.dumps(choice["checkpoints"], indent=1)
    assert sorted(rows) == [5, 10, 15, 20, 25, 30], table
    final = rows[30]
    assert not final["passed"] and final["capability"]["rejected"], table
    assert final["capability"]["estimate"] >= 50, "the final checkpoint forgot most of the screened facts"
    passed = [row for row in rows.values() if row["passed"]]
    assert passed, table
    best = min(passed, key=lambda row: row["eval_loss"])
    assert choice["chosen_step"] == best["step"] < 30
    # every screen states what it is: a one-sided test of harm beyond the margin, n, alpha, MDE
    for row in rows.values():
        capability, safety = row["capability"], row["safety"]
        assert capability["n"] == 6 and capability["margin"] == 5 and capability["alpha"] == 0.05
        assert capability["hypothesis"] == "superiority" and capability["mde"] > 0
        assert safety["n"] == 20 and not safety["rejected"], "the tiny base refuses nothing to lose"
        assert row["eval_loss"] is not None

    # the candidate is the chosen checkpoint, released without the state that resumes training
    candidate = ready["candidate"]
    assert _version_id(candidate) == best["version_id"]
    released = store.fetch_tree(
        ArtifactRef.model_validate(candidate["adapter"]["artifact"]), tmp_path / "released"
    )
    names = {p.name for p in released.iterdir()}
    assert "adapter_model.safetensors" in names and not names & set(RESUMABLE_STATE)
    config = json.loads((released / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(knowing_base)

    # the gates read the six facts the screen did not
    screened = set(choice["screened_items"]["facts"])
    assert len(screened) == 6
    completed = (await first_event(operator, "eval.completed", timeout=300, route="screened")).payload
    facts = next(s for s in completed["suites"] if s["suite"]["name"] == "facts")
    assert facts["items"] == 6
    report = store.read_json(ArtifactRef.model_validate(completed["report"]))
    gated = {item["id"] for s in report["items"] if s["suite"] == "facts" for item in s["items"]}
    assert len(gated) == 6 and not gated & screened


async def test_a_run_whose_every_checkpoint_shows_harm_fails_with_the_screen_table(
    operator: ServiceRuntime, store: ArtifactStore, knowing_base: Path
) -> None:
    # a zero margin on capability and a huge learning rate: every checkpoint has lost facts
    strict = SCREEN.model_copy(update={"capability_max_loss": 0.0})
    training = _forgetting(knowing_base, learning_rate=5e-2, max_steps=20, checkpoint_selection=strict)
    event = approved(store, training, rows=64, seed=4, route="hopeless")
    await operator.bus.publish(event)

    started = (
        await first_event(operator, "training.started", timeout=120, dataset_id=event.dataset_id)
    ).payload
    failed = (await first_event(operator, "training.failed", timeout=300, run_id=started["run_id"])).payload
    assert failed["reason"] == "guardrails"
    lines = failed["error"].splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == ["step 5", "step 10", "step 15", "step 20"]
    assert all(line.endswith("FAILED") for line in lines), failed["error"]


def _version_id(candidate: dict[str, Any]) -> str:
    from schemas.refs import ModelRef

    return ModelRef.model_validate(candidate).version_id()
