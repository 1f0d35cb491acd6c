"""Model loads from several threads at once leave transformers' process-global state as they found it."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from services.core.ml.models import load_causal_lm
from services.training.preflight import ModuleMap


def test_concurrent_loads_and_preflights_keep_weights_tied_and_off_meta(tiny_model: Path) -> None:
    """Without MODEL_BUILD_LOCK this leaves `tie_weights` a no-op and lm_head on the meta device.

    transformers 5 patches `PreTrainedModel.tie_weights` (and the torch init functions) while it
    builds a model and restores what it saved; overlapping builds restore each other's patches. Seen
    in CI as "Cannot copy out of meta tensor" in every later load of the pytest process.
    """
    from transformers import PreTrainedModel

    tie_weights = PreTrainedModel.tie_weights
    linspace = torch.linspace
    errors: list[Exception] = []
    start = threading.Barrier(6)

    def loads() -> None:
        try:
            start.wait()
            for _ in range(6):
                load_causal_lm(tiny_model)
        except Exception as error:  # noqa: BLE001 - reported below, on the main thread
            errors.append(error)

    def preflights() -> None:
        try:
            start.wait()
            for _ in range(6):
                ModuleMap.of(tiny_model)
        except Exception as error:  # noqa: BLE001 - reported below, on the main thread
            errors.append(error)

    threads = [threading.Thread(target=loads) for _ in range(4)]
    threads += [threading.Thread(target=preflights) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert PreTrainedModel.tie_weights is tie_weights
    assert torch.linspace is linspace
    assert torch.empty(1).device.type == "cpu"

    model = load_causal_lm(tiny_model)
    on_meta = [name for name, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    assert on_meta == []
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
