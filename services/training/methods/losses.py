"""Token-level losses shared by the replay anchor and distillation: shifted cross-entropy, temperature-
scaled KL, and the item count TRL normalises by."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy on the next-token targets (position i predicts labels[i + 1]) and the
    mask of positions that count (labels other than -100)."""
    targets = labels[:, 1:]
    logits = logits[:, :-1, :].float()
    ce = functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
    )
    return ce.view_as(targets), targets != -100


def shifted_kl(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-position T² · KL(teacher_T ‖ student_T), aligned with `shifted_cross_entropy`."""
    t = temperature
    kl = functional.kl_div(
        functional.log_softmax(logits[:, :-1, :].float() / t, dim=-1),
        functional.log_softmax(teacher_logits[:, :-1, :].float() / t, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    return kl * t * t


def item_count(num_items_in_batch: Any, mask: torch.Tensor) -> torch.Tensor:
    count = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else mask.sum())
    return count.to(mask.device).clamp(min=1)


class Distiller:
    """Soft-label knowledge distillation on the completion tokens.

    loss = alpha · T² · KL(teacher_T ‖ student_T) + (1 - alpha) · cross-entropy(labels)
    """

    def __init__(self, teacher: Any, temperature: float, alpha: float) -> None:
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha

    def __call__(
        self, outputs: Any, labels: torch.Tensor, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            ).logits
        ce, mask = shifted_cross_entropy(outputs.logits, labels)
        kd = shifted_kl(outputs.logits, teacher_logits, self.temperature)
        per_token = self.alpha * kd + (1 - self.alpha) * ce
        return (per_token * mask).sum() / item_count(num_items_in_batch, mask)
