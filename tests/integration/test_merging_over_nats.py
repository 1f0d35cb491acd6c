"""Merging on the tiny model, on a real nats-server with the registry and evaluation: merge-into-base
keeps the adapter's greedy outputs; inputs built on different bases are refused before any weight
is read; soups average shard by shard; greedy soup admits only members that raise its score.
(TIES across two tasks needs a pretrained base: `test_merging_ties.py` runs it on SmolLM2.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.merge import MergeRequested
from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.core.runtime import ServiceRuntime
from services.core.settings import CoreSettings
from services.evaluation.engine import Engine
from services.merging.app import create_app as merging_app
from services.merging.config import MergingSettings
from tests.support.merging import (
    announce,
    evaluated,
    merged_candidate,
    ref_for,
    register_qa_suite,
    registered,
    suite_score,
    tensors,
)
from tests.support.planted import COLOURS, SOUNDS, task_adapter
from tests.support.services import evaluation_app, operator_runtime, registry_app
from tests.support.stream import first_event
from tests.support.training import register_facts_suite

pytestmark = pytest.mark.integration

TASK_A = COLOURS[:6]
TASK_B = SOUNDS[:6]


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return (
        task_adapter(tiny_model, TASK_A, tmp_path_factory.mktemp("task-a")),
        task_adapter(tiny_model, TASK_B, tmp_path_factory.mktemp("task-b")),
    )


@pytest.fixture
async def operator(core: CoreSettings, tmp_path: Path, running: Any) -> AsyncIterator[ServiceRuntime]:
    store = ArtifactStore(core.artifact_root)
    register_qa_suite(store, "task-a", TASK_A)
    register_qa_suite(store, "task-b", TASK_B)
    register_facts_suite(store)
    await running(registry_app(core, tmp_path))
    await running(merging_app(MergingSettings(core=core, work_dir=str(tmp_path / "merging"))))
    await running(evaluation_app(core, tmp_path, ("task-a", "task-b", "facts"), bootstrap_samples=200))
    async with operator_runtime(core) as runtime:
        yield runtime


async def test_merge_into_base_keeps_the_adapters_greedy_outputs(
    operator: ServiceRuntime,
    core: CoreSettings,
    tiny_model: Path,
    adapters: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    store = ArtifactStore(core.artifact_root)
    version = await announce(operator, ref_for(store, tiny_model, adapters[0]), "merge-a")
    await registered(operator, version)
    await operator.bus.publish(
        MergeRequested(
            request_id="m-base",
            tenant="acme",
            inputs=(version[:10],),
            method="merge-into-base",
            route="m-base",
        )
    )
    merged = await merged_candidate(operator, "m-base")
    difference = merged["lineage"]["merge_difference"]
    assert merged["lineage"]["parents"] == [version]
    assert (
        difference["greedy_agreement"] == 1.0 and difference["max_abs_logit_diff"] <= difference["tolerance"]
    )
    assert (
        merged["candidate"]["adapter"] is None and merged["candidate"]["merge"]["kind"] == "merged-into-base"
    )
    # checked independently: the merged weights answer the task exactly as base + adapter does
    weights = store.fetch_tree(ModelRef.model_validate(merged["candidate"]).weights, tmp_path / "merged")  # type: ignore[arg-type]
    engine = Engine(tiny_model)
    engine.add_adapter_arm("adapter", adapters[0], None)
    engine.add_weights_arm("merged", weights, None)
    prompts = [[{"role": "user", "content": q}] for q, _ in TASK_A + TASK_B]
    assert [g.text for g in engine.generate("adapter", prompts, max_new_tokens=8)] == [
        g.text for g in engine.generate("merged", prompts, max_new_tokens=8)
    ]


async def test_inputs_on_different_bases_are_refused_with_the_mismatch(
    operator: ServiceRuntime, core: CoreSettings, tiny_model: Path, adapters: tuple[Path, Path]
) -> None:
    store = ArtifactStore(core.artifact_root)
    a = await announce(operator, ref_for(store, tiny_model, adapters[0]), "base-one")
    other = ref_for(store, tiny_model, adapters[1], sha256="e" * 64, name="another-base")
    b = await announce(operator, other, "base-two")
    for version in (a, b):
        await registered(operator, version)
    await operator.bus.publish(
        MergeRequested(request_id="m-bad", tenant="acme", inputs=(a, b), method="linear", weights=(0.5, 0.5))
    )
    failed = (await first_event(operator, "merge.failed", timeout=60, request_id="m-bad")).payload
    assert "refused before touching any weight" in failed["error"]
    [mismatch] = [m for m in failed["mismatches"] if m["attribute"] == "base.sha256"]
    assert mismatch["found"] == "e" * 64 and mismatch["version_id"] == b


def perturbed_copy(base: Path, out: Path, seed: int, scale: float = 0.01) -> Path:
    """A full model on the same base: each weight tensor plus Gaussian noise of `scale` times its std."""
    import torch

    from services.core.ml.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(base)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1:
                parameter.add_(torch.randn_like(parameter) * scale * parameter.std())
    model.save_pretrained(out, max_shard_size="200KB")  # several shards: the soup streams them
    load_tokenizer(base).save_pretrained(out)
    return out


async def test_uniform_soup_averages_full_models_shard_by_shard(
    operator: ServiceRuntime, core: CoreSettings, tiny_model: Path, tmp_path: Path
) -> None:

    store = ArtifactStore(core.artifact_root)
    members = [perturbed_copy(tiny_model, tmp_path / f"full-{n}", seed=n) for n in (1, 2)]
    assert len(list(members[0].glob("*.safetensors"))) > 1
    versions = []
    for n, member in enumerate(members):
        versions.append(await announce(operator, ref_for(store, tiny_model, member), f"full-{n}"))
        await registered(operator, versions[-1])
    await operator.bus.publish(
        MergeRequested(
            request_id="m-soup", tenant="acme", inputs=tuple(versions), method="uniform-soup", route="m-soup"
        )
    )
    merged = await merged_candidate(operator, "m-soup")
    assert merged["candidate"]["merge"]["kind"] == "soup" and merged["lineage"]["peak_memory_mb"] > 0
    soup = store.fetch_tree(ModelRef.model_validate(merged["candidate"]).weights, tmp_path / "soup")  # type: ignore[arg-type]

    a, b, c = tensors(members[0]), tensors(members[1]), tensors(soup)
    assert set(c) == set(a)
    worst = max(float((c[k] - (a[k] + b[k]) / 2).abs().max()) for k in a)
    assert worst < 1e-6, "every tensor is the mean of the members"
    whole_model_mb = sum(t.numel() * t.element_size() for t in a.values()) / 2**20
    assert merged["lineage"]["peak_memory_mb"] < whole_model_mb, "no input is ever held whole"


async def test_greedy_soup_adds_a_member_only_when_the_soups_score_rises(
    operator: ServiceRuntime, core: CoreSettings, knowing_base: Path, tmp_path: Path
) -> None:
    """Members are the knowing base plus noise: two mildly noisy copies, whose average cancels some
    of the noise, and one very noisy copy that drags any soup down. Each is evaluated on `facts`
    first; the soup is ranked by those registry scores."""

    store = ArtifactStore(core.artifact_root)
    noise = {"mild-1": (1, 0.5), "mild-2": (2, 0.5), "wild": (3, 2.0)}
    folders, versions = {}, {}
    for name, (seed, scale) in noise.items():
        folders[name] = perturbed_copy(knowing_base, tmp_path / name, seed, scale)
        ref = ref_for(store, knowing_base, folders[name], name="knowing", uri=str(knowing_base))
        versions[name] = await announce(operator, ref, f"soup-{name}")
    scores = {name: suite_score(await evaluated(operator, v), "facts") for name, v in versions.items()}
    assert scores["wild"] < min(scores["mild-1"], scores["mild-2"]), scores

    await operator.bus.publish(
        MergeRequested(
            request_id="m-greedy",
            tenant="acme",
            inputs=tuple(versions.values()),
            method="greedy-soup",
            rank_by="facts",
            route="m-greedy",
        )
    )
    merged = await merged_candidate(operator, "m-greedy")
    steps = merged["lineage"]["soup_steps"]
    name_of = {v: n for n, v in versions.items()}
    assert next(name_of[s["version_id"]] for s in steps) == max(scores, key=lambda n: scores[n])
    assert [s["member_score"] for s in steps] == sorted(scores.values(), reverse=True)
    assert merged["lineage"]["ranked_by"] == "facts"
    best, added, wild = steps[0], steps[1], steps[2]
    # the two mild copies average out part of their noise: the soup beats the best of them
    assert added["added"] and added["soup_score"] > best["soup_score"]
    # the wild copy would lower the soup: tried, scored and left out
    assert name_of[wild["version_id"]] == "wild" and not wild["added"]
    assert wild["soup_score"] < added["soup_score"]
    assert merged["lineage"]["parents"] == [best["version_id"], added["version_id"]]
    assert merged["candidate"]["merge"]["method"] == "greedy-soup"
    assert merged["candidate"]["merge"]["weights"] == [0.5, 0.5, 0.0]

    soup = store.fetch_tree(ModelRef.model_validate(merged["candidate"]).weights, tmp_path / "soup")  # type: ignore[arg-type]
    a, b, c = tensors(folders["mild-1"]), tensors(folders["mild-2"]), tensors(soup)
    assert max(float((c[k] - (a[k] + b[k]) / 2).abs().max()) for k in a) < 1e-6
    # and the soup goes through evaluation like any candidate, scoring what the trial scored
    detail = await evaluated(operator, ModelRef.model_validate(merged["candidate"]).version_id())
    assert suite_score(detail, "facts") == added["soup_score"]


def test_a_bnb_request_for_an_adapter_version_merges_it_first(
    tiny_model: Path, adapters: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bitsandbytes quantizes full weights at load, so an adapter is merged into its base first. The
    loading itself needs CUDA (tests/gpu); here CUDA is declared present to check what is recorded."""
    from services.merging import merges

    store = ArtifactStore(tmp_path / "artifacts")
    ref = ref_for(store, tiny_model, adapters[0])
    settings = MergingSettings(work_dir=str(tmp_path / "merging"))
    settings.core.model_cache = str(tiny_model.parent)
    merger = merges.Merger(settings, store)
    event = MergeRequested(
        request_id="q4", tenant="acme", inputs=(ref.version_id(),), method="quantize-bnb-4bit"
    )
    inputs = [(ref.version_id(), ref, None)]
    with pytest.raises(merges.Refused, match="needs CUDA"):
        merger.merge(event, inputs, tmp_path / "work")

    monkeypatch.setattr(merges, "_cuda", lambda: True)
    merged, lineage = merger.merge(event, inputs, tmp_path / "work")
    assert merged.adapter is None and merged.weights is not None
    assert merged.merge.kind == "merged-into-base"
    assert merged.quantization.method == "bnb-4bit" and merged.quantization.quant_type == "nf4"
    assert lineage.parents == (ref.version_id(),) and lineage.merge_difference is not None
    assert lineage.merge_difference.greedy_agreement == 1.0
