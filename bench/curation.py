"""Curation benchmark: audit throughput (rows/s) at 10k and 100k rows, same run, and their ratio.

Near-linear scaling means the 100k rate stays close to the 10k rate (ratio near 1.0).
Run: .venv/bin/python bench/curation.py [--sizes 10000 100000] [--base-model tiny-llama]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.curation_policy import CurationPolicy
from schemas.dataset import DatasetSubmitted, DataSource, MixComponent, MixSpec
from schemas.recipe import TrainingRecipe
from services.core.ml.bases import resolve_base_model
from services.core.ml.models import load_tokenizer, tokenizer_sha256
from services.curation.pipeline import Tokenizer, curate

spec = importlib.util.spec_from_file_location(
    "tickets", Path(__file__).resolve().parents[1] / "examples" / "support-tickets" / "generate.py"
)
assert spec and spec.loader
tickets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tickets)


def write_rows(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as out:
        for i in range(n):
            text, record = tickets.ticket(rng)
            if i % 97 == 0:
                text += " Call me on 555-201-7733."  # some PII to redact
            row = tickets.row(f"{text} (ref {i})", record)
            out.write(json.dumps(row) + "\n")
            if i % 101 == 0:
                out.write(json.dumps(row) + "\n")  # some exact duplicates


def measure(tokenizer: Tokenizer, n: int, base_model: str, work: Path) -> tuple[float, int]:
    path = work / f"rows-{n}.jsonl"
    write_rows(path, n, seed=n)
    event = DatasetSubmitted(
        submission_id=f"bench-{n}",
        tenant="bench",
        task="ticket-to-json",
        route="bench",
        sources=(DataSource(uri=str(path)),),
        mix=MixSpec(
            components=(
                MixComponent(name="task", ratio=0.9),
                MixComponent(name="general-replay", ratio=0.05),
                MixComponent(name="safety", ratio=0.05),
            )
        ),
        curation=CurationPolicy(max_seq_len=1024),
        recipe=TrainingRecipe(base_model=base_model),
    )
    started = time.perf_counter()
    result = curate(event, resolve=lambda s: Path(s.uri), tokenizer=tokenizer, suites=[])
    elapsed = time.perf_counter() - started
    assert result.approved, [c for c in result.audit.checks if not c.passed]
    rows = sum(s.rows for s in result.sources)
    return rows / elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--base-model", default="tiny-llama")
    parser.add_argument("--model-cache", default=str(Path.home() / ".cache" / "tuneline" / "models"))
    args = parser.parse_args()
    path = resolve_base_model(args.base_model, args.model_cache)
    tokenizer = Tokenizer.from_hf(args.base_model, tokenizer_sha256(path), load_tokenizer(path))
    work = Path(tempfile.mkdtemp(prefix="tuneline-bench-curation-"))
    rates = {}
    print(f"curation audit throughput, tokenizer {args.base_model}, every check on, same run")
    print(f"{'rows':>10}{'rows/s':>12}{'seconds':>10}")
    for n in args.sizes:
        rate, rows = measure(tokenizer, n, args.base_model, work)
        rates[n] = rate
        print(f"{rows:>10,}{rate:>12,.0f}{rows / rate:>10.1f}")
    if len(rates) >= 2:
        small, large = min(rates), max(rates)
        print(
            f"ratio rows/s at {large:,} ÷ rows/s at {small:,}: {rates[large] / rates[small]:.2f} "
            "(1.0 = perfectly linear)"
        )


if __name__ == "__main__":
    main()
