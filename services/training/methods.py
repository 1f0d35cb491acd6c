"""TRL glue: one recipe → the TRL config, datasets and trainer of its method.

sft-lora/sft-qlora/sft-full → SFTTrainer; dpo → DPOTrainer (sigmoid loss); ipo → DPOTrainer with the
ipo loss; kto → KTOTrainer; distill → SFTTrainer with a soft-label distillation loss (temperature
and alpha of the recipe) against a frozen teacher sharing the student's tokenizer. Every trainer
here checkpoints without pickle (`SafeCheckpointMixin`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import EarlyStoppingCallback, TrainerCallback

from schemas.dataset import CANARY_KEY, SELF_REPLAY_KEY
from schemas.recipe import TrainingRecipe
from services.core.models import load_causal_lm
from services.training.checkpoints import SafeCheckpointMixin
from services.training.job import ADAPTER_METHODS, TrainingJob


def read_rows(path: str | None) -> list[dict[str, Any]]:
    if path is None or not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rows_within_steps(
    rows: list[dict[str, Any]], recipe: TrainingRecipe, data_format: str
) -> list[dict[str, Any]]:
    """The chat rows a max_steps run will train on. When max_steps x batch_size x
    gradient_accumulation is fewer rows than the split holds, the trainer would see a random subset
    anyway; choosing it here, seeded by the recipe, means self-replay answers and the teacher read
    only rows that are trained on, each exactly once. Canary rows are always kept (the
    memorization suite probes them); self-replay and written rows are sampled separately, so the
    subset keeps the split's share of each. Other formats and packing keep every row (a step there
    is not a fixed number of rows)."""
    if recipe.max_steps <= 0 or data_format != "sft" or recipe.packing:
        return rows
    budget = recipe.max_steps * recipe.batch_size * recipe.gradient_accumulation
    if budget >= len(rows):
        return rows
    kept = [i for i, r in enumerate(rows) if r.get(CANARY_KEY)]
    rest = [i for i, r in enumerate(rows) if not r.get(CANARY_KEY)]
    marked = [i for i in rest if rows[i].get(SELF_REPLAY_KEY) == "base-model"]
    written = [i for i in rest if rows[i].get(SELF_REPLAY_KEY) != "base-model"]
    room = max(budget - len(kept), 0)
    share = round(room * len(marked) / max(len(rest), 1))
    take_marked = min(len(marked), max(room - len(written), share))
    pick = random.Random(recipe.seed)
    chosen = kept + pick.sample(marked, take_marked) + pick.sample(written, room - take_marked)
    return [rows[i] for i in sorted(chosen)]


def _sft_example(row: dict[str, Any]) -> dict[str, Any]:
    """Conversational prompt/completion: the loss covers the last assistant turn only."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


SELF_REPLAY_TOKENS = 96
SELF_REPLAY_BATCH = 64


def answer_with_base(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    max_new_tokens: int,
    known: dict[str, str] | None = None,
) -> tuple[int, int, float, dict[str, str]]:
    """Self-replay: each chat row curation marked `answer_from: base-model` gets the base model's own
    greedy answer as its last assistant turn, in place, before any adapter exists. Such rows cost
    the base almost no loss, so they pull the adapter back wherever it would drift from what the
    base already does. `known` holds answers from an earlier run (prompt key → answer) on the same
    base and settings. Returns (rows answered, answers generated, seconds, every answer by key)."""
    answers: dict[str, str] = dict(known or {})
    marked = [r for r in rows if r.get(SELF_REPLAY_KEY) == "base-model"]
    if not marked:
        return 0, 0, 0.0, answers
    started = time.monotonic()
    prompts: dict[str, list[dict[str, str]]] = {}
    for row in marked:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.setdefault(json.dumps(messages[:last], sort_keys=True), messages[:last])
    keys = sorted((k for k in prompts if k not in answers), key=len)  # similar lengths, little padding
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    try:
        for start in range(0, len(keys), SELF_REPLAY_BATCH):
            chunk = keys[start : start + SELF_REPLAY_BATCH]
            texts = [
                tokenizer.apply_chat_template(prompts[k], add_generation_prompt=True, tokenize=False)
                for k in chunk
            ]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = output[:, encoded["input_ids"].shape[1] :]
            for key, ids in zip(chunk, new.tolist(), strict=True):
                answers[key] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = side
    for row in marked:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        answer = answers[json.dumps(messages[:last], sort_keys=True)]
        row["messages"] = [*messages[:last], {"role": "assistant", "content": answer}]
    return len(marked), len(keys), time.monotonic() - started, answers


