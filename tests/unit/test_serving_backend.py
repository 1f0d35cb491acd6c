"""The transformers backend on the tiny model: mixed-adapter batches, LRU residency, refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.serving.generation import BackendError, Job, PromptRefused, Sampling
from services.serving.transformers_backend import TransformersBackend
from tests.support.serving import adapter_refs, base_ref

PROMPTS = ["The quick brown fox", "Once upon a time", "tuneline serves", "Hello"]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def backend(store: ArtifactStore, model_cache: Path, tmp_path: Path, **kwargs: object) -> TransformersBackend:
    return TransformersBackend(store, model_cache=str(model_cache), work_dir=tmp_path / "serving", **kwargs)  # type: ignore[arg-type]


async def answers(
    engine: TransformersBackend, jobs: list[tuple[ModelRef, str]], max_tokens: int = 8
) -> list[str]:
    await engine.start()
    try:
        results = await asyncio.gather(
            *(
                engine.submit(Job(ref=ref, prompt=p, sampling=Sampling(max_tokens=max_tokens)))
                for ref, p in jobs
            )
        )
    finally:
        await engine.stop()
    return [r.text for r in results]


async def test_mixed_adapter_batch_answers_like_each_version_alone(
    tiny_model: Path, model_cache: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    refs = [base_ref(tiny_model), *adapter_refs(store, tiny_model, tmp_path, 3)]
    jobs = [(ref, prompt) for ref in refs for prompt in PROMPTS[:2]]
    mixed = backend(store, model_cache, tmp_path, max_batch_size=8, batch_wait_ms=200)
    together = await answers(mixed, jobs)
    assert mixed.batches == 1, mixed.status()  # all eight requests, four versions, one generate call
    alone = []
    for job in jobs:
        single = backend(store, model_cache, tmp_path / "alone", max_batch_size=1)
        alone += await answers(single, [job])
    assert together == alone
    # the adapters really change the answer: not every version says what the base says
    by_version = {
        refs.index(ref): text for (ref, _), text in zip(jobs, together, strict=True) if _ == PROMPTS[0]
    }
    assert len(set(by_version.values())) > 1, by_version


async def test_resident_adapters_are_bounded_least_recently_used_first(
    tiny_model: Path, model_cache: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    refs = adapter_refs(store, tiny_model, tmp_path, 3)
    engine = backend(store, model_cache, tmp_path, max_batch_size=1, max_resident_adapters=2)
    await answers(engine, [(refs[0], "a"), (refs[1], "b")])
    engine2 = engine
    await engine2.start()
    try:
        for ref in (refs[2], refs[0]):
            await engine2.submit(Job(ref=ref, prompt="c", sampling=Sampling(max_tokens=2)))
    finally:
        await engine2.stop()
    resident = next(iter(engine.status()["resident_adapters"].values()))
    assert len(resident) == 2
    assert engine.adapter_loads == 4 and engine.adapter_evictions == 2  # 0,1 → +2 evicts 0 → +0 evicts 1


async def test_adapter_for_another_architecture_is_refused_before_loading(
    tiny_model: Path, model_cache: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    import json

    ref = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    folder = tmp_path / "adapter-0"
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = ["c_attn"]  # a GPT-2 module name
    (folder / "adapter_config.json").write_text(json.dumps(config))
    bad = ref.model_copy(
        update={"adapter": ref.adapter.model_copy(update={"artifact": store.put_tree(folder)})}
    )  # type: ignore[union-attr]
    engine = backend(store, model_cache, tmp_path)
    with pytest.raises(BackendError, match="targets modules the base does not have: c_attn"):
        await answers(engine, [(bad, "x")])
    assert engine.adapter_loads == 0


RACE = """
import sys, threading
from pathlib import Path
from services.core.artifacts import ArtifactStore
from services.serving.transformers_backend import TransformersBackend
from tests.support.serving import base_ref

tiny, cache, root = (Path(p) for p in sys.argv[1:4])
store = ArtifactStore(str(root / "artifacts"))
engine = TransformersBackend(store, model_cache=str(cache), work_dir=root / "serving")
ref = base_ref(tiny)
start, errors = threading.Barrier(16), []

def render():
    start.wait()
    try:
        engine.chat_prompt(ref, [{"role": "user", "content": "hi"}])
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=render) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(len(errors), errors[:1])
"""


def test_the_first_requests_on_a_base_render_their_prompts_together(
    tiny_model: Path, model_cache: Path, tmp_path: Path
) -> None:
    """The first chat requests on a base arrive at once, each rendering its prompt on an
    executor thread, in a fresh interpreter where transformers is not imported yet (the demo's
    canary once answered 5 of them with HTTP 500: ImportError from transformers' lazy import)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", RACE, str(tiny_model), str(model_cache), str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).parents[2], check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "0", result.stdout


async def test_dtype_bf16_serves_from_bf16_weights_on_cpu(
    tiny_model: Path, model_cache: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    import torch

    bf16 = backend(store, model_cache, tmp_path / "bf16", dtype="bf16")
    [text] = await answers(bf16, [(base_ref(tiny_model), PROMPTS[0])])
    assert text and bf16.status()["dtype"] == "bf16"
    [engine] = bf16.engines.values()
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    fp32 = backend(store, model_cache, tmp_path / "fp32")
    await answers(fp32, [(base_ref(tiny_model), PROMPTS[0])])
    [engine] = fp32.engines.values()
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}  # auto on CPU


async def test_a_prompt_the_tokenizer_refuses_fails_alone_and_its_batch_is_answered(
    tiny_model: Path, model_cache: Path, store: ArtifactStore, tmp_path: Path
) -> None:
    ref = base_ref(tiny_model)
    engine = backend(store, model_cache, tmp_path, max_batch_size=8, batch_wait_ms=200)
    await engine.start()
    try:
        results = await asyncio.gather(
            *(
                engine.submit(Job(ref=ref, prompt=prompt, sampling=Sampling(max_tokens=4)))
                for prompt in ["Hello", "bad \ud800 text", "Once upon a time"]
            ),
            return_exceptions=True,
        )
    finally:
        await engine.stop()
    assert isinstance(results[1], PromptRefused) and "cannot be tokenized" in str(results[1])
    good = [r for n, r in enumerate(results) if n != 1]
    assert all(not isinstance(r, BaseException) and r.completion_tokens > 0 for r in good), results
    alone = await answers(backend(store, model_cache, tmp_path / "alone"), [(ref, "Hello")], max_tokens=4)
    assert good[0].text == alone[0]  # type: ignore[union-attr]
    assert engine.batches == 1  # the good prompts still shared one generate call
