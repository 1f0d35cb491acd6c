"""QLoRA for real on a CUDA GPU: 4-bit base (bitsandbytes), LoRA adapter on top. `make test-gpu`."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from safetensors.torch import load_file

from services.training import preflight
from services.training.worker import run
from tests.support.training import job_for, recipe
from tests.unit.test_training_methods import Collect

pytestmark = pytest.mark.gpu


def test_qlora_trains_a_4bit_base_on_cuda(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    assert torch.cuda.is_available(), "the gpu tests need CUDA: run them on the GPU machine (make test-gpu)"
    training = recipe("sft-qlora", lora={"target_modules": ["q_proj", "v_proj"]})
    preflight.check_device(training, "cuda")  # bitsandbytes importable, CUDA present
    job = job_for(tmp_path, training, base_dir=tiny_model).model_copy(update={"device": "cuda"})
    report = Collect()
    run(job, report, threading.Event())
    losses = report.train_losses()
    assert losses[-1] < losses[0], losses
    done = report.of("done")[0]
    adapter = load_file(Path(done["model_dir"]) / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)
    assert done["peak_memory_mb"] > 0
