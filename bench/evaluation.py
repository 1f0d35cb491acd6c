"""Evaluation benchmark, in one run:

1. Batched generation versus one prompt at a time: the same capability items, the same greedy
   settings, the same loaded model; prints items/s of both, their ratio, and how many answers agree.
2. The baseline cache: a first candidate's full evaluation (base, few-shot and candidate arms on
   every suite) versus a second candidate's on the same base (its base arms come from the cache);
   prints both wall times, the fraction, and the items each had to generate.

Run: .venv/bin/python bench/evaluation.py [--model tiny-llama|smollm2-135m-instruct] [--items 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.gate_policy import GatePolicy
from schemas.refs import AdapterRef, BaseModelRef, DatasetRef, ModelRef, TokenizerRef
from services.core.artifacts import ArtifactStore
from services.core.ml.bases import canonical_name, resolve_base_model
from services.core.ml.models import architecture, tokenizer_sha256, weights_sha256
from services.core.ml.suite_catalogue import shipped_suites
from services.core.settings import CoreSettings
from services.evaluation.engine import Engine
from services.evaluation.evaluate import Evaluator
from services.evaluation.options import EvalOptions

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "v_proj"]


def adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B matrices: a stand-in candidate of the real shape."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.01)  # small: a candidate close to its base, as a sane LoRA is
    peft.save_pretrained(str(out))
    return out


def ticket_dataset(store: ArtifactStore, limit: int) -> DatasetRef:
    rows = []
    for line in (ROOT / "examples" / "support-tickets" / "tickets.jsonl").read_text().splitlines()[:limit]:
        row = json.loads(line)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": row["prompt"]},
                    {"role": "assistant", "content": row["completion"]},
                ]
            }
        )
    split = store.put_bytes("".join(json.dumps(r) + "\n" for r in rows).encode())
    manifest = store.put_json(
        {"format": "sft", "splits": {"eval": {"rows": len(rows), **split.model_dump()}}, "canaries": []}
    )
    return DatasetRef(dataset_id=split.sha256, manifest=manifest)


def batching(engine: Engine, items: int, tokens: int) -> None:
    suite = next(s for s in shipped_suites() if s.name == "capability")
    prompts = [[{"role": "user", "content": str(i["prompt"])}] for i in suite.items()[:items]]
    engine.generate("base", prompts[:4], max_new_tokens=4)  # warm-up
    rates = {}
    answers = {}
    for label, size in (("batched (16)", 16), ("one at a time", 1)):
        started = time.perf_counter()
        answers[label] = [
            g.text for g in engine.generate("base", prompts, max_new_tokens=tokens, batch_size=size)
        ]
        rates[label] = len(prompts) / (time.perf_counter() - started)
    same = sum(a == b for a, b in zip(answers["batched (16)"], answers["one at a time"], strict=True))
    print(f"\n1. generation, {len(prompts)} capability items, {tokens} new tokens max, greedy")
    for label, rate in rates.items():
        print(f"   {label:<14} {rate:8.2f} items/s")
    print(f"   ratio batched ÷ one-at-a-time: {rates['batched (16)'] / rates['one at a time']:.2f}")
    print(
        f"   identical answers: {same}/{len(prompts)} (left padding changes float rounding, not the method)"
    )


def cache(model: str, base: Path, work: Path, cache_dir: str, target_rows: int) -> None:
    store = ArtifactStore(str(work / "artifacts"))
    dataset = ticket_dataset(store, target_rows)
    base_ref = BaseModelRef(
        name=canonical_name(model), uri=model, sha256=weights_sha256(base), architecture=architecture(base)
    )
    options = EvalOptions(device="cpu", latency_items=8)
    timings = []
    for n in (1, 2):
        tree = store.put_tree(adapter(base, work / f"adapter-{n}", seed=n))
        ref = ModelRef(
            base=base_ref,
            adapter=AdapterRef(
                artifact=tree, method="sft-lora", rank=8, alpha=16, target_modules=tuple(TARGETS)
            ),
            tokenizer=TokenizerRef(tokenizer_sha256=tokenizer_sha256(base)),
            dataset=dataset,
        )
        evaluator = Evaluator(store, options, model_cache=cache_dir, work_dir=work / f"eval-{n}")
        started = time.perf_counter()
        outcome = evaluator.run(ref, GatePolicy())
        seconds = time.perf_counter() - started
        failed = [g.gate for g in outcome.gates if not g.passed]
        timings.append((seconds, evaluator.generated_items, len(evaluator.cache_hits), failed))
    print(f"\n2. full evaluation (target {target_rows} rows, capability, safety, latency), same base")
    for n, (seconds, generated, hits, failed) in enumerate(timings, start=1):
        verdict = f"failed ({', '.join(failed)})" if failed else "passed"
        print(
            f"   candidate {n}: {seconds:7.1f} s, {generated} items generated, "
            f"{hits} arms from cache, gates {verdict}"
        )
    print(
        f"   second ÷ first: {timings[1][0] / timings[0][0]:.2f} of the time, "
        f"{timings[1][1] / timings[0][1]:.2f} of the items"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--target-rows", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneline-bench-eval-") as tmp:
        work = Path(tmp)
        cache_dir = CoreSettings().model_cache
        base = resolve_base_model(args.model, cache_dir)
        print(f"model {args.model} ({base}), CPU")
        engine = Engine(base, device="cpu")
        engine.add_base_arm("base")
        batching(engine, args.items, args.tokens)
        del engine
        cache(args.model, base, work, cache_dir, args.target_rows)


if __name__ == "__main__":
    main()
