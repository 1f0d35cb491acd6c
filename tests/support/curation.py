"""Crafted datasets for curation tests: distinct, realistic rows and helpers to break them."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from schemas.curation_policy import CurationPolicy
from schemas.dataset import DatasetSubmitted, DataSource, MixComponent, MixSpec
from schemas.recipe import TrainingRecipe
from services.core.ml.suite_catalogue import Suite
from services.curation.pipeline import Curated, Tokenizer, curate

NAMES = ["Ana", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira", "Luca"]
THINGS = ["lamp", "chair", "mouse", "filter", "backpack", "tracker", "grinder", "desk", "speaker", "keyboard"]
VERBS = ["arrived broken", "never arrived", "was charged twice", "stopped working", "is missing a part"]


def task_rows(n: int = 40, seed: int = 1) -> list[dict[str, Any]]:
    """Rows that differ enough that no two are near-duplicates."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, thing, verb = NAMES[i % 12], THINGS[(i * 7) % 10], VERBS[(i * 3) % 5]
        order = 10000 + i * 137
        filler = " ".join(
            rng.sample(["please", "kindly", "soon", "today", "again", "really", "now", "thanks"], 3)
        )
        prompt = f"Ticket {order} from {name}: my {thing} {verb} {filler} (case {i})"
        rows.append(
            {"prompt": prompt, "completion": json.dumps({"customer": name, "order": order, "item": thing})}
        )
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def submission(
    *sources: DataSource,
    policy: CurationPolicy | None = None,
    mix: MixSpec | None = None,
    max_seq_len: int = 512,
    submission_id: str = "sub-test",
) -> DatasetSubmitted:
    return DatasetSubmitted(
        submission_id=submission_id,
        tenant="acme",
        task="ticket-to-json",
        route="ticket-extractor",
        sources=sources,
        mix=mix or MixSpec(),
        curation=policy or CurationPolicy(canaries=0),
        recipe=TrainingRecipe(base_model="tiny-llama", max_seq_len=max_seq_len),
    )


def replay_mix(seed: int = 3) -> MixSpec:
    return MixSpec(
        seed=seed,
        components=(
            MixComponent(name="task", ratio=0.8),
            MixComponent(name="general-replay", ratio=0.1),
            MixComponent(name="safety", ratio=0.1),
        ),
    )


# -- running the pipeline on crafted data (the unit tests' helpers) --
def run(tokenizer: Tokenizer, *sources: DataSource, suites: list[Suite] | None = None, **kw: Any) -> Curated:
    return curate(
        submission(*sources, **kw), resolve=lambda s: Path(s.uri), tokenizer=tokenizer, suites=suites or []
    )


def check(result: Curated, name: str) -> Any:
    return next(c for c in result.audit.checks if c.name == name)


def findings(result: Curated, name: str) -> list[Any]:
    return [f for f in result.audit.findings if f.check == name]


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]