def _self_replay(model: Any, tokenizer: Any, rows: list[dict[str, Any]], job: TrainingJob) -> None:
    """Answers the marked rows with the base, reusing and extending the store's cached answers for
    this base, tokenizer, chat template, token budget and precision."""
    if not any(r.get(SELF_REPLAY_KEY) == "base-model" for r in rows):
        return
    from services.core.artifacts import ArtifactNotFound, ArtifactStore
    from services.core.models import chat_template_sha256, tokenizer_sha256, weights_sha256

    budget = min(SELF_REPLAY_TOKENS, job.recipe.max_seq_len // 2)
    identity = json.dumps(
        [
            weights_sha256(job.base_dir),
            tokenizer_sha256(job.base_dir),
            chat_template_sha256(job.base_dir),
            budget,
            str(next(model.parameters()).dtype),
            job.recipe.method == "sft-qlora",
        ]
    )
    key = f"refs/cache/self-replay/{hashlib.sha256(identity.encode()).hexdigest()}.json"
    store = ArtifactStore(job.artifact_root)
    try:
        known = dict(store.read_named_json(key))
    except ArtifactNotFound:
        known = {}
    answered, generated, seconds, answers = answer_with_base(
        model, tokenizer, rows, max_new_tokens=budget, known=known
    )
    if generated:
        store.put_named_json(key, answers)
    print(
        f"self-replay: the base model answered {answered} rows "
        f"({generated} answers generated in {seconds:.1f} s, any others from the store's cache)",
        file=sys.stderr,
    )


def build_dataset(rows: list[dict[str, Any]], job: TrainingJob, *, anchors: bool = False) -> Dataset | None:
    """The TRL dataset of the method. `anchors`: each SFT example also says whether it is a self-replay
    row (the recipe's replay_anchor trains those toward the base's distribution)."""
    if not rows:
        return None
    method, fmt = job.recipe.method, job.data_format
    if fmt == "sft":
        examples = [_sft_example(r) for r in rows]
        if anchors:
            for example, row in zip(examples, rows, strict=True):
                example[ANCHOR_COLUMN] = int(row.get(SELF_REPLAY_KEY) == "base-model")
    elif method == "kto" and fmt == "preference":
        examples = []
        for r in rows:  # unpaired: each preference pair gives one desirable and one undesirable example
            examples.append(
                {"prompt": _user(r["prompt"]), "completion": _assistant(r["chosen"]), "label": True}
            )
            examples.append(
                {"prompt": _user(r["prompt"]), "completion": _assistant(r["rejected"]), "label": False}
            )
    elif fmt == "preference":
        examples = [
            {
                "prompt": _user(r["prompt"]),
                "chosen": _assistant(r["chosen"]),
                "rejected": _assistant(r["rejected"]),
            }
            for r in rows
        ]
    else:
        examples = [
            {
                "prompt": _user(r["prompt"]),
                "completion": _assistant(r["completion"]),
                "label": bool(r["label"]),
            }
            for r in rows
        ]
    return Dataset.from_list(examples)


def use_cuda(job: TrainingJob) -> bool:
    return job.device == "cuda" or (job.device == "auto" and torch.cuda.is_available())


def _dtype(cuda: bool, recipe: TrainingRecipe) -> torch.dtype:
    """The weights' dtype; on CPU they stay fp32 (precision bf16 there means autocast)."""
    if recipe.precision == "fp32" or not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def load_model(path: str, job: TrainingJob, *, quantize: bool = False) -> Any:
    cuda = use_cuda(job)
    kwargs: dict[str, Any] = {
        "dtype": _dtype(cuda, job.recipe),
        "local_files_only": True,
        "trust_remote_code": False,
    }
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_dtype(cuda, job.recipe),
        )
        kwargs["device_map"] = {"": 0}
    model = load_causal_lm(path, **kwargs)
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def lora_config(recipe: TrainingRecipe) -> Any:
    from peft import LoraConfig

    targets = list(recipe.lora.target_modules)
    return LoraConfig(
        r=recipe.lora.rank,
        lora_alpha=cast(int, recipe.lora.alpha),  # typed int in PEFT; a float works too
        lora_dropout=recipe.lora.dropout,
        # PEFT knows 'all-linear' only as the whole value, not as one name in a list
        target_modules="all-linear" if "all-linear" in targets else targets,
        task_type="CAUSAL_LM",
    )


