"""Training's logic without a broker: what a run prepares before its worker starts, and the
worker's messages (a union tagged by kind) as the service reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.refs import ArtifactRef, DatasetRef
from services.core.artifacts import ArtifactStore
from services.evaluation.evaluate import Evaluator
from services.evaluation.options import EvalOptions
from services.training.config import TrainingSettings
from services.training.job import FINAL, Cancelled, Checkpoint, Done, Failed, Progress, Started, parse
from services.training.preflight import PreflightError
from services.training.preparation import checkpoint_key, prepare
from tests.support.events import model_ref
from tests.support.training import approved, recipe


def settings_for(tmp_path: Path, model_cache: Path) -> TrainingSettings:
    settings = TrainingSettings(work_dir=str(tmp_path / "work"), device="cpu")
    settings.core.artifact_root = str(tmp_path / "artifacts")
    settings.core.model_cache = str(model_cache)
    return settings


def test_prepare_fetches_the_splits_and_resumes_from_the_last_uploaded_checkpoint(
    tiny_model: Path, model_cache: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, model_cache)
    store = ArtifactStore(settings.core.artifact_root)
    event = approved(store, recipe("sft-lora"), rows=12)

    first = prepare(event, "run-1", tmp_path / "a1", settings, store)
    assert first.resume_step is None and first.job.resume_from is None
    assert Path(first.job.train_file).read_text().count("\n") == 12
    assert first.job.eval_file is not None and Path(first.job.eval_file).exists()
    assert first.job.base_dir == str(tiny_model) and first.job.data_format == "sft"
    assert first.base.sha256 and first.tokenizer.tokenizer_sha256
    assert first.job.checkpoint_ref_key == checkpoint_key("run-1")

    # an earlier attempt uploaded checkpoint 7: the next attempt fetches and verifies it
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 7}')
    tree = store.put_tree(checkpoint)
    store.put_named_json(checkpoint_key("run-1"), {"step": 7, "tree": tree.model_dump(mode="json")})
    second = prepare(event, "run-1", tmp_path / "a2", settings, store)
    assert second.resume_step == 7
    assert second.job.resume_from is not None
    assert (Path(second.job.resume_from) / "trainer_state.json").read_text() == '{"global_step": 7}'


def test_prepare_refuses_with_the_reason_and_the_input_named(
    tiny_model: Path, model_cache: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, model_cache)
    store = ArtifactStore(settings.core.artifact_root)
    event = approved(store, recipe("sft-lora"), rows=12)

    gone = event.model_copy(
        update={"manifest": ArtifactRef(key="blobs/sha256/00/" + "0" * 64, sha256="0" * 64, size_bytes=1)}
    )
    with pytest.raises(PreflightError, match="dataset manifest") as refused:
        prepare(gone, "r", tmp_path / "w1", settings, store)
    assert refused.value.reason == "dataset-unavailable"

    unknown = event.model_copy(
        update={"recipe": event.recipe.model_copy(update={"base_model": "no-such-model"})}
    )
    with pytest.raises(PreflightError, match=r"training\.base_model") as refused:
        prepare(unknown, "r", tmp_path / "w2", settings, store)
    assert refused.value.reason == "base-model-unavailable"

    no_train = event.model_copy(update={"splits": tuple(s for s in event.splits if s.name != "train")})
    with pytest.raises(PreflightError, match="no `train` split") as refused:
        prepare(no_train, "r", tmp_path / "w3", settings, store)
    assert refused.value.reason == "dataset-invalid"


def test_worker_messages_are_a_union_tagged_by_kind() -> None:
    tree = ArtifactRef(key="blobs/sha256/ab/" + "ab" * 32, sha256="ab" * 32, size_bytes=3)
    sent = [
        Started(total_steps=10),
        Progress(step=3, total_steps=10, loss=1.5, tokens_per_second=900.0),
        Checkpoint(step=5, tree=tree),
        Done(model_dir="/out/final", steps=10, runtime_s=4.2, first_loss=2.0, last_loss=0.5),
        Cancelled(step=4),
        Failed(reason="out-of-memory", message="CUDA out of memory"),
    ]
    read = [parse(m.line()) for m in sent]
    assert read == sent
    assert [type(m) for m in read if isinstance(m, FINAL)] == [Done, Cancelled, Failed]
    assert sent[3].summary() == {
        "steps": 10,
        "first_loss": 2.0,
        "last_loss": 0.5,
        "runtime_s": 4.2,
        "tokens": 0.0,
        "tokens_per_second": None,
        "peak_memory_mb": None,
    }
    # a line that is not a message (a library print that escaped, a field of the wrong kind) is None
    assert parse("Loading checkpoint shards: 100%") is None
    assert parse('{"kind": "progress", "total_steps": 10}') is None  # progress without its step
    assert parse('{"kind": "done", "model_dir": "/x", "steps": 1, "runtime_s": 1, "surprise": 1}') is None


def test_early_stopping_and_the_gates_read_different_splits(
    tiny_model: Path, model_cache: Path, tmp_path: Path
) -> None:
    """Training fetches train and validation only; evaluation's target suite is the test split."""
    settings = settings_for(tmp_path, model_cache)
    store = ArtifactStore(settings.core.artifact_root)
    event = approved(store, recipe("sft-lora"), rows=12)
    by_name = {s.name: store.read_bytes(s.artifact) for s in event.splits}
    assert set(by_name) == {"train", "validation", "test"}

    prepared = prepare(event, "run-1", tmp_path / "work", settings, store)
    assert prepared.job.eval_file is not None
    assert Path(prepared.job.eval_file).read_bytes() == by_name["validation"]
    read = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert sorted(p.name for p in read) == ["train.jsonl", "validation.jsonl"]
    test_rows = [line for line in by_name["test"].splitlines() if line.strip()]
    assert test_rows and not any(row in p.read_bytes() for p in read for row in test_rows)

    evaluator = Evaluator(store, EvalOptions(), model_cache=str(model_cache), work_dir=tmp_path / "eval")
    ref = model_ref().model_copy(
        update={"dataset": DatasetRef(dataset_id=event.dataset_id, manifest=event.manifest)}
    )
    _, gates_split = evaluator._dataset(ref)
    assert gates_split == by_name["test"] and gates_split != by_name["validation"]
