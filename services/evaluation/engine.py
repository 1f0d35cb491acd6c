"""Greedy generation for every arm of an evaluation, batched, on one loaded base model.

The base is loaded once. Adapter arms (the candidate, the production version) are PEFT adapters
attached to it under their own names; the baseline and few-shot arms run the same module with the
adapters disabled, so a base evaluated next to its adapter costs no second copy of the weights.
Full-weight arms (full SFT, merges, soups) load their own model. Quantized arms are quantized on
load (int8 dynamic on CPU; bitsandbytes on CUDA).

Safety: safetensors only (a directory holding a pickle is refused), `trust_remote_code` never set,
and an adapter whose declared base hash differs from the loaded base is refused before loading.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.refs import QuantizationConfig
from services.core.ml.models import MODEL_BUILD_LOCK, attach_adapter, inference_dtype, load_tokenizer
from services.core.ml.models import check_adapter as core_check_adapter
from services.core.ml.models import refuse_pickles as core_refuse_pickles

Messages = list[dict[str, str]]


class EngineError(Exception):
    """A model or adapter that cannot be loaded safely; the message names it and the fix."""


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    seconds: float


@dataclass
class _Arm:
    model: Any
    adapter: str | None  # a PEFT adapter name on the shared base, or None: adapters disabled


def refuse_pickles(folder: Path, what: str) -> None:
    core_refuse_pickles(folder, what, EngineError)


def check_adapter(adapter_dir: Path, base_modules: set[str]) -> dict[str, Any]:
    """The adapter's config, refused before loading when it cannot fit the base."""
    return core_check_adapter(adapter_dir, base_modules, EngineError)


# prompts per generate() call. On 2 CPU cores, SmolLM2-135M answered 64 prompts (48 tokens) in
# 26.9 s at 16, 20.8 s at 32 and 16.3 s at 64
BATCH_SIZE = 32


