"""The `transformers` backend: concurrent requests batched, adapters mixed in one batch through PEFT.

A base model is loaded once per base sha256; every adapter version on it is a named PEFT adapter,
and one `generate` call serves requests for different adapters (and the base) together through
PEFT's `adapter_names`. At most `max_resident_adapters` adapters stay loaded (least recently used
is evicted). Full-weight versions (merges, soups, quantized exports) get their own model, at most
`max_resident_models` of them. Generation runs on one worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.refs import ArtifactRef, ModelRef
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.ml.bases import resolve_exact_base
from services.core.ml.models import (
    ModelResolutionError,
    attach_adapter,
    check_adapter,
    inference_dtype,
    load_causal_lm,
    load_tokenizer,
    refuse_pickles,
)
from services.serving.generation import (
    BackendError,
    Completion,
    Job,
    PromptRefused,
    context_length,
    cut_at_stop,
    within_context,
)
from services.serving.streaming import RowStreamer

log = logging.getLogger(__name__)
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class _Engine:
    """One loaded model: a base (adapters attach to it) or a full-weight version."""

    key: str
    model: Any
    tokenizer: Any
    module_names: set[str]
    adapters: OrderedDict[str, Path] = field(default_factory=OrderedDict)  # LRU, newest last
    last_used: float = field(default_factory=time.monotonic)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        store: ArtifactStore,
        *,
        model_cache: str,
        work_dir: Path,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 8,
        batch_wait_ms: float = 10.0,
        max_resident_adapters: int = 4,
        max_resident_models: int = 2,
    ) -> None:
        self.store = store
        self.model_cache = model_cache
        self.work_dir = work_dir
        self.device = device
        self.dtype = dtype
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_resident_adapters = max_resident_adapters
        self.max_resident_models = max_resident_models
        self.engines: OrderedDict[str, _Engine] = OrderedDict()
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._worker: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # the generation thread changes engines; status() reads them
        self._bases: dict[str, Path] = {}
        self._tokenizers: dict[str, Any] = {}
        self._contexts: dict[str, int | None] = {}
        # chat prompts are rendered on executor threads: the first requests on a base arrive
        # together, and transformers' lazy import is not safe to race (ImportError under load)
        self._tokenizer_lock = threading.Lock()
        self.batches = 0
        self.batch_rows = 0
        self.adapter_loads = 0
        self.adapter_evictions = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.executor._shutdown:  # restarted after stop()
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._worker = asyncio.create_task(self._batch_loop(), name="serving-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self.executor.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.name,
                "device": self.device,
                "dtype": self.dtype,
                "models": list(self.engines),
                "resident_adapters": {k: list(e.adapters) for k, e in self.engines.items()},
                "batches": self.batches,
                "mean_batch_rows": round(self.batch_rows / self.batches, 3) if self.batches else None,
                "adapter_loads": self.adapter_loads,
                "adapter_evictions": self.adapter_evictions,
            }

    # -- requests ------------------------------------------------------------------------------------
    async def submit(self, job: Job) -> Completion:
        await self.queue.put(job)
        return await job.done

    def chat_prompt(self, ref: ModelRef, messages: list[dict[str, str]]) -> str:
        tokenizer = self._tokenizer_for(ref)
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def check_prompt(self, ref: ModelRef, prompt: str, max_tokens: int) -> int:
        tokens = len(self._tokenizer_for(ref)(prompt, add_special_tokens=False)["input_ids"])
        return within_context(tokens, max_tokens, self._context_length(ref))

    def _context_length(self, ref: ModelRef) -> int | None:
        sha = ref.base.sha256
        if sha not in self._contexts:
            self._contexts[sha] = context_length(self._base_dir(ref))
        return self._contexts[sha]

    def _tokenizer_for(self, ref: ModelRef) -> Any:
        sha = ref.base.sha256
        with self._tokenizer_lock:
            if sha not in self._tokenizers:
                self._tokenizers[sha] = load_tokenizer(self._base_dir(ref))
            return self._tokenizers[sha]

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> list[Job]:
        """The next request, and whatever else arrives within the batch wait (bounded)."""
        jobs = [await self.queue.get()]
        deadline = loop.time() + self.batch_wait_s
        while len(jobs) < self.max_batch_size * 4:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), timeout))
            except TimeoutError:
                break
        return jobs

    def _finish(self, job: Job, result: Completion | Exception) -> None:
        if isinstance(result, Exception):
            self._fail(job, result)
            return
        if job.stream is not None:
            job.stream.put_nowait(None)
        if not job.done.done():
            job.done.set_result(result)

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for group in self._groups(await self._gather(loop)):
                live = [j for j in group if not j.done.done()]
                if not live:
                    continue
                results = await self._run_isolated(live, loop)
                for job, result in zip(live, results, strict=True):
                    self._finish(job, result)

    async def _run_isolated(
        self, jobs: list[Job], loop: asyncio.AbstractEventLoop
    ) -> list[Completion | Exception]:
        """Run a batch; if it fails as a whole, run each request alone, so a failure stays its own.

        One request must never fail the others it was batched with (other routes, other tenants).
        """
        try:
            return await loop.run_in_executor(self.executor, self._run_batch, jobs, loop)
        except Exception as error:
            if len(jobs) == 1:
                log.exception("request failed alone on %s", jobs[0].ref.version_id())
                return [error]
            log.warning("batch of %d failed (%r); running each request alone", len(jobs), error)
        results: list[Completion | Exception] = []
        for job in jobs:
            results += await self._run_isolated([job], loop)
        return results

    def _fail(self, job: Job, error: Exception) -> None:
        if job.stream is not None:
            job.stream.put_nowait(None)
        if not job.done.done():
            job.done.set_exception(error)

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs that can share one `generate`: same loaded model, same sampling kind, bounded size."""
        groups: dict[tuple[object, ...], list[list[Job]]] = {}
        for job in jobs:
            key = (self._engine_key(job.ref), job.sampling.batch_key())
            chunks = groups.setdefault(key, [[]])
            adapters = {self._adapter_name(j.ref) for j in chunks[-1]} | {self._adapter_name(job.ref)}
            if len(chunks[-1]) >= self.max_batch_size or len(adapters - {BASE}) > self.max_resident_adapters:
                chunks.append([])
            chunks[-1].append(job)
        return [chunk for chunks in groups.values() for chunk in chunks if chunk]

    # -- on the generation thread -------------------------------------------------------------------
    @staticmethod
    def _engine_key(ref: ModelRef) -> str:
        if ref.adapter is not None and ref.quantization.method == "none":
            return f"base:{ref.base.sha256}"
        if ref.adapter is None and ref.weights is None:
            return f"base:{ref.base.sha256}"  # the bare base model
        return f"version:{ref.version_id()}"

    @staticmethod
    def _adapter_name(ref: ModelRef) -> str:
        if ref.adapter is not None and ref.quantization.method == "none":
            return f"a{ref.adapter.artifact.sha256[:24]}"
        return BASE

    def _base_dir(self, ref: ModelRef) -> Path:
        """Resolved and hash-verified once per base sha256."""
        sha = ref.base.sha256
        if sha not in self._bases:
            try:
                self._bases[sha] = resolve_exact_base(ref.base, self.model_cache, self.store)
            except ModelResolutionError as error:
                raise BackendError(f"version {ref.version_id()}: {error}") from None
        return self._bases[sha]

    def _fetch(self, artifact: ArtifactRef, what: str) -> Path:
        target = self.work_dir / what / artifact.sha256[:32]
        marker = target / ".complete"
        if not marker.exists():
            try:
                self.store.fetch_tree(artifact, target)
            except ArtifactError as error:
                raise BackendError(f"{what} {artifact.key}: {error}") from None
            marker.touch()
        return target

    def _load_model(self, folder: Path) -> Any:
        refuse_pickles(folder, "model weights", BackendError)
        model: Any = load_causal_lm(folder, dtype=inference_dtype(self.dtype, self.device))
        return model.to(self.device).eval()

    def _engine(self, ref: ModelRef) -> _Engine:
        key = self._engine_key(ref)
        engine = self.engines.get(key)
        if engine is not None:
            self.engines.move_to_end(key)
            return engine
        base_dir = self._base_dir(ref)
        if key.startswith("base:"):
            folder = base_dir
        else:
            if ref.quantization.method != "none":
                raise BackendError(
                    f"version {ref.version_id()} is quantized ({ref.quantization.method}); the transformers "
                    "backend serves unquantized versions: serve it with the vllm backend on a GPU"
                )
            if ref.weights is None:
                raise BackendError(f"version {ref.version_id()} has neither an adapter nor weights")
            folder = self._fetch(ref.weights, "weights")
        tokenizer = load_tokenizer(base_dir)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = self._load_model(folder)
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n}
        engine = _Engine(key, model, tokenizer, names)
        with self._lock:
            while len([k for k in self.engines if k.startswith("version:")]) >= self.max_resident_models:
                oldest = next(k for k in self.engines if k.startswith("version:"))
                del self.engines[oldest]
            self.engines[key] = engine
        return engine

    def _ensure_adapters(self, engine: _Engine, refs: list[ModelRef]) -> None:
        needed = {self._adapter_name(r): r for r in refs if self._adapter_name(r) != BASE}
        for name, ref in needed.items():
            if name in engine.adapters:
                engine.adapters.move_to_end(name)
                continue
            assert ref.adapter is not None
            folder = self._fetch(ref.adapter.artifact, "adapters")
            check_adapter(folder, engine.module_names, BackendError)  # refused before loading
            with self._lock:
                while len(engine.adapters) >= self.max_resident_adapters:
                    victim = next(n for n in engine.adapters if n not in needed)
                    engine.model.delete_adapter(victim)
                    del engine.adapters[victim]
                    self.adapter_evictions += 1
                engine.model = attach_adapter(engine.model, folder, name)
                engine.model.eval()
                engine.adapters[name] = folder
                self.adapter_loads += 1

    def _run_batch(self, jobs: list[Job], loop: asyncio.AbstractEventLoop) -> list[Completion | Exception]:
        import torch

        try:
            engine = self._engine(jobs[0].ref)
            self._ensure_adapters(engine, [j.ref for j in jobs])
        except (BackendError, ModelResolutionError) as error:
            return [error for _ in jobs]
        tokenizer = engine.tokenizer
        # each prompt is checked alone first: one that cannot be tokenized fails itself, not the batch
        refused: dict[int, Exception] = {}
        for row, job in enumerate(jobs):
            try:
                tokenizer(job.prompt, add_special_tokens=False)
            except (TypeError, ValueError) as error:
                refused[row] = PromptRefused(f"the prompt cannot be tokenized: {error}")
        if refused:
            kept = [job for row, job in enumerate(jobs) if row not in refused]
            done = iter(self._run_batch(kept, loop) if kept else [])
            return [refused[row] if row in refused else next(done) for row in range(len(jobs))]
        encoded = tokenizer(
            [j.prompt for j in jobs], return_tensors="pt", padding=True, add_special_tokens=False
        )
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        sampling = jobs[0].sampling
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(j.sampling.max_tokens for j in jobs),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "do_sample": not sampling.greedy,
        }
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        if any(j.stream is not None for j in jobs):
            kwargs["streamer"] = RowStreamer(tokenizer, jobs, loop, stops)
        from peft import PeftModel

        if isinstance(engine.model, PeftModel):
            kwargs["adapter_names"] = [self._adapter_name(j.ref) for j in jobs]
        with torch.inference_mode():
            output = engine.model.generate(**encoded, **kwargs)
        self.batches += 1
        self.batch_rows += len(jobs)
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        new = output[:, encoded["input_ids"].shape[1] :].tolist()
        results: list[Completion | Exception] = []
        for job, row, prompt_tokens in zip(jobs, new, prompt_lengths, strict=True):
            limit = job.sampling.max_tokens
            count = next((i for i, tok in enumerate(row[:limit]) if tok in stops), None)
            tokens = row[: count if count is not None else limit]
            text, stopped = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), job.sampling.stop)
            reason = "stop" if count is not None or stopped else "length"
            results.append(Completion(text, int(prompt_tokens), len(tokens), reason))
        return results
