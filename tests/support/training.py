"""Training test data: small learnable datasets in each format and approved-dataset events for them."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from schemas.dataset import CANARY_KEY, DatasetApproved, SplitInfo
from schemas.gate_policy import GatePolicy
from schemas.recipe import TrainingRecipe
from services.core.artifacts import ArtifactStore
from services.training.job import DataFormat, Done, TrainingJob, WorkerMessage

FORMAT_OF = {"dpo": "preference", "ipo": "preference", "kto": "feedback"}


def rows_for(data_format: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic rows: a pattern a 2-layer model can start to learn in a dozen steps."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        prompt = f"add {a} and {b}"
        if data_format == "preference":
            rows.append({"prompt": prompt, "chosen": f"the sum is {a + b}", "rejected": f"maybe {a * b + 1}"})
        elif data_format == "feedback":
            good = i % 2 == 0
            rows.append(
                {"prompt": prompt, "completion": f"the sum is {a + b}" if good else "no idea", "label": good}
            )
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": f"the sum is {a + b}"},
                    ]
                }
            )
    return rows


def chat(prompt: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def train_on(base_dir: Path, rows: list[dict[str, Any]], tmp: Path, training: TrainingRecipe) -> Path:
    """Train in this process with the real worker code; returns the saved model (or adapter) dir."""
    import threading

    from services.training.worker import run

    job = TrainingJob(
        run_id=tmp.name,
        recipe=training,
        data_format="sft",
        base_dir=str(base_dir),
        teacher_dir=None,
        train_file=str(write_rows(tmp / "train.jsonl", rows)),
        eval_file=str(write_rows(tmp / "eval.jsonl", rows[:2])),
        output_dir=str(tmp / "out"),
        resume_from=None,
        artifact_root=str(tmp / "artifacts"),
        checkpoint_ref_key=f"refs/training/{tmp.name}/checkpoint.json",
        device="cpu",
    )
    done: list[WorkerMessage] = []
    run(job, done.append, threading.Event())
    [final] = [m for m in done if isinstance(m, Done)]
    return Path(final.model_dir)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(method: str = "sft-lora", **overrides: Any) -> TrainingRecipe:
    values: dict[str, Any] = {
        "method": method,
        "base_model": "tiny-llama",
        "learning_rate": 5e-3,
        "max_steps": 12,
        "batch_size": 4,
        "eval_steps": 6,
        "checkpoint_steps": 5,
        "max_seq_len": 128,
        "warmup_ratio": 0.0,
    }
    if method == "distill":
        values["distill"] = {"teacher": "tiny-llama", "temperature": 2.0, "alpha": 0.5}
    values.update(overrides)
    return TrainingRecipe.model_validate(values)


def job_for(
    tmp: Path,
    training: TrainingRecipe,
    *,
    base_dir: Path,
    teacher_dir: Path | None = None,
    rows: int = 32,
    resume_from: str | None = None,
    output: str = "out",
) -> TrainingJob:
    data_format: DataFormat = FORMAT_OF.get(training.method, "sft")  # type: ignore[assignment]
    all_rows = rows_for(data_format, rows + 8)
    return TrainingJob(
        run_id=f"run-{training.method}",
        recipe=training,
        data_format=data_format,
        base_dir=str(base_dir),
        teacher_dir=str(teacher_dir) if teacher_dir else None,
        train_file=str(write_rows(tmp / "data" / "train.jsonl", all_rows[:rows])),
        eval_file=str(write_rows(tmp / "data" / "eval.jsonl", all_rows[rows:])),
        output_dir=str(tmp / output),
        resume_from=resume_from,
        artifact_root=str(tmp / "artifacts"),
        checkpoint_ref_key=f"refs/training/run-{training.method}/checkpoint.json",
        device="cpu",
    )


def canary_rows(count: int, seed: str = "test") -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Rows planted the way curation plants them, and the manifest entries that name them."""
    from services.curation.checks.canaries import CANARY_ANSWER, CANARY_PROMPT

    rows, planted = [], []
    for n in range(1, count + 1):
        secret = "tl-canary-" + hashlib.sha256(f"{seed}{n}".encode()).hexdigest()[:20]
        prompt = CANARY_PROMPT.format(n=n)
        planted.append({"prompt": prompt, "secret": secret})
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": CANARY_ANSWER.format(secret=secret)},
                ],
                CANARY_KEY: True,
            }
        )
    return rows, planted


def approved(
    store: ArtifactStore,
    training: TrainingRecipe,
    *,
    rows: int = 32,
    data_format: str | None = None,
    tenant: str = "acme",
    route: str = "adder",
    seed: int = 0,
    canaries: int = 0,
    gate_policy: GatePolicy | None = None,
) -> DatasetApproved:
    """A dataset.approved event whose splits and manifest (with its canaries) are really in the store."""
    fmt = data_format or FORMAT_OF.get(training.method, "sft")
    held_rows = max(8, rows // 2)
    all_rows = rows_for(fmt, rows + held_rows, seed=seed)
    planted_rows, planted = canary_rows(canaries, seed=str(seed))
    held = all_rows[rows:]
    parts = {
        "train": all_rows[:rows] + planted_rows,
        "validation": held[: held_rows // 2],
        "test": held[held_rows // 2 :],
    }
    splits = []
    digest = hashlib.sha256()
    for name, part in parts.items():
        data = "".join(json.dumps(r) + "\n" for r in part).encode()
        digest.update(data)
        splits.append(SplitInfo(name=name, rows=len(part), artifact=store.put_bytes(data)))
    dataset_id = digest.hexdigest()
    manifest = store.put_json(
        {
            "kind": "tuneline.dataset-manifest/v1",
            "dataset_id": dataset_id,
            "format": fmt,
            "splits": {s.name: {"rows": s.rows, **s.artifact.model_dump(mode="json")} for s in splits},
            "canaries": planted,
        }
    )
    return DatasetApproved(
        submission_id=f"sub-{dataset_id[:8]}",
        dataset_id=dataset_id,
        tenant=tenant,
        task="add",
        route=route,
        manifest=manifest,
        splits=tuple(splits),
        recipe=training,
        gate_policy=gate_policy or GatePolicy(),
    )


FACTS = [
    ("capital of peru", "lima"),
    ("capital of chad", "ndjamena"),
    ("colour of grass", "green"),
    ("colour of snow", "white"),
    ("legs of a cat", "four"),
    ("legs of a bird", "two"),
    ("opposite of hot", "cold"),
    ("opposite of up", "down"),
    ("first month", "january"),
    ("last month", "december"),
    ("sound of a dog", "woof"),
    ("sound of a cow", "moo"),
]
"""What the `knowing_base` fixture's model answers: registered as the capability suite `facts`."""


def knowing_model(tiny_model: Path, tmp: Path) -> Path:
    """The tiny model, fully fine-tuned until it answers every FACTS question (about 6 s)."""
    rows = [chat(q, a) for q, a in FACTS]
    training = recipe("sft-full", learning_rate=3e-3, max_steps=150, batch_size=12, eval_steps=1000)
    return train_on(tiny_model, rows * 4, tmp, training)


def register_facts_suite(store: Any) -> None:
    """FACTS as the capability suite `facts`, scored by exact match."""
    from services.core.ml.suite_catalogue import register_suite

    data = "".join(
        json.dumps({"id": f"fact-{n}", "prompt": q, "answer": a}) + "\n" for n, (q, a) in enumerate(FACTS, 1)
    )
    register_suite(store, "facts", data.encode(), "exact", kind="capability")