class Engine:
    def __init__(
        self, base_dir: str | Path, *, device: str = "cpu", batch_size: int = BATCH_SIZE, dtype: str = "auto"
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        self.base_dir = Path(base_dir)
        refuse_pickles(self.base_dir, "base model")
        self.tokenizer = load_tokenizer(self.base_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._dtype = inference_dtype(dtype, device)
        self._auto = AutoModelForCausalLM
        self.base = self._load(self.base_dir)
        self.model: Any = self.base  # becomes a PeftModel once an adapter is attached
        self.arms: dict[str, _Arm] = {}

    def _load(self, folder: Path, quantization: QuantizationConfig | None = None) -> Any:
        kwargs: dict[str, Any] = {"dtype": self._dtype, "local_files_only": True, "trust_remote_code": False}
        method = quantization.method if quantization else "none"
        if method in ("bnb-8bit", "bnb-4bit"):
            if self.device != "cuda":
                raise EngineError(
                    f"quantization {method} needs CUDA (bitsandbytes); evaluate it on a GPU worker "
                    "(TUNELINE_EVALUATION_DEVICE=cuda)"
                )
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=method == "bnb-8bit",
                load_in_4bit=method == "bnb-4bit",
                bnb_4bit_quant_type=(quantization.quant_type if quantization else None) or "nf4",
                bnb_4bit_compute_dtype=self._dtype,
            )
            kwargs["device_map"] = {"": 0}
        with MODEL_BUILD_LOCK:
            model: Any = self._auto.from_pretrained(folder, **kwargs)
        if method not in ("bnb-8bit", "bnb-4bit"):
            model.to(self.device)
        if method == "int8-dynamic":
            if self.device != "cpu":
                raise EngineError("int8-dynamic quantization runs on CPU; set TUNELINE_EVALUATION_DEVICE=cpu")
            model = self.torch.ao.quantization.quantize_dynamic(
                model, {self.torch.nn.Linear}, dtype=self.torch.qint8
            )
        model.eval()
        return model

    def base_module_names(self) -> set[str]:
        return {name.rsplit(".", 1)[-1] for name, _ in self.base.named_modules() if name}

    # -- arms -----------------------------------------------------------------------------------
    def add_base_arm(self, name: str) -> None:
        self.arms[name] = _Arm(self.base, None)

    def add_adapter_arm(self, name: str, adapter_dir: Path, quantization: QuantizationConfig | None) -> None:
        check_adapter(adapter_dir, self.base_module_names())
        if quantization is not None and quantization.method != "none":
            # a quantized adapter version: its own quantized copy of the base with the adapter merged
            merged = attach_adapter(self._load(self.base_dir), adapter_dir, "default").merge_and_unload()
            self.arms[name] = _Arm(self._quantized(merged, quantization), None)
            return
        self.model = attach_adapter(self.model, adapter_dir, name)
        self.model.eval()
        for arm in self.arms.values():  # arms made before the wrap now run through the PeftModel
            if arm.model is self.base:
                arm.model = self.model
        self.arms[name] = _Arm(self.model, name)

    def add_weights_arm(self, name: str, weights_dir: Path, quantization: QuantizationConfig | None) -> None:
        refuse_pickles(weights_dir, "model weights")
        self.arms[name] = _Arm(self._load(weights_dir, quantization), None)

    def _quantized(self, model: Any, quantization: QuantizationConfig) -> Any:
        if quantization.method == "int8-dynamic":
            return self.torch.ao.quantization.quantize_dynamic(
                model, {self.torch.nn.Linear}, dtype=self.torch.qint8
            ).eval()
        raise EngineError(
            f"quantization {quantization.method} of an adapter version needs its merged, quantized "
            "weights (a merging-service export); evaluate that version instead"
        )

    @contextlib.contextmanager
    def active(self, arm_name: str) -> Iterator[Any]:
        arm = self.arms[arm_name]
        model = arm.model
        if hasattr(model, "disable_adapter") and hasattr(model, "set_adapter"):
            if arm.adapter is None:
                with model.disable_adapter():
                    yield model
                return
            model.set_adapter(arm.adapter)
        yield model

    # -- generation -----------------------------------------------------------------------------
    def prompt_text(self, messages: Messages) -> str:
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def generate(
        self,
        arm: str,
        prompts: Sequence[Messages],
        *,
        max_new_tokens: int | Sequence[int],
        min_new_tokens: int = 0,
        batch_size: int | None = None,
    ) -> list[Generation]:
        """Greedy answers in input order; prompts are batched by length to limit padding. Per-prompt
        budgets (a sequence) batch prompts of the same budget together, so a short answer never
        waits on a long one and every prompt gets exactly its own budget."""
        texts = [self.prompt_text(p) for p in prompts]
        budgets = [max_new_tokens] * len(texts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (budgets[i], lengths[i]))
        size = batch_size or self.batch_size
        results: list[Generation | None] = [None] * len(texts)
        with self.active(arm) as model:
            start = 0
            while start < len(order):
                budget = budgets[order[start]]
                chunk = [i for i in order[start : start + size] if budgets[i] == budget]
                start += len(chunk)
                for index, generation in zip(
                    chunk,
                    self._batch(model, [texts[i] for i in chunk], budget, min_new_tokens),
                    strict=True,
                ):
                    results[index] = generation
        return [r for r in results if r is not None]

    def _batch(
        self, model: Any, texts: list[str], max_new_tokens: int, min_new_tokens: int
    ) -> list[Generation]:
        torch = self.torch
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        seconds = time.perf_counter() - started
        new = output[:, encoded["input_ids"].shape[1] :]
        stops = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        generations = []
        for row in new.tolist():
            count = next((i for i, tok in enumerate(row) if tok in stops), len(row))
            text = self.tokenizer.decode(row[:count], skip_special_tokens=True)
            generations.append(Generation(text=text.strip(), new_tokens=count, seconds=seconds))
        return generations

    def time_per_token(self, arm: str, prompt: Messages, tokens: int) -> float:
        """Seconds per generated token for one prompt alone (exactly `tokens` new tokens)."""
        generation = self.generate(arm, [prompt], max_new_tokens=tokens, min_new_tokens=tokens, batch_size=1)[
            0
        ]
        return generation.seconds / max(1, tokens)
