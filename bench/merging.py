"""Merging benchmark: peak memory of the shard-wise soup versus loading every model whole, for the
same models, in one run. Each variant runs in its own process, which reports its peak RSS.

Run: .venv/bin/python bench/merging.py [--model smollm2-135m-instruct|tiny-llama] [--members 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.core.ml.bases import resolve_base_model
from services.core.settings import CoreSettings


def members(base: Path, work: Path, count: int) -> list[Path]:
    import torch
    from transformers import AutoModelForCausalLM

    out = []
    for n in range(count):
        model = AutoModelForCausalLM.from_pretrained(base)
        torch.manual_seed(n)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.01)
        folder = work / f"member-{n}"
        model.save_pretrained(folder, max_shard_size="100MB")
        out.append(folder)
        del model
    return out


def child(variant: str, inputs: list[str], out: str) -> None:
    from services.merging import ops

    started = time.perf_counter()
    folders = [Path(p) for p in inputs]
    weights = [1.0] * len(folders)
    if variant == "shard-wise":
        ops.soup(folders, weights, Path(out))
    else:
        ops.soup_in_memory(folders, weights, Path(out))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "peak_mb": peak_mb, "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1:-1], args.child[-1])
        return
    base = resolve_base_model(args.model, CoreSettings().model_cache)
    with tempfile.TemporaryDirectory(prefix="tuneline-bench-merge-") as tmp:
        work = Path(tmp)
        folders = members(base, work, args.members)
        size_mb = sum(f.stat().st_size for f in folders[0].glob("*.safetensors")) / 2**20
        print(f"model {args.model}: {args.members} members of {size_mb:.0f} MiB safetensors each")
        results = {}
        for variant in ("shard-wise", "whole-models"):
            command = [sys.executable, __file__, "--child", variant, *map(str, folders), str(work / variant)]
            line = (
                subprocess.run(command, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            results[variant] = json.loads(line)
            peak, seconds = results[variant]["peak_mb"], results[variant]["seconds"]
            print(f"  {variant:<13} peak RSS {peak:8.0f} MiB, {seconds:.1f} s")
        ratio = results["shard-wise"]["peak_mb"] / results["whole-models"]["peak_mb"]
        print(f"  shard-wise ÷ whole-models peak memory: {ratio:.2f}")


if __name__ == "__main__":
    main()
