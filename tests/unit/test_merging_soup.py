"""Merging's logic without a broker: greedy-soup ranking and walk (scorer injected), method dispatch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from schemas.merge import MergeRequested
from schemas.queries import EvalDetail, EvalRecord
from schemas.refs import DatasetRef, ModelRef
from services.core.artifacts import ArtifactStore
from services.merging import soup
from services.merging.config import MergingSettings
from services.merging.merges import Merger, Refused
from tests.support.events import model_ref, sha

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def detail(version: str, scores: dict[str, float], suite_sha: str = "s1") -> EvalDetail:
    suites = [
        {
            "suite": {"name": name, "sha256": suite_sha},
            "scores": [{"arm": "candidate", "metrics": {"score": s}}],
        }
        for name, s in scores.items()
    ]
    record = EvalRecord(ce_id=f"e-{version}", suites=suites, report=None, created_at=NOW)
    return EvalDetail(version_id=version, evaluations=(record,), decisions=())


def full_model(store: ArtifactStore, folder: Path, value: float, dataset: str = "ds") -> ModelRef:
    folder.mkdir(parents=True)
    save_file({"w": torch.full((4, 4), value)}, str(folder / "model.safetensors"))
    ref = model_ref(run_id=f"run-{value}")
    return ref.model_copy(
        update={
            "adapter": None,
            "weights": store.put_tree(folder),
            "dataset": DatasetRef(dataset_id=sha(dataset), manifest=store.put_bytes(dataset.encode())),
        }
    )


def test_rank_orders_members_best_first_and_refuses_what_is_not_comparable() -> None:
    a, b, c = (model_ref(seed) for seed in "abc")
    ranking = soup.rank(
        "facts",
        [
            ("va", a, detail("va", {"facts": 40})),
            ("vb", b, detail("vb", {"facts": 70})),
            ("vc", c, detail("vc", {"facts": 55})),
        ],
    )
    assert [m.version_id for m in ranking.members] == ["vb", "vc", "va"]
    assert [m.index for m in ranking.members] == [1, 2, 0]

    never = EvalDetail(version_id="vc", evaluations=(), decisions=())
    with pytest.raises(Refused, match="input vc has no evaluation"):
        soup.rank("facts", [("va", a, detail("va", {"facts": 1})), ("vc", c, never)])
    with pytest.raises(Refused, match="was not evaluated on 'safety'; rank_by one of: facts"):
        soup.rank("safety", [("va", a, detail("va", {"facts": 1}))])
    with pytest.raises(Refused, match="2 different versions of 'facts'"):
        soup.rank(
            "facts", [("va", a, detail("va", {"facts": 1})), ("vb", b, detail("vb", {"facts": 2}, "s2"))]
        )


def test_rank_on_target_refuses_members_trained_on_different_datasets(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    a = full_model(store, tmp_path / "a", 1.0, dataset="one")
    b = full_model(store, tmp_path / "b", 2.0, dataset="two")
    with pytest.raises(Refused, match="trained on different datasets"):
        soup.rank("target", [("va", a, detail("va", {"target": 1})), ("vb", b, detail("vb", {"target": 2}))])


def test_greedy_soup_keeps_a_member_only_when_the_injected_score_rises(tmp_path: Path) -> None:
    """Members hold constant tensors 1, 3 and 100; the score prefers soups whose mean is near 2, so
    the walk keeps 1 (best), adds 3 (mean 2) and skips 100 (mean 34.7)."""
    store = ArtifactStore(tmp_path / "artifacts")
    refs = {v: full_model(store, tmp_path / f"m{v}", v) for v in (1.0, 3.0, 100.0)}
    members = [(f"v{int(v)}", ref, detail(f"v{int(v)}", {"target": 50 - v})) for v, ref in refs.items()]
    ranking = soup.rank("target", members)
    scored: list[float] = []

    async def score(candidate: ModelRef, _: soup.Ranking) -> float:
        assert candidate.weights is not None and candidate.dataset == refs[1.0].dataset
        mean = float(
            load_file(
                str(
                    store.fetch_tree(candidate.weights, tmp_path / "s" / str(len(scored)))
                    / "model.safetensors"
                )
            )["w"].mean()
        )
        scored.append(mean)
        return 50 - abs(mean - 2) * 10

    event = MergeRequested(
        request_id="g1", tenant="acme", inputs=tuple(m[0] for m in members), method="greedy-soup"
    )
    merger = Merger(MergingSettings(work_dir=str(tmp_path / "work")), store)
    ref, lineage = asyncio.run(soup.greedy_soup(event, ranking, merger, tmp_path / "work", score))

    assert scored == pytest.approx([2.0, 104 / 3])
    assert lineage.parents == ("v1", "v3") and lineage.ranked_by == "target"
    assert [(s.version_id, s.added) for s in lineage.soup_steps] == [
        ("v1", True),
        ("v3", True),
        ("v100", False),
    ]
    assert lineage.soup_steps[1].soup_score == 50.0
    assert ref.merge is not None and ref.merge.weights == (0.5, 0.5, 0.0)
    assert ref.weights is not None
    kept = load_file(str(store.fetch_tree(ref.weights, tmp_path / "kept") / "model.safetensors"))["w"]
    assert torch.allclose(kept, torch.full((4, 4), 2.0))


def test_a_scorer_that_refuses_stops_the_soup_with_the_member_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    a, b = full_model(store, tmp_path / "a", 1.0), full_model(store, tmp_path / "b", 2.0)
    ranking = soup.rank(
        "target", [("va", a, detail("va", {"target": 9})), ("vb", b, detail("vb", {"target": 5}))]
    )

    async def unavailable(candidate: ModelRef, _: soup.Ranking) -> float:
        raise Refused("no evaluation service answered suites.score")

    event = MergeRequested(request_id="g2", tenant="acme", inputs=("va", "vb"), method="greedy-soup")
    merger = Merger(MergingSettings(work_dir=str(tmp_path / "work")), store)
    with pytest.raises(Refused, match="greedy-soup trial with vb: no evaluation service answered"):
        asyncio.run(soup.greedy_soup(event, ranking, merger, tmp_path / "work", unavailable))


def test_merger_dispatches_from_its_table_and_refuses_what_it_does_not_run(tmp_path: Path) -> None:
    merger = Merger(MergingSettings(work_dir=str(tmp_path / "work")), ArtifactStore(tmp_path / "artifacts"))
    ref = model_ref()
    inputs = [(ref.version_id(), ref, None)]
    int8 = MergeRequested(
        request_id="q", tenant="acme", inputs=(ref.version_id(),), method="quantize-int8-dynamic"
    )
    quantized, lineage = merger.merge(int8, inputs, tmp_path / "w")
    assert quantized.quantization is not None and quantized.quantization.method == "int8-dynamic"
    assert quantized.adapter == ref.adapter and lineage.parents == (ref.version_id(),)

    greedy = int8.model_copy(update={"method": "greedy-soup"})
    with pytest.raises(Refused, match="greedy-soup is not a method Merger runs"):
        merger.merge(greedy, inputs, tmp_path / "w")
    assert set(merger.methods) >= {"merge-into-base", "uniform-soup", "ties", "quantize-bnb-4bit"}
