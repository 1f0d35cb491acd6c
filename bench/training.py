"""Training benchmark: the same LoRA recipe on the same data, through the training service and as a
plain TRL script (bench/plain_trl.py), in one run. Prints tokens/s of both, their ratio, and peak memory.

End to end: service = dataset.approved published → candidate.ready received (worker start, preflight,
checkpoint uploads, adapter upload, events); plain = the script's process from start to exit.
Loop: tokens / seconds inside trainer.train() for both.
Run: .venv/bin/python bench/training.py [--model tiny-llama|smollm2-135m-instruct] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.dataset import DatasetApproved, SplitInfo
from schemas.recipe import TrainingRecipe
from services.core.artifacts import ArtifactStore
from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings, NatsSettings
from services.training.app import build_training
from services.training.config import TrainingSettings
from services.training.control import KvRunControl

ROOT = Path(__file__).resolve().parents[1]


def ticket_rows(limit: int) -> list[dict[str, Any]]:
    rows = []
    for line in (ROOT / "examples" / "support-tickets" / "tickets.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row.get("prompt"), str) and row.get("completion"):
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": row["completion"]},
                    ]
                }
            )
    return rows[:limit]


async def through_service(work: Path, recipe: TrainingRecipe, train: bytes, cache: str) -> dict[str, Any]:
    nats = EmbeddedNats(work / "nats", port=free_port())
    nats.start()
    core = CoreSettings(
        nats=NatsSettings(url=nats.url), artifact_root=str(work / "artifacts"), model_cache=cache
    )
    settings = TrainingSettings(core=core, work_dir=str(work / "training"), progress_interval_s=1.0)
    service = build_training(settings)
    task = asyncio.create_task(service.app.run())
    operator = build_runtime("bench", core)
    await operator.broker.start()
    try:
        while not service.app.broker.running:
            await asyncio.sleep(0.05)
        store = ArtifactStore(core.artifact_root)
        dataset_id = hashlib.sha256(train).hexdigest()
        event = DatasetApproved(
            submission_id="bench",
            dataset_id=dataset_id,
            tenant="bench",
            task="ticket-to-json",
            route="bench",
            manifest=store.put_json({"dataset_id": dataset_id, "format": "sft"}),
            splits=(SplitInfo(name="train", rows=train.count(b"\n"), artifact=store.put_bytes(train)),),
            recipe=recipe,
        )
        ready: asyncio.Queue[Any] = asyncio.Queue()
        nc = operator.broker.connection
        await nc.subscribe("tuneline.events.candidate.ready", cb=ready.put)
        await nc.subscribe("tuneline.events.training.failed", cb=ready.put)
        started = time.monotonic()
        await operator.bus.publish(event)
        msg = await asyncio.wait_for(ready.get(), timeout=3600)
        wall = time.monotonic() - started
        if msg.subject.endswith("failed"):
            raise SystemExit(f"training failed: {json.loads(msg.data)['error']}")
        run_id = json.loads(msg.data)["lineage"]["run_id"]
        control = await KvRunControl.open(nc.jetstream())
        summary = (await control.result(run_id) or {})["summary"]
        return {
            "wall_s": wall,
            "tokens": summary["tokens"],
            "loop_s": summary["runtime_s"],
            "peak_memory_mb": summary["peak_memory_mb"],
        }
    finally:
        await operator.broker.stop()
        service.app.exit()
        await task
        nats.stop()


def plain_script(work: Path, recipe: TrainingRecipe, model_dir: Path, train_file: Path) -> dict[str, Any]:
    config = {
        "model_dir": str(model_dir),
        "train_file": str(train_file),
        "output_dir": str(work / "plain"),
        "learning_rate": recipe.learning_rate,
        "max_steps": recipe.max_steps,
        "batch_size": recipe.batch_size,
        "checkpoint_steps": recipe.checkpoint_steps,
        "max_seq_len": recipe.max_seq_len,
        "rank": recipe.lora.rank,
        "alpha": recipe.lora.alpha,
    }
    path = work / "plain.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "plain_trl.py"), str(path)], stdout=subprocess.PIPE, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    assert proc.stdout is not None
    if status != 0:
        raise SystemExit(f"plain TRL script failed with status {status}")
    result = json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
    return {**result, "wall_s": wall, "peak_memory_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama or smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=280)
    parser.add_argument("--checkpoint-steps", type=int, default=25)
    parser.add_argument("--max-seq-len", type=int, default=None, help="default: 1024 tiny, 256 SmolLM2")
    args = parser.parse_args()
    from services.core.ml.bases import resolve_base_model

    cache = str(Path(os.environ.get("TUNELINE_MODEL_CACHE", Path.home() / ".cache" / "tuneline" / "models")))
    model_dir = resolve_base_model(args.model, cache)
    seq = args.max_seq_len or (1024 if args.model == "tiny-llama" else 256)
    recipe = TrainingRecipe(
        method="sft-lora",
        base_model=args.model,
        max_steps=args.steps,
        batch_size=4,
        max_seq_len=seq,
        checkpoint_steps=args.checkpoint_steps,
        lora={"rank": 8, "alpha": 16},
    )
    with tempfile.TemporaryDirectory(prefix="tuneline-bench-") as tmp:
        work = Path(tmp)
        rows = ticket_rows(args.rows)
        train = "".join(json.dumps(r) + "\n" for r in rows).encode()
        train_file = work / "train.jsonl"
        train_file.write_bytes(train)
        print(f"model {args.model}, {len(rows)} rows, {args.steps} steps of batch 4, max_seq_len {seq}, CPU")
        service = asyncio.run(through_service(work, recipe, train, cache))
        plain = plain_script(work, recipe, model_dir, train_file)
    print(f"{'path':<22}{'wall s':>9}{'tokens':>9}{'tok/s e2e':>11}{'tok/s loop':>12}{'peak MiB':>10}")
    for name, r in (("tuneline service", service), ("plain TRL script", plain)):
        print(
            f"{name:<22}{r['wall_s']:>9.1f}{r['tokens']:>9.0f}{r['tokens'] / r['wall_s']:>11.1f}"
            f"{r['tokens'] / r['loop_s']:>12.1f}{r['peak_memory_mb']:>10.0f}"
        )
    e2e = (service["tokens"] / service["wall_s"]) / (plain["tokens"] / plain["wall_s"])
    loop = (service["tokens"] / service["loop_s"]) / (plain["tokens"] / plain["loop_s"])
    print(f"ratio service/plain: end to end {e2e:.3f}, training loop {loop:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
