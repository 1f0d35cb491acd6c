"""Training's logic without a broker: what a run prepares before its worker starts, and the
worker's messages (a union tagged by kind) as the service reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.refs import ArtifactRef
from services.core.artifacts import ArtifactStore
from services.training.config import TrainingSettings
from services.training.job import FINAL, Cancelled, Checkpoint, Done, Failed, Progress, Started, parse
from services.training.preflight import PreflightError
from services.training.preparation import checkpoint_key, prepare
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
