"""The training data: rows read from the curated split, limited to what max_steps will see, answered by
the base model where a mix asks for self-replay, and turned into the dataset each TRL trainer
expects."""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from schemas.dataset import CANARY_KEY, SELF_REPLAY_KEY
from schemas.recipe import TrainingRecipe
from services.training.job import TrainingJob


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


def self_replay(model: Any, tokenizer: Any, rows: list[dict[str, Any]], job: TrainingJob) -> None:
    """Answers the marked rows with the base, reusing and extending the store's cached answers for
    this base, tokenizer, chat template, token budget and precision."""
    if not any(r.get(SELF_REPLAY_KEY) == "base-model" for r in rows):
        return
    from services.core.artifacts import ArtifactNotFound, ArtifactStore
    from services.core.ml.models import chat_template_sha256, tokenizer_sha256, weights_sha256

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


ANCHOR_COLUMN = "replay_anchor"


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
