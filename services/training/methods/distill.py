"""Distillation: SFTTrainer with a soft-label loss against a frozen teacher sharing the student's
tokenizer."""

from __future__ import annotations

from typing import Any

from services.training.job import TrainingJob
from services.training.methods.loading import load_model, use_cuda
from services.training.methods.losses import Distiller
from services.training.methods.sft import sft_config, sft_trainer_classes


def distill_trainer_class() -> type:
    _, base = sft_trainer_classes()

    class SoftLabelDistillationTrainer(base):  # type: ignore[misc, valid-type]
        distiller: Distiller

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            outputs = model(**forward)  # one student forward; the teacher's runs without gradients
            loss = self.distiller(outputs, inputs["labels"], forward, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

    return SoftLabelDistillationTrainer


def build(job: TrainingJob, common: dict[str, Any], shared: dict[str, Any]) -> Any:
    """The student's SFTTrainer with the distillation loss against the frozen teacher."""
    recipe = job.recipe
    assert recipe.distill is not None and job.teacher_dir is not None
    teacher = load_model(job.teacher_dir, job)
    teacher.eval()
    teacher.requires_grad_(False)
    if use_cuda(job):
        teacher.to("cuda")
    trainer = distill_trainer_class()(args=sft_config(job, common), **shared)
    trainer.distiller = Distiller(teacher, recipe.distill.temperature, recipe.distill.alpha)
    return trainer
