"""The `vllm` backend (GPU): one vLLM engine on the route's base, each adapter version a LoRA request.

vLLM batches continuously and mixes LoRA adapters in a batch itself; `max_loras` bounds how many
stay on the GPU. Needs CUDA and the `vllm` extra; without them it refuses with the fix.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from pathlib import Path
from typing import Any

from schemas.refs import ModelRef
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.ml.bases import resolve_exact_base
from services.core.ml.models import ModelResolutionError, check_adapter, load_tokenizer
from services.serving.generation import (
    BackendError,
    Completion,
    Job,
    context_length,
    cut_at_stop,
    within_context,
)
from services.serving.streaming import held_back


def require_vllm() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError(
            "the vllm backend needs torch with CUDA; install tuneline[vllm] on a GPU node"
        ) from None
    if not torch.cuda.is_available():
        raise BackendError(
            "the vllm backend needs a CUDA GPU and none is visible; use "
            "TUNELINE_SERVING_BACKEND=transformers on CPU, or schedule serving on a GPU node"
        )
    try:
        import vllm
    except ImportError:
        raise BackendError("the vllm backend needs the vllm package: pip install 'tuneline[vllm]'") from None
    return vllm


class VllmBackend:
    name = "vllm"

    def __init__(self, store: ArtifactStore, *, model_cache: str, work_dir: Path, max_loras: int = 4) -> None:
        self.vllm = require_vllm()
        self.store = store
        self.model_cache = model_cache
        self.work_dir = work_dir
        self.max_loras = max_loras
        self.engine: Any = None
        self.base_sha: str | None = None
        self.tokenizer: Any = None
        self.requests = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "base_sha256": self.base_sha, "requests": self.requests}

    def _base(self, ref: ModelRef) -> Path:
        try:
            return resolve_exact_base(ref.base, self.model_cache, self.store)
        except ModelResolutionError as error:
            raise BackendError(f"version {ref.version_id()}: {error}") from None

    def _engine(self, ref: ModelRef) -> Any:
        if self.engine is not None:
            if ref.base.sha256 != self.base_sha:
                raise BackendError(
                    f"version {ref.version_id()} is on base {ref.base.sha256[:12]}…, this vllm "
                    f"replica serves {(self.base_sha or '')[:12]}…; run one serving deployment per base"
                )
            return self.engine
        if ref.adapter is None and ref.weights is not None:
            raise BackendError(
                "the vllm backend serves a base with LoRA adapters; merged weights need their own replica"
            )
        base = self._base(ref)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=str(base), enable_lora=True, max_loras=self.max_loras, max_lora_rank=64,
            trust_remote_code=False, gpu_memory_utilization=0.5,
        )  # fmt: skip
        self.engine = AsyncLLM.from_engine_args(args)
        self.base_sha = ref.base.sha256
        self.tokenizer = load_tokenizer(base)
        return self.engine

    def chat_prompt(self, ref: ModelRef, messages: list[dict[str, str]]) -> str:
        tokenizer = self.tokenizer or load_tokenizer(self._base(ref))
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def check_prompt(self, ref: ModelRef, prompt: str, max_tokens: int) -> int:
        base = self._base(ref)
        tokenizer = self.tokenizer or load_tokenizer(base)
        tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return within_context(tokens, max_tokens, context_length(base))

    def _lora(self, ref: ModelRef) -> Any:
        if ref.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        target = self.work_dir / "adapters" / ref.adapter.artifact.sha256[:32]
        if not (target / ".complete").exists():
            try:
                self.store.fetch_tree(ref.adapter.artifact, target)
            except ArtifactError as error:
                raise BackendError(f"adapter {ref.adapter.artifact.key}: {error}") from None
            (target / ".complete").touch()
        modules = set(ref.adapter.target_modules)
        check_adapter(target, modules, BackendError)
        lora_id = zlib.crc32(ref.adapter.artifact.sha256.encode()) or 1
        return LoRARequest(ref.version_id(), lora_id, str(target))

    async def submit(self, job: Job) -> Completion:
        engine = await asyncio.to_thread(self._engine, job.ref)
        lora = self._lora(job.ref)
        params = self.vllm.SamplingParams(
            max_tokens=job.sampling.max_tokens,
            temperature=job.sampling.temperature,
            top_p=job.sampling.top_p,
            seed=job.sampling.seed,
            stop=list(job.sampling.stop) or None,
        )
        final: Any = None
        sent = ""
        async for output in engine.generate(job.prompt, params, uuid.uuid4().hex, lora_request=lora):
            final = output
            text = output.outputs[0].text
            if not output.finished:  # text that may begin a stop string waits for the next token
                text = text[: len(text) - held_back(text, job.sampling.stop)]
            if job.stream is not None and len(text) > len(sent) and text.startswith(sent):
                job.stream.put_nowait(text[len(sent) :])
                sent = text
        if job.stream is not None:
            job.stream.put_nowait(None)
        self.requests += 1
        choice = final.outputs[0]
        text, _ = cut_at_stop(choice.text, job.sampling.stop)
        return Completion(
            text, len(final.prompt_token_ids or []), len(choice.token_ids), choice.finish_reason or "stop"
        )
