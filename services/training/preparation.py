"""Everything a training run needs before its worker starts, checked and fetched: plain code.

`prepare` reads the dataset manifest, runs the preflight checks (format, device, base and teacher
resolvable, sequence length, target modules, teacher tokenizer), fetches the splits and the last
checkpoint of an earlier attempt, and returns the worker's job. A refusal is a `PreflightError`
with its reason; the handler turns it into `training.failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.dataset import DatasetApproved
from schemas.refs import ArtifactRef, BaseModelRef, TokenizerRef
from services.core.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from services.core.ml.bases import resolve_base_model
from services.core.ml.models import ModelResolutionError, tokenizer_sha256
from services.training import preflight
from services.training.config import TrainingSettings
from services.training.job import TrainingJob
from services.training.model_ref import base_ref, tokenizer_ref


@dataclass
class Prepared:
    job: TrainingJob
    base: BaseModelRef
    tokenizer: TokenizerRef
    resume_step: int | None


def checkpoint_key(run_id: str) -> str:
    return f"refs/training/{run_id}/checkpoint.json"


def _models(
    event: DatasetApproved, settings: TrainingSettings, store: ArtifactStore
) -> tuple[Path, Path | None]:
    """The base (and the distillation teacher) as local directories, resolved for the tenant."""
    recipe, cache, roots = event.recipe, settings.core.model_cache, settings.core.model_local_roots
    try:
        base = resolve_base_model(recipe.base_model, cache, store, local_roots=roots, tenant=event.tenant)
        teacher = (
            resolve_base_model(recipe.distill.teacher, cache, store, local_roots=roots, tenant=event.tenant)
            if recipe.distill
            else None
        )
    except ModelResolutionError as error:
        raise preflight.PreflightError("base-model-unavailable", f"training.base_model: {error}") from None
    return base, teacher


TRAINING_SPLITS = ("train", "validation")
"""The splits training reads. `test` (the gates' split; `eval` in datasets curated before the
validation split existed) is never fetched: a run cannot be tuned on what will judge it."""


def _splits(event: DatasetApproved, store: ArtifactStore, work: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for split in event.splits:
        if split.name not in TRAINING_SPLITS or (split.name != "train" and split.rows == 0):
            continue
        target = work / "data" / f"{split.name}.jsonl"
        try:
            store.fetch_file(split.artifact, target)
        except ArtifactError as error:
            raise preflight.PreflightError("dataset-unavailable", f"split {split.name!r}: {error}") from None
        files[split.name] = str(target)
    if "train" not in files:
        raise preflight.PreflightError("dataset-invalid", "the dataset has no `train` split")
    return files


def last_checkpoint(store: ArtifactStore, run_id: str, work: Path) -> tuple[str | None, int | None]:
    """The last checkpoint an earlier attempt of this run uploaded, fetched and verified."""
    try:
        pointer = store.read_named_json(checkpoint_key(run_id))
    except ArtifactNotFound:
        return None, None
    step = int(pointer["step"])
    target = work / "resume" / f"checkpoint-{step}"
    store.fetch_tree(ArtifactRef.model_validate(pointer["tree"]), target)
    return str(target), step


def prepare(
    event: DatasetApproved, run_id: str, work: Path, settings: TrainingSettings, store: ArtifactStore
) -> Prepared:
    recipe = event.recipe
    try:
        manifest = store.read_json(event.manifest)
    except ArtifactError as error:
        raise preflight.PreflightError("dataset-unavailable", f"dataset manifest: {error}") from None
    preflight.check_format(recipe, manifest.get("format"))
    preflight.check_device(recipe, settings.device)
    base_path, teacher_path = _models(event, settings, store)
    preflight.check_sequence_length(recipe, base_path)
    preflight.check_target_modules(recipe, base_path)
    if recipe.method == "distill" and recipe.distill is not None and teacher_path is not None:
        preflight.check_teacher(
            tokenizer_sha256(base_path), tokenizer_sha256(teacher_path), recipe.distill.teacher
        )
    files = _splits(event, store, work)
    resume_from, resume_step = last_checkpoint(store, run_id, work)
    job = TrainingJob(
        run_id=run_id,
        recipe=recipe,
        data_format=manifest["format"],
        base_dir=str(base_path),
        teacher_dir=str(teacher_path) if teacher_path else None,
        train_file=files["train"],
        eval_file=files.get("validation"),
        output_dir=str(work / "out"),
        resume_from=resume_from,
        artifact_root=settings.core.artifact_root,
        checkpoint_ref_key=checkpoint_key(run_id),
        device=settings.device,
    )
    return Prepared(job, base_ref(recipe.base_model, base_path), tokenizer_ref(base_path), resume_step)