def common_arguments(job: TrainingJob, has_eval: bool) -> dict[str, Any]:
    recipe = job.recipe
    cuda = use_cuda(job)
    save_steps = recipe.checkpoint_steps
    early = has_eval and recipe.early_stopping_patience is not None
    if early:  # the best checkpoint is restored at the end, so saves must line up with evaluations
        save_steps = recipe.eval_steps * math.ceil(recipe.checkpoint_steps / recipe.eval_steps)
    return {
        "output_dir": job.output_dir,
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup_ratio,
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.batch_size,
        "per_device_eval_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "logging_steps": 1,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": recipe.eval_steps if has_eval else None,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not cuda,
        # bf16 weights on CUDA; on CPU, precision bf16 is autocast over fp32 weights
        "bf16": _dtype(cuda, recipe) == torch.bfloat16 or (not cuda and recipe.precision == "bf16"),
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        "gradient_checkpointing": recipe.gradient_checkpointing,
    }


def _sft_trainer_classes() -> tuple[type, type]:
    from trl import SFTConfig, SFTTrainer

    class SafeSFTTrainer(SafeCheckpointMixin, SFTTrainer):
        pass

    return SFTConfig, SafeSFTTrainer


def _shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position cross-entropy on the next-token targets (position i predicts labels[i + 1]) and the
    mask of positions that count (labels other than -100)."""
    targets = labels[:, 1:]
    logits = logits[:, :-1, :].float()
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="none"
    )
    return ce.view_as(targets), targets != -100


def _shifted_kl(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-position T² · KL(teacher_T ‖ student_T), aligned with `_shifted_cross_entropy`."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(logits[:, :-1, :].float() / t, dim=-1),
        F.log_softmax(teacher_logits[:, :-1, :].float() / t, dim=-1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    return kl * t * t


def _item_count(num_items_in_batch: Any, mask: torch.Tensor) -> torch.Tensor:
    count = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else mask.sum())
    return count.to(mask.device).clamp(min=1)


class _Distiller:
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
        ce, mask = _shifted_cross_entropy(outputs.logits, labels)
        kd = _shifted_kl(outputs.logits, teacher_logits, self.temperature)
        per_token = self.alpha * kd + (1 - self.alpha) * ce
        return (per_token * mask).sum() / _item_count(num_items_in_batch, mask)


ANCHOR_COLUMN = "replay_anchor"


class _WithAnchorColumn:
    """Wraps TRL's collator: each batch also carries which of its rows are self-replay (1) or not (0)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(examples)
        batch[ANCHOR_COLUMN] = torch.tensor([int(e.get(ANCHOR_COLUMN, 0)) for e in examples])
        return batch


def _replay_anchor_trainer_class() -> type:
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
    _, base = _sft_trainer_classes()

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
            per_token, mask = _shifted_cross_entropy(outputs.logits, labels)
            reading = per_token.new_zeros(())
            if teacher_logits is not None:
                kd = _shifted_kl(outputs.logits[rows], teacher_logits, self.anchor_temperature)
                weight = alpha[rows, None].to(kd.dtype)
                per_token = per_token.clone()
                per_token[rows] = weight * kd + (1 - weight) * per_token[rows]
                if prompt_alpha > 0:  # positions that read the prompt: attended, not trained on
                    prompt = forward["attention_mask"][rows][:, 1:].bool() & ~mask[rows]
                    reading = prompt_alpha * (kd * prompt).sum()
            loss = ((per_token * mask).sum() + reading) / _item_count(num_items_in_batch, mask)
            return (loss, outputs) if return_outputs else loss

    return ReplayAnchorTrainer


