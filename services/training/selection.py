"""Checkpoint choice by guardrails (recipe `checkpoint_selection`): which checkpoints a finished run
offers, each as the clean tree it would be released as, and the rule that picks one.

Evaluation screens them (`checkpoints.screen`, see services/evaluation/screening.py); this module
holds what training decides before and after: no torch, no broker.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.checkpoints import ScreenedCheckpoint
from schemas.refs import ArtifactRef
from services.core.artifacts import ArtifactNotFound, ArtifactStore
from services.training.job import RESUMABLE_STATE, Done, portable_adapter_config
from services.training.preparation import checkpoint_key


@dataclass(frozen=True)
class Offered:
    """One checkpoint the run offers: its step, its release tree and its validation loss."""

    step: int
    tree: ArtifactRef
    eval_loss: float | None


def saved_checkpoints(store: ArtifactStore, run_id: str) -> list[dict[str, Any]]:
    """Every checkpoint the run's attempts saved, oldest first (the worker keeps the list)."""
    try:
        pointer = store.read_named_json(checkpoint_key(run_id))
    except ArtifactNotFound:
        return []
    return sorted(pointer.get("history") or [], key=lambda h: int(h["step"]))


def release_tree(
    store: ArtifactStore, tree: ArtifactRef, work: Path, *, adapter: bool, base_model: str
) -> ArtifactRef:
    """A checkpoint as it would be released: the model alone, without the state that resumes
    training, and an adapter that names its base portably (as the final model does)."""
    folder = work / f"release-{tree.sha256[:16]}"
    shutil.rmtree(folder, ignore_errors=True)
    store.fetch_tree(tree, folder)
    for name in RESUMABLE_STATE:
        (folder / name).unlink(missing_ok=True)
    if adapter:
        portable_adapter_config(folder, base_model)
    try:
        return store.put_tree(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def offered(
    history: Sequence[dict[str, Any]],
    done: Done,
    final: ArtifactRef,
    release: Callable[[ArtifactRef], ArtifactRef],
) -> list[Offered]:
    """The saved checkpoints (each through `release`, a tree → release-tree function) and the final
    model. When early stopping restored the best checkpoint at the end, the final model is that
    checkpoint and is not offered twice; a checkpoint at the final step is the final model."""

    def offer(entry: dict[str, Any]) -> Offered:
        tree = release(ArtifactRef.model_validate(entry["tree"]))
        return Offered(int(entry["step"]), tree, entry.get("eval_loss"))

    if done.best_at_end and history:
        return [offer(h) for h in history]
    choices = [offer(h) for h in history if int(h["step"]) < done.steps]
    at_end = next((h.get("eval_loss") for h in history if int(h["step"]) == done.steps), None)
    loss = done.final_eval_loss if done.final_eval_loss is not None else at_end
    return [*choices, Offered(done.steps, final, loss)]


def choose(screened: Sequence[ScreenedCheckpoint]) -> ScreenedCheckpoint | None:
    """The lowest validation loss among the checkpoints that passed their screen (the latest such
    checkpoint when none has a loss); None when none passed."""
    passed = [row for row in screened if row.passed]
    if not passed:
        return None
    if all(row.eval_loss is None for row in passed):
        return max(passed, key=lambda row: row.step)
    # a tie goes to the earlier checkpoint: as good on validation, nearer the base
    return min(
        passed, key=lambda row: (row.eval_loss if row.eval_loss is not None else float("inf"), row.step)
    )


def table(screened: Sequence[ScreenedCheckpoint]) -> str:
    """One line per checkpoint: what each screen measured (harm = base - checkpoint, points)."""
    lines = []
    for row in screened:
        parts = [f"step {row.step}"]
        if row.eval_loss is not None:
            parts.append(f"eval_loss {row.eval_loss:.4f}")
        for name, test in (("capability", row.capability), ("harmful refusal", row.safety)):
            if test is not None:
                parts.append(
                    f"{name} harm {test.estimate:+.1f} (p {test.p_value:.3g} vs margin {test.margin:g}, "
                    f"n {test.n})"
                )
        parts.append("passed" if row.passed else "FAILED")
        lines.append(", ".join(parts))
    return "\n".join(lines)
