"""Supervised fine-tuning (sft-lora, sft-qlora, sft-full): TRL SFTTrainer, optionally with the replay
anchor that holds the adapter to its base on replayed rows."""

from __future__ import annotations

from typing import Any

import torch

from services.training.checkpoints import SafeCheckpointMixin
from services.training.job import TrainingJob
from services.training.methods.data import ANCHOR_COLUMN
from services.training.methods.losses import item_count, shifted_cross_entropy, shifted_kl


def sft_trainer_classes() -> tuple[type, type]:
    from trl import SFTConfig, SFTTrainer

    class SafeSFTTrainer(SafeCheckpointMixin, SFTTrainer):
        pass

    return SFTConfig, SafeSFTTrainer


class _WithAnchorColumn:
    """Wraps TRL's collator: each batch also carries which of its rows are self-replay (1) or not (0)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.collate(examples)
        batch[ANCHOR_COLUMN] = torch.tensor([int(e.get(ANCHOR_COLUMN, 0)) for e in examples])
        return batch


def replay_anchor_trainer_class() -> type:
    """SFT whose self-replay rows are trained toward the base's full next-token distribution.

    On a self-replay row the loss per completion token is alpha · T² · KL(base_T ‖ adapter_T) +
    (1 - alpha) · cross-entropy; every other row takes task_alpha (default 0) in place of alpha.
    prompt_alpha (default 0) adds the same KL at every row's prompt positions, which no other term
    trains. The base is the model with its adapter switched off, so no second copy is loaded, and it
    runs only on the rows some KL term needs.
    A greedy answer says what the base would say; the distribution says how sure it was of every
    alternative, which holds the adapter closer to the base off the task (learning without forgetting).
    Evaluation batches get plain cross-entropy, comparable with every other recipe's eval loss.
    """
    _, base = sft_trainer_classes()

    class ReplayAnchorTrainer(base):  # type: ignore[misc, valid-type]
        anchor_alpha: float = 1.0
        anchor_task_alpha: float = 0.0
        anchor_temperature: float = 1.0
        anchor_prompt_alpha: float = 0.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            trainer: Any = self  # TRL's attributes are untyped
            trainer.data_collator = _WithAnchorColumn(trainer.data_collator)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            trainer: Any = self
            if ANCHOR_COLUMN not in trainer._signature_columns:
                trainer._signature_columns = [*trainer._signature_columns, ANCHOR_COLUMN]

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            anchored = inputs.pop(ANCHOR_COLUMN).bool()
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            outputs = model(**forward)
            labels = inputs["labels"]
            alpha = torch.where(anchored, self.anchor_alpha, self.anchor_task_alpha)
            prompt_alpha = self.anchor_prompt_alpha
            if not model.training:
                alpha, prompt_alpha = torch.zeros_like(alpha), 0.0
            rows = (alpha > 0) | (prompt_alpha > 0)
            teacher_logits = None
            if rows.any():
                with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
                    teacher_logits = model(
                        input_ids=forward["input_ids"][rows],
                        attention_mask=forward["attention_mask"][rows],
                        use_cache=False,
                    ).logits
            per_token, mask = shifted_cross_entropy(outputs.logits, labels)
            reading = per_token.new_zeros(())
            if teacher_logits is not None:
                kd = shifted_kl(outputs.logits[rows], teacher_logits, self.anchor_temperature)
                weight = alpha[rows, None].to(kd.dtype)
                per_token = per_token.clone()
                per_token[rows] = weight * kd + (1 - weight) * per_token[rows]
                if prompt_alpha > 0:  # positions that read the prompt: attended, not trained on
                    prompt = forward["attention_mask"][rows][:, 1:].bool() & ~mask[rows]
                    reading = prompt_alpha * (kd * prompt).sum()
            loss = ((per_token * mask).sum() + reading) / item_count(num_items_in_batch, mask)
            return (loss, outputs) if return_outputs else loss

    return ReplayAnchorTrainer


def sft_config(job: TrainingJob, common: dict[str, Any]) -> Any:
    config_cls, _ = sft_trainer_classes()
    return config_cls(
        **common,
        max_length=job.recipe.max_seq_len,
        packing=job.recipe.packing,
        completion_only_loss=True,
        dataset_num_proc=None,
    )


def build(job: TrainingJob, common: dict[str, Any], shared: dict[str, Any]) -> Any:
    """SFTTrainer; with the recipe's replay anchor, the anchored SFTTrainer."""
    config = sft_config(job, common)
    anchor = job.recipe.replay_anchor if job.data_format == "sft" else None
    if anchor is None:
        _, trainer_cls = sft_trainer_classes()
        return trainer_cls(args=config, **shared)
    anchored = replay_anchor_trainer_class()(args=config, **shared)
    anchored.anchor_alpha, anchored.anchor_temperature = anchor.alpha, anchor.temperature
    anchored.anchor_task_alpha, anchored.anchor_prompt_alpha = anchor.task_alpha, anchor.prompt_alpha
    return anchored