def _distill_trainer_class() -> type:
    _, base = _sft_trainer_classes()

    class SoftLabelDistillationTrainer(base):  # type: ignore[misc, valid-type]
        distiller: _Distiller

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            forward = {k: v for k, v in inputs.items() if k != "labels"}
            forward["use_cache"] = False
            outputs = model(**forward)  # one student forward; the teacher's runs without gradients
            loss = self.distiller(outputs, inputs["labels"], forward, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

    return SoftLabelDistillationTrainer


def build_trainer(job: TrainingJob, tokenizer: Any, callbacks: list[TrainerCallback]) -> Any:
    recipe = job.recipe
    rows = read_rows(job.train_file)
    if not rows:
        raise ValueError(f"training split {job.train_file} holds no rows")
    every = len(rows)
    rows = rows_within_steps(rows, recipe, job.data_format)
    if len(rows) < every:
        print(
            f"max_steps {recipe.max_steps}: training on {len(rows)} of the split's {every} rows "
            f"(sampled with seed {recipe.seed}, each once)",
            file=sys.stderr,
        )
    evaluation = build_dataset(read_rows(job.eval_file), job)
    common = common_arguments(job, evaluation is not None)
    if evaluation is not None and recipe.early_stopping_patience is not None:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience),
        ]
    peft = lora_config(recipe) if recipe.method in ADAPTER_METHODS else None
    model = load_model(job.base_dir, job, quantize=recipe.method == "sft-qlora")
    if use_cuda(job) and recipe.method != "sft-qlora":
        model.to("cuda")
    _self_replay(model, tokenizer, rows, job)
    anchor = recipe.replay_anchor if job.data_format == "sft" else None
    train = build_dataset(rows, job, anchors=anchor is not None)
    assert train is not None
    method = recipe.method
    shared = {
        "model": model,
        "train_dataset": train,
        "eval_dataset": evaluation,
        "processing_class": tokenizer,
        "callbacks": callbacks,
        "peft_config": peft,
    }
    if method in ("sft-lora", "sft-qlora", "sft-full", "distill"):
        config_cls, trainer_cls = _sft_trainer_classes()
        config = config_cls(
            **common,
            max_length=recipe.max_seq_len,
            packing=recipe.packing,
            completion_only_loss=True,
            dataset_num_proc=None,
        )
        if method != "distill" and anchor is not None:
            anchored = _replay_anchor_trainer_class()(args=config, **shared)
            anchored.anchor_alpha, anchored.anchor_temperature = anchor.alpha, anchor.temperature
            anchored.anchor_task_alpha, anchored.anchor_prompt_alpha = anchor.task_alpha, anchor.prompt_alpha
            return anchored
        if method != "distill":
            return trainer_cls(args=config, **shared)
        assert recipe.distill is not None and job.teacher_dir is not None
        teacher = load_model(job.teacher_dir, job)
        teacher.eval()
        teacher.requires_grad_(False)
        if use_cuda(job):
            teacher.to("cuda")
        distiller = _Distiller(teacher, recipe.distill.temperature, recipe.distill.alpha)
        trainer = _distill_trainer_class()(args=config, **shared)
        trainer.distiller = distiller
        return trainer
    if method in ("dpo", "ipo"):
        from trl import DPOConfig, DPOTrainer

        class SafeDPOTrainer(SafeCheckpointMixin, DPOTrainer):
            pass

        config = DPOConfig(
            **common,
            max_length=recipe.max_seq_len,
            beta=recipe.beta,
            loss_type=["ipo" if method == "ipo" else "sigmoid"],
        )
        return SafeDPOTrainer(args=config, **shared)
    from trl import KTOConfig, KTOTrainer

    class SafeKTOTrainer(SafeCheckpointMixin, KTOTrainer):
        pass

    config = KTOConfig(**common, max_length=recipe.max_seq_len, beta=recipe.beta)
    return SafeKTOTrainer(args=config, **shared)
