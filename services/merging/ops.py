"""The merges themselves, on local directories. Plain code: the handler runs them in a thread.

- `merge_into_base`: PEFT's `merge_and_unload`, with the merged-vs-unmerged difference measured
  on probe prompts (largest next-token logit difference, greedy-token agreement).
- `combine_adapters`: PEFT's `add_weighted_adapter` (linear, cat, svd, ties, dare_ties,
  dare_linear, magnitude_prune), saved as one new adapter.
- `soup`: a weighted average of full models that share a base, streamed tensor by tensor from
  the safetensors files and written shard by shard, so only one output shard and one tensor per
  input are ever held; the peak of those live tensor bytes is returned.

Safetensors only, `trust_remote_code` never set.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.refs import MergeDifference
from services.core.ml.models import TOKENIZER_FILES, attach_adapter, load_causal_lm, load_tokenizer

PROBES = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "What is 12 plus 30?",
    "Summarise: the meeting moved to Tuesday at noon.",
    "Translate 'good morning' into French.",
    "Give me a JSON object with a key name.",
    "Why do leaves fall in autumn?",
)
CONFIG_FILES = ("config.json", "generation_config.json", "chat_template.jinja", *TOKENIZER_FILES)


class MergeError(Exception):
    pass


def _load(path: Path) -> Any:
    return load_causal_lm(path).eval()


def _probe(model: Any, tokenizer: Any, tokens: int) -> tuple[list[Any], list[list[int]]]:
    import torch

    logits, greedy = [], []
    with torch.inference_mode():
        for prompt in PROBES:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            logits.append(model(**ids).logits[0, -1].float())
            out = model.generate(
                **ids,
                do_sample=False,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            greedy.append(out[0, ids["input_ids"].shape[1] :].tolist())
    return logits, greedy


def merge_into_base(
    base_dir: Path, adapter_dir: Path, out_dir: Path, *, tolerance: float = 1e-3, tokens: int = 16
) -> MergeDifference:
    tokenizer = load_tokenizer(base_dir)
    model = attach_adapter(_load(base_dir), adapter_dir, "default").eval()
    unmerged_logits, unmerged_greedy = _probe(model, tokenizer, tokens)
    merged = model.merge_and_unload().eval()
    merged_logits, merged_greedy = _probe(merged, tokenizer, tokens)
    difference = max(float((a - b).abs().max()) for a, b in zip(unmerged_logits, merged_logits, strict=True))
    same = sum(
        x == y for a, b in zip(unmerged_greedy, merged_greedy, strict=True) for x, y in zip(a, b, strict=True)
    )
    total = sum(len(a) for a in unmerged_greedy)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return MergeDifference(
        probes=len(PROBES),
        max_abs_logit_diff=difference,
        greedy_agreement=same / total,
        tolerance=tolerance,
    )


def combine_adapters(
    base_dir: Path,
    adapters: Sequence[Path],
    weights: Sequence[float],
    method: str,
    density: float | None,
    out_dir: Path,
) -> dict[str, Any]:
    """The combined adapter in `out_dir`; returns its adapter_config."""
    model = _load(base_dir)
    names = [f"input{n}" for n in range(len(adapters))]
    for name, adapter in zip(names, adapters, strict=True):
        model = attach_adapter(model, adapter, name)
    kwargs: dict[str, Any] = {}
    if method in ("ties", "dare_ties", "dare_linear", "magnitude_prune"):
        kwargs["density"] = density if density is not None else 0.7
    try:
        model.add_weighted_adapter(
            names, list(weights), adapter_name="merged", combination_type=method, **kwargs
        )
    except ValueError as error:
        raise MergeError(f"PEFT refused the {method} combination: {error}") from None
    staging = out_dir.parent / f".{out_dir.name}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=["merged"])
    saved = staging / "merged" if (staging / "merged").is_dir() else staging
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(saved, out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    config = json.loads((out_dir / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = None  # the ModelRef names the base by hash
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return dict(config)


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """tensor name → the safetensors file that holds it."""
    from safetensors import safe_open

    where: dict[str, Path] = {}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MergeError(f"{model_dir}: no *.safetensors weights")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                where[name] = path
    return where


def soup(model_dirs: Sequence[Path], weights: Sequence[float], out_dir: Path) -> float:
    """Weighted average of the models, shard by shard; returns the peak live tensor MB."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    maps = [_tensor_files(d) for d in model_dirs]
    names = list(maps[0])
    for directory, mapping in zip(model_dirs[1:], maps[1:], strict=True):
        if set(mapping) != set(names):
            missing = sorted(set(names) ^ set(mapping))[:3]
            raise MergeError(f"{directory} holds other tensors than {model_dirs[0]} (e.g. {missing})")
    total = float(sum(weights))
    shares = [w / total for w in weights]
    out_dir.mkdir(parents=True, exist_ok=True)
    peak = 0
    index: dict[str, str] = {}
    for shard in sorted({p.name for p in maps[0].values()}):
        output: dict[str, Any] = {}
        held = 0
        for name in (n for n in names if maps[0][n].name == shard):
            accumulator = None
            dtype = None
            for mapping, share in zip(maps, shares, strict=True):
                with safe_open(str(mapping[name]), framework="pt") as handle:
                    tensor = handle.get_tensor(name)
                dtype = tensor.dtype
                scaled = tensor.to(torch.float32) * share
                accumulator = scaled if accumulator is None else accumulator + scaled
                peak = max(peak, held + 2 * accumulator.numel() * 4 + tensor.numel() * tensor.element_size())
                del tensor, scaled
            assert accumulator is not None and dtype is not None
            output[name] = accumulator.to(dtype).contiguous()
            held += output[name].numel() * output[name].element_size()
            index[name] = shard
        save_file(output, str(out_dir / shard), metadata={"format": "pt"})
        del output
    if len({*index.values()}) > 1:
        (out_dir / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": index}, indent=2, sort_keys=True)
        )
    for name in CONFIG_FILES:
        if (model_dirs[0] / name).exists():
            shutil.copy2(model_dirs[0] / name, out_dir / name)
    return peak / 2**20


def soup_in_memory(model_dirs: Sequence[Path], weights: Sequence[float], out_dir: Path) -> None:
    """The naive soup, for comparison in bench/merging.py: every model loaded whole at once."""
    import torch

    models = [_load(d) for d in model_dirs]
    total = float(sum(weights))
    states = [m.state_dict() for m in models]
    merged = {
        k: sum(s[k].to(torch.float32) * (w / total) for s, w in zip(states, weights, strict=True))
        for k in states[0]
    }
    models[0].load_state_dict({k: v.to(states[0][k].dtype) for k, v in merged.items()})
    models[0].save_pretrained(out_dir)
