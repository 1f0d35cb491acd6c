"""Preference methods: dpo (DPOTrainer, sigmoid loss), ipo (DPOTrainer, ipo loss) and kto
(KTOTrainer), each checkpointing without pickle."""

from __future__ import annotations

from typing import Any

from services.training.checkpoints import SafeCheckpointMixin
from services.training.job import TrainingJob


def build_dpo(job: TrainingJob, common: dict[str, Any], shared: dict[str, Any]) -> Any:
    from trl import DPOConfig, DPOTrainer

    class SafeDPOTrainer(SafeCheckpointMixin, DPOTrainer):
        pass

    recipe = job.recipe
    config = DPOConfig(
        **common,
        max_length=recipe.max_seq_len,
        beta=recipe.beta,
        loss_type=["ipo" if recipe.method == "ipo" else "sigmoid"],
    )
    return SafeDPOTrainer(args=config, **shared)


def build_kto(job: TrainingJob, common: dict[str, Any], shared: dict[str, Any]) -> Any:
    from trl import KTOConfig, KTOTrainer

    class SafeKTOTrainer(SafeCheckpointMixin, KTOTrainer):
        pass

    config = KTOConfig(**common, max_length=job.recipe.max_seq_len, beta=job.recipe.beta)
    return SafeKTOTrainer(args=config, **shared)
