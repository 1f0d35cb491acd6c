"""Serving benchmark, in one run:

1. Throughput (generated tokens/s) of the transformers backend for requests that all use one
   adapter versus requests spread over four adapters mixed in the same batches (PEFT
   `adapter_names`); same prompts, same greedy settings, same batch size, same loaded base.
2. The router's added latency per request: one request at a time through the whole serving
   service (HTTP, tenant and route lookup, traffic split, provenance headers, decision log on a
   real nats-server) versus the same request submitted straight to the backend.

Run: .venv/bin/python bench/serving.py [--model tiny-llama|smollm2-135m-instruct] [--requests 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evaluation import adapter
from schemas.refs import AdapterRef, BaseModelRef, ModelRef, TokenizerRef
from schemas.serving import RouteEntry
from services.core.artifacts import ArtifactStore
from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.messaging.routes import RouteTable
from services.core.ml.bases import canonical_name, resolve_base_model
from services.core.ml.models import architecture, tokenizer_sha256, weights_sha256
from services.core.settings import CoreSettings, NatsSettings
from services.serving.generation import Job, Sampling
from services.serving.transformers_backend import TransformersBackend

PROMPTS = [
    "My order arrived damaged, what can I do?",
    "How do I reset my password?",
    "The app crashes when I upload a photo.",
    "I was charged twice this month.",
]


def refs(store: ArtifactStore, base: Path, name: str, work: Path, count: int) -> list[ModelRef]:
    made = []
    for n in range(count):
        folder = adapter(base, work / f"adapter-{n}", seed=n)
        made.append(
            ModelRef(
                base=BaseModelRef(
                    name=name, uri=name, sha256=weights_sha256(base), architecture=architecture(base)
                ),
                adapter=AdapterRef(
                    artifact=store.put_tree(folder),
                    method="sft-lora",
                    rank=8,
                    alpha=16,
                    target_modules=("q_proj", "v_proj"),
                ),
                method="sft-lora",
                tokenizer=TokenizerRef(tokenizer_sha256=tokenizer_sha256(base)),
            )
        )
    return made


async def throughput(
    backend: TransformersBackend, jobs: list[tuple[ModelRef, str]], tokens: int
) -> tuple[float, float]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(backend.submit(Job(ref=r, prompt=p, sampling=Sampling(max_tokens=tokens))) for r, p in jobs)
    )
    seconds = time.perf_counter() - started
    return sum(r.completion_tokens for r in results) / seconds, seconds


async def mixed_vs_single(
    backend: TransformersBackend, adapters: list[ModelRef], n: int, tokens: int
) -> None:
    prompts = [
        backend.chat_prompt(adapters[0], [{"role": "user", "content": PROMPTS[i % 4]}]) for i in range(n)
    ]
    await throughput(backend, [(adapters[i % 4], prompts[i]) for i in range(8)], 4)  # warm-up: load all four
    single, single_s = await throughput(backend, [(adapters[0], p) for p in prompts], tokens)
    mixed, mixed_s = await throughput(backend, [(adapters[i % 4], p) for i, p in enumerate(prompts)], tokens)
    print(f"\n1. {n} requests, {tokens} new tokens max, greedy, batches of {backend.max_batch_size}")
    print(f"   one adapter           {single:9.1f} tokens/s ({single_s:.2f} s)")
    print(f"   four adapters mixed   {mixed:9.1f} tokens/s ({mixed_s:.2f} s)")
    print(f"   ratio mixed ÷ single: {mixed / single:.3f}   (batches run: {backend.batches})")


async def router_overhead(
    backend: TransformersBackend, base_ref: ModelRef, core: CoreSettings, tmp: Path, n: int
) -> None:
    import httpx
    import nats

    from services.serving.app import build_serving
    from services.serving.config import ServingSettings

    nc = await nats.connect(core.nats.servers)
    table = await RouteTable.open(nc.jetstream())
    await table.put(RouteEntry(route="bench", tenant="default", stable=base_ref), 0)
    await nc.close()
    serving = build_serving(
        ServingSettings(
            core=core, port=0, work_dir=str(tmp / "serving"), batch_wait_ms=0, allow_anonymous=True
        )
    )
    app_task = asyncio.create_task(serving.runtime.app.run())
    while serving.port is None:
        await asyncio.sleep(0.05)
    body = {"model": "bench", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 1}
    backend = serving.service.backend  # type: ignore[assignment]  # the very backend serving uses
    prompt = backend.chat_prompt(base_ref, body["messages"])  # type: ignore[arg-type]
    direct, routed = [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serving.port}", timeout=60) as client:
        for _ in range(5):  # warm-up both paths
            await client.post("/v1/chat/completions", json=body)
            await backend.submit(Job(ref=base_ref, prompt=prompt, sampling=Sampling(max_tokens=1)))
        for _ in range(n):  # interleaved, so drift on a shared machine hits both alike
            t = time.perf_counter()
            await backend.submit(Job(ref=base_ref, prompt=prompt, sampling=Sampling(max_tokens=1)))
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            reply = await client.post("/v1/chat/completions", json=body)
            routed.append((time.perf_counter() - t) * 1000)
            assert reply.status_code == 200, reply.text
    serving.runtime.app.exit()
    await app_task
    d, r = statistics.median(direct), statistics.median(routed)
    print(f"\n2. router overhead, {n} requests one at a time, 1 new token (the base, batch_wait 0)")
    print(f"   backend alone        median {d:7.2f} ms")
    print(f"   through serving HTTP median {r:7.2f} ms")
    print(f"   added per request: {r - d:.2f} ms (ratio {r / d:.2f})")


async def main(args: argparse.Namespace) -> None:
    name = canonical_name(args.model)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        nats_server = EmbeddedNats(tmp / "nats", port=free_port())
        nats_server.start()
        core = CoreSettings(nats=NatsSettings(url=nats_server.url), artifact_root=str(tmp / "artifacts"))
        try:
            store = ArtifactStore(core.artifact_root)
            base = resolve_base_model(name, core.model_cache)
            adapters = refs(store, base, name, tmp, 4)
            backend = TransformersBackend(
                store,
                model_cache=core.model_cache,
                work_dir=tmp / "backend",
                max_batch_size=8,
                batch_wait_ms=5,
            )
            await backend.start()
            print(f"model {name}; torch threads {__import__('torch').get_num_threads()}")
            await mixed_vs_single(backend, adapters, args.requests, args.tokens)
            base_ref = adapters[0].model_copy(update={"adapter": None, "method": None})
            await router_overhead(backend, base_ref, core, tmp, args.latency_requests)
            await backend.stop()
        finally:
            nats_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
