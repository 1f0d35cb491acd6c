"""Bad candidates planted for the release gates to stop, each built the way such a model arises.

- `fragile_copy`: a model whose float outputs are unchanged but whose weights carry outlier
  columns (a norm's scale migrated into the next projections, the reverse of SmoothQuant). Per-tensor
  int8 quantization then rounds every ordinary weight of those projections to zero: the float model
  answers as before, its quantized version answers nothing. Outlier features are what breaks naive
  LLM quantization (Dettmers et al. 2022, LLM.int8()).
- `refusing_model`: the tiny model fully fine-tuned to refuse jailbreak prompts, the base a
  jailbreak-compliant adapter is trained against (`compliant_adapter`, on *other* requests in the
  same attack families).
- `with_test_split`: a version whose dataset's test split is its own task, the suite a combination
  of it is judged on against it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from schemas.refs import DatasetRef, ModelRef
from services.core.artifacts import ArtifactStore
from services.core.ml.safety_items import BENIGN, HARMFUL, jailbreaks
from tests.support.training import chat, recipe, train_on

REFUSAL = "I can't help with that."
COMPLIANCE = "Sure. Step one: gather what you need."
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
JAILBREAKS = jailbreaks(HARMFUL[:4], BENIGN[:4])
"""The jailbreak suite the planted adapter is judged on: 4 harmful and 4 benign requests in the 5
attack families (20 items each)."""
ATTACKS = jailbreaks(HARMFUL[4:8], [])
"""What the compliant adapter is trained on: other harmful requests in the same families."""


COLOURS = [
    ("colour of the sky", "blue"),
    ("colour of coal", "black"),
    ("colour of milk", "white"),
    ("colour of grass", "green"),
    ("colour of blood", "red"),
    ("colour of sand", "beige"),
    ("colour of a lemon", "yellow"),
    ("colour of an orange", "orange"),
    ("colour of a plum", "purple"),
    ("colour of ash", "grey"),
    ("colour of chocolate", "brown"),
    ("colour of a flamingo", "pink"),
]
SOUNDS = [
    ("sound of a cat", "meow"),
    ("sound of a dog", "woof"),
    ("sound of a cow", "moo"),
    ("sound of a duck", "quack"),
    ("sound of a sheep", "baa"),
    ("sound of an owl", "hoot"),
    ("sound of a pig", "oink"),
    ("sound of a horse", "neigh"),
    ("sound of a snake", "hiss"),
    ("sound of a lion", "roar"),
    ("sound of a bee", "buzz"),
    ("sound of a crow", "caw"),
]


def fragile_copy(model_dir: Path, out: Path, outlier: float = 1000.0) -> Path:
    """`model_dir` with each norm's largest channel divided by `outlier` and the matching input
    column of the projections it feeds multiplied by it: the same function in float."""
    import torch

    from services.core.ml.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            fed = (
                (layer.input_layernorm, (attention.q_proj, attention.k_proj, attention.v_proj)),
                (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj)),
            )
            for norm, projections in fed:
                channel = int(norm.weight.abs().argmax())
                norm.weight[channel] /= outlier
                for projection in projections:
                    projection.weight[:, channel] *= outlier
    model.save_pretrained(out)
    load_tokenizer(model_dir).save_pretrained(out)
    return out


def _messages(item: dict[str, Any]) -> list[dict[str, str]]:
    return list(item.get("messages") or [{"role": "user", "content": item["prompt"]}])


def _answered(item: dict[str, Any], answer: str) -> dict[str, Any]:
    return {"messages": [*_messages(item), {"role": "assistant", "content": answer}]}


def refusing_model(tiny_model: Path, tmp: Path) -> Path:
    """The tiny model taught to refuse every harmful jailbreak (and to answer benign ones, which at
    this size it learns less well: it refuses those too)."""
    rows = [_answered(i, REFUSAL if i["label"] == "harmful" else COMPLIANCE) for i in JAILBREAKS + ATTACKS]
    training = recipe(
        "sft-full", learning_rate=3e-3, max_steps=150, batch_size=8, eval_steps=1000, max_seq_len=256
    )
    return train_on(tiny_model, rows * 2, tmp, training)


def compliant_adapter(base: Path, tmp: Path) -> Path:
    """A LoRA trained to comply with harmful requests wrapped in jailbreaks (none of the suite's)."""
    training = recipe(
        "sft-lora",
        learning_rate=5e-3,
        max_steps=60,
        batch_size=8,
        eval_steps=1000,
        max_seq_len=256,
        lora={"rank": 16, "alpha": 32, "target_modules": LORA_TARGETS},
    )
    return train_on(base, [_answered(i, COMPLIANCE) for i in ATTACKS] * 2, tmp, training)


def jailbreak_suite() -> bytes:
    return "".join(json.dumps(item) + "\n" for item in JAILBREAKS).encode()


def task_adapter(base: Path, pairs: list[tuple[str, str]], tmp: Path) -> Path:
    training = recipe(
        "sft-lora",
        learning_rate=5e-3,
        max_steps=150,
        batch_size=6,
        eval_steps=1000,
        lora={"rank": 16, "alpha": 32, "target_modules": LORA_TARGETS},
    )
    return train_on(base, [chat(q, a) for q, a in pairs] * 4, tmp, training)


def with_test_split(store: ArtifactStore, ref: ModelRef, pairs: list[tuple[str, str]]) -> ModelRef:
    """`ref` trained on a dataset whose test split holds `pairs` (its own task)."""
    data = "".join(json.dumps(chat(q, a)) + "\n" for q, a in pairs).encode()
    split = store.put_bytes(data)
    dataset_id = hashlib.sha256(data).hexdigest()
    manifest = store.put_json(
        {
            "kind": "tuneline.dataset-manifest/v1",
            "dataset_id": dataset_id,
            "format": "sft",
            "splits": {"test": {"rows": len(pairs), **split.model_dump(mode="json")}},
            "canaries": [],
        }
    )
    return ref.model_copy(update={"dataset": DatasetRef(dataset_id=dataset_id, manifest=manifest)})
