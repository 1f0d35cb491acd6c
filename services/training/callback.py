"""The Trainer callback a worker runs: progress and checkpoints to the service, stops when asked.

Imported by the worker process only (it imports transformers); the service reads the messages
it produces through `job.parse`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from services.core.artifacts import ArtifactNotFound, ArtifactStore
from services.training.checkpoints import refuse_pickles
from services.training.job import Checkpoint, Progress, Started, TrainingJob, WorkerMessage


def earlier_checkpoints(store: ArtifactStore, job: TrainingJob) -> list[dict[str, Any]]:
    """The checkpoints earlier attempts of a resumed run saved (none for a fresh run)."""
    if job.resume_from is None:
        return []
    try:
        return list(store.read_named_json(job.checkpoint_ref_key).get("history") or [])
    except ArtifactNotFound:
        return []


class ReportingCallback(TrainerCallback):
    """Progress and checkpoints to the service; stops at a step boundary when asked."""

    def __init__(
        self, job: TrainingJob, report: Callable[[WorkerMessage], None], stop: threading.Event
    ) -> None:
        self.job = job
        self.report = report
        self.stop = stop
        self.store = ArtifactStore(job.artifact_root)
        self.started_at = time.monotonic()
        self.start_step = 0
        self.last_tokens: tuple[float, float] | None = None
        self.losses: list[float] = []
        self.eval_losses: dict[int, float] = {}
        self.history = earlier_checkpoints(self.store, job)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.started_at = time.monotonic()
        self.start_step = state.global_step
        self.report(Started(total_steps=state.max_steps, resumed_from_step=state.global_step or None))

    def _tokens_per_second(self, state: Any) -> float | None:
        seen = float(getattr(state, "num_input_tokens_seen", 0) or 0)
        now = time.monotonic()
        previous, self.last_tokens = self.last_tokens, (now, seen)
        if previous is None or seen <= previous[1] or now <= previous[0]:
            return None
        return (seen - previous[1]) / (now - previous[0])

    def _eta(self, state: Any) -> float | None:
        done = int(state.global_step) - self.start_step
        if done <= 0:
            return None
        elapsed = time.monotonic() - self.started_at
        return max((int(state.max_steps) - int(state.global_step)) * elapsed / done, 0.0)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))
        if "eval_loss" in logs:
            self.eval_losses[int(state.global_step)] = float(logs["eval_loss"])
        self.report(
            Progress(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=float(state.epoch or 0.0),
                loss=logs.get("loss"),
                eval_loss=logs.get("eval_loss"),
                learning_rate=logs.get("learning_rate"),
                tokens_per_second=self._tokens_per_second(state) if "loss" in logs else None,
                eta_seconds=self._eta(state),
            )
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.stop.is_set():
            control.should_training_stop = True
            control.should_save = False

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        refuse_pickles(folder)
        tree = self.store.put_tree(folder)
        step = int(state.global_step)
        entry = {"step": step, "tree": tree.model_dump(mode="json"), "eval_loss": self.eval_losses.get(step)}
        # every checkpoint of the run, across attempts: the checkpoint choice screens them all
        self.history = [h for h in self.history if int(h["step"]) < step] + [entry]
        pointer = {"step": step, "tree": entry["tree"], "history": self.history}
        self.store.put_named_json(self.job.checkpoint_ref_key, pointer)
        self.report(Checkpoint(step=state.global_step, tree=tree))
