"""Resumable checkpoints without pickle: optimizer, scheduler and RNG state as safetensors + JSON.

transformers' Trainer saves that state with `torch.save` and reads it back with `torch.load`; the
house rule is that nothing is ever unpickled, so `SafeCheckpointMixin` replaces those four methods
and drops `training_args.bin`. A checkpoint directory then holds only safetensors and JSON, and one
that still holds a pickle file is refused before it is read.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from services.core.ml.models import pickle_files
from services.training.job import RESUMABLE_STATE

OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE, SCALER_FILE, _ = RESUMABLE_STATE
META_KEY = "tuneline"


class CheckpointError(Exception):
    """A checkpoint directory cannot be used."""


def refuse_pickles(directory: str | os.PathLike[str]) -> None:
    found = pickle_files(directory)
    if found:
        raise CheckpointError(
            f"checkpoint {directory} holds pickle files {found}; tuneline resumes only from "
            "safetensors/JSON checkpoints written by its own workers"
        )


def _plain(value: Any) -> Any:
    """JSON-safe copy of optimizer/scheduler metadata (tuples → lists, 0-d tensors → numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def save_optimizer(state: dict[Any, Any], path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = _plain(value)
    meta = {"param_groups": _plain(state["param_groups"]), "scalars": scalars}
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})


def load_optimizer(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {})[META_KEY])
    state: dict[Any, dict[str, Any]] = {}
    for key, tensor in load_file(str(path)).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_rng(path: Path) -> None:
    python_state = random.getstate()
    numpy_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    tensors = {
        "cpu": torch.random.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(numpy_state[1], dtype=np.int64)),
    }
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.random.get_rng_state()
    meta = {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
    }
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})


def load_rng(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {})[META_KEY])
    tensors = load_file(str(path))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(tensors["cpu"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.random.set_rng_state(tensors["cuda"])


class SafeCheckpointMixin:
    """Put before a transformers/TRL Trainer in the bases: its checkpoints hold no pickles."""

    args: Any
    optimizer: Any
    lr_scheduler: Any
    accelerator: Any

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        save_optimizer(self.optimizer.state_dict(), Path(output_dir) / OPTIMIZER_FILE)
        (Path(output_dir) / SCHEDULER_FILE).write_text(json.dumps(_plain(self.lr_scheduler.state_dict())))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        refuse_pickles(checkpoint)
        optimizer_file = Path(checkpoint) / OPTIMIZER_FILE
        scheduler_file = Path(checkpoint) / SCHEDULER_FILE
        if optimizer_file.exists() and scheduler_file.exists():
            self.optimizer.load_state_dict(load_optimizer(optimizer_file))
            self.lr_scheduler.load_state_dict(json.loads(scheduler_file.read_text()))

    def _save_rng_state(self, output_dir: str) -> None:
        os.makedirs(output_dir, exist_ok=True)
        save_rng(Path(output_dir) / RNG_FILE)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None and (Path(checkpoint) / RNG_FILE).exists():
            load_rng(Path(checkpoint) / RNG_FILE)

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self.args.should_save:
            (Path(output_dir) / SCALER_FILE).write_text(json.dumps(_plain(scaler.state_dict())))

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if checkpoint is not None and scaler is not None and (Path(checkpoint) / SCALER_FILE).exists():
            scaler.load_state_dict(json.loads((Path(checkpoint) / SCALER_FILE).read_text()))

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict)  # type: ignore[misc]
        target = Path(output_dir or self.args.output_dir) / "training_args.bin"
        target.unlink(missing_ok=True)  # a pickle of the arguments; the recipe is recorded instead
