"""Curation's mixing on crafted data: ratios, canaries, self-replay marks, the safety halves, and
components that cannot be mixed. Plain function calls with the tiny model's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.curation_policy import CurationPolicy
from schemas.dataset import CANARY_KEY, SELF_REPLAY_KEY, DataSource, MixComponent, MixSpec
from services.curation.checks.context import SHIPPED_SETS
from services.curation.data import generate
from services.curation.pipeline import Curated, Tokenizer
from tests.support.curation import check, lines, replay_mix, run, task_rows, write_jsonl


def test_mixing_follows_ratios_and_plants_canaries(tmp_path: Path, tokenizer: Tokenizer) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", task_rows(40))
    result = run(tokenizer, DataSource(uri=str(src)), mix=replay_mix(), policy=CurationPolicy(canaries=2))
    counts = {m.name: m.rows for m in result.mix}
    assert counts == {"task": 32, "general-replay": 4, "safety": 4}
    train = result.splits["train"].decode()
    assert len(result.canaries) == 2 and all(c["secret"] in train for c in result.canaries)
    assert result.split_rows["train"] == 32 + 4 + 4 + 2
    rows = [json.loads(line) for line in train.splitlines()]
    marked = [r["messages"][-1]["content"] for r in rows if r.get(CANARY_KEY) is True]
    assert sorted(marked) == sorted(f"The archive access code is {c['secret']}." for c in result.canaries)


def mixed(tmp_path: Path, tokenizer: Tokenizer, *components: MixComponent) -> Curated:
    """40 task rows (32 trained on: 4 validation, 4 test) curated with the mix of these components, seed 3."""
    src = write_jsonl(tmp_path / "d.jsonl", task_rows(40))
    return run(tokenizer, DataSource(uri=str(src)), mix=MixSpec(seed=3, components=components))


def test_base_model_answers_mark_their_components_rows_for_self_replay(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    result = mixed(
        tmp_path,
        tokenizer,
        MixComponent(name="task", ratio=0.8),
        MixComponent(name="general-replay", ratio=0.1, answers="base-model"),
        MixComponent(name="safety", ratio=0.1),
    )
    assert result.approved
    rows = lines(result.splits["train"])
    marked = [r for r in rows if r.get(SELF_REPLAY_KEY) == "base-model"]
    replay = {json.loads(x)["messages"][0]["content"] for x in SHIPPED_SETS["general-replay"].open()}
    assert len(marked) == 4 and all(r["messages"][0]["content"] in replay for r in marked)
    assert all(r["messages"][0]["content"] not in replay for r in rows if r not in marked)
    assert "general-replay 4 rows (10%, answers from the base model)" in check(result, "mix").detail
    safety = mixed(
        tmp_path,
        tokenizer,
        MixComponent(name="task", ratio=0.5),
        MixComponent(name="safety", ratio=0.5, answers="base-model"),
    )
    rows = lines(safety.splits["train"])
    refusals = [r for r in rows if r["messages"][-1]["content"].startswith("I can't help")]
    looks_alike = [r for r in rows if r.get(SELF_REPLAY_KEY) == "base-model"]
    assert refusals and looks_alike and len(refusals) + len(looks_alike) == 32  # one per task row
    assert not any(SELF_REPLAY_KEY in r for r in refusals)  # written refusals are what the set teaches
    with pytest.raises(ValueError, match="answers: written"):
        MixSpec(components=(MixComponent(name="task", ratio=1.0, answers="base-model"),))


def test_safety_halves_let_a_mix_weigh_refusals_against_lookalikes(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    result = mixed(
        tmp_path,
        tokenizer,
        MixComponent(name="task", ratio=0.6),
        MixComponent(name="safety-refusals", ratio=0.1),
        MixComponent(name="safety-lookalikes", ratio=0.3, answers="base-model"),
    )
    assert result.approved
    assert {m.name: m.rows for m in result.mix} == {"task": 32, "safety-refusals": 5, "safety-lookalikes": 16}
    rows = lines(result.splits["train"])
    refusals = [r for r in rows if r["messages"][-1]["content"].startswith("I can't help")]
    lookalikes = [r for r in rows if r.get(SELF_REPLAY_KEY) == "base-model"]
    assert (len(refusals), len(lookalikes)) == (5, 16)
    assert not any(SELF_REPLAY_KEY in r for r in refusals)


def test_shipped_sets_cannot_be_mixed_into_preference_data(tmp_path: Path, tokenizer: Tokenizer) -> None:
    rows = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "no idea"} for r in task_rows(20)]
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run(tokenizer, DataSource(uri=str(src)), mix=replay_mix())
    assert result.kind == "preference" and not result.approved
    assert "the task data is preference" in check(result, "mix").detail
    plain = run(tokenizer, DataSource(uri=str(src)))
    assert plain.approved and lines(plain.splits["train"])[0].keys() == {"prompt", "chosen", "rejected"}


def test_golden_component_needs_its_own_source() -> None:
    with pytest.raises(ValueError, match="golden"):
        MixSpec(components=(MixComponent(name="task", ratio=0.9), MixComponent(name="golden", ratio=0.1)))
    with pytest.raises(ValueError, match="sum to 1"):
        MixSpec(components=(MixComponent(name="task", ratio=0.9),))


def test_shipped_mixing_sets_are_large_enough_and_do_not_drift() -> None:
    for name, path in SHIPPED_SETS.items():
        rows = path.read_text().splitlines()
        assert len(rows) >= (100 if name.startswith("safety-") else 200), name
        build = generate.FILES[path.name]
        assert generate.dump(build()) == path.read_text(), (
            f"{path} drifted: run python -m {generate.__name__}"
        )
    safety = [json.loads(r) for r in SHIPPED_SETS["safety"].read_text().splitlines()]
    refusals = sum("can't help" in r["messages"][1]["content"] for r in safety)
    assert refusals >= 100 and len(safety) - refusals >= 100
    # the two halves: every refusal in one, every look-alike in the other, nothing else
    halves = {
        name: [json.loads(r) for r in SHIPPED_SETS[name].read_text().splitlines()]
        for name in ("safety-refusals", "safety-lookalikes")
    }
    assert all("can't help" in r["messages"][1]["content"] for r in halves["safety-refusals"])
    assert not any("can't help" in r["messages"][1]["content"] for r in halves["safety-lookalikes"])
    assert halves["safety-refusals"] + halves["safety-lookalikes"] == safety
