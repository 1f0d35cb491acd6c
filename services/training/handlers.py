"""Training's subscribers: dataset.approved runs a worker subprocess; cancel requests stop it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from faststream.nats import NatsBroker

from schemas.candidate import CandidateReady
from schemas.dataset import DatasetApproved
from schemas.envelope import Envelope
from schemas.refs import ArtifactRef, BaseModelRef, Lineage, TokenizerRef
from schemas.training import (
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from services.core.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from services.core.bus import EventBus
from services.core.delivery import HandlerContext, PermanentError, subscribe_event
from services.core.models import ModelResolutionError, resolve_base_model, tokenizer_sha256
from services.core.prometheus import ServiceMetrics
from services.training import preflight
from services.training.config import TrainingSettings
from services.training.control import RunControl
from services.training.job import ADAPTER_METHODS, TrainingJob, WorkerMessage
from services.training.model_ref import base_ref, candidate_ref, recipe_sha256, tokenizer_ref
from services.training.runner import WorkerCrashed, WorkerRun

SERVICE = "training"
log = logging.getLogger(__name__)


def run_id_for(event: DatasetApproved, envelope: Envelope) -> str:
    """One run per dataset.approved event: redeliveries of it map to the same run."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"tuneline/training/{envelope.id}").hex
    return f"run-{event.dataset_id[:8]}-{digest[:8]}"


def checkpoint_key(run_id: str) -> str:
    return f"refs/training/{run_id}/checkpoint.json"


@dataclass
class Prepared:
    job: TrainingJob
    base: BaseModelRef
    tokenizer: TokenizerRef
    resume_step: int | None


class ProgressThrottle:
    """At most one progress event per interval; evaluations and the last step always pass."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = float("-inf")

    def allow(self, message: WorkerMessage) -> bool:
        extra = message.model_extra or {}
        now = time.monotonic()
        final = extra.get("step") == extra.get("total_steps")
        if extra.get("eval_loss") is not None or final or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


class TrainingHandlers:
    def __init__(self, settings: TrainingSettings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.control: RunControl | None = None  # opened at startup (a NATS KV bucket)
        self.running: dict[str, WorkerRun] = {}

    # -- preparation (worker thread) ----------------------------------------------------------
    def prepare(self, event: DatasetApproved, run_id: str, work: Path) -> Prepared:
        recipe = event.recipe
        try:
            manifest = self.store.read_json(event.manifest)
        except ArtifactError as error:
            raise preflight.PreflightError("dataset-unavailable", f"dataset manifest: {error}") from None
        preflight.check_format(recipe, manifest.get("format"))
        preflight.check_device(recipe, self.settings.device)
        cache = self.settings.core.model_cache
        try:
            roots = self.settings.core.model_local_roots
            owner = event.tenant
            base_path = resolve_base_model(
                recipe.base_model, cache, self.store, local_roots=roots, tenant=owner
            )
            teacher_path = (
                resolve_base_model(recipe.distill.teacher, cache, self.store, local_roots=roots, tenant=owner)
                if recipe.distill
                else None
            )
        except ModelResolutionError as error:
            raise preflight.PreflightError(
                "base-model-unavailable", f"training.base_model: {error}"
            ) from None
        preflight.check_sequence_length(recipe, base_path)
        preflight.check_target_modules(recipe, base_path)
        if recipe.method == "distill" and recipe.distill is not None and teacher_path is not None:
            preflight.check_teacher(
                tokenizer_sha256(base_path), tokenizer_sha256(teacher_path), recipe.distill.teacher
            )
        files: dict[str, str] = {}
        for split in event.splits:
            target = work / "data" / f"{split.name}.jsonl"
            try:
                self.store.fetch_file(split.artifact, target)
            except ArtifactError as error:
                raise preflight.PreflightError(
                    "dataset-unavailable", f"split {split.name!r}: {error}"
                ) from None
            files[split.name] = str(target)
        if "train" not in files:
            raise preflight.PreflightError("dataset-invalid", "the dataset has no `train` split")
        resume_from, resume_step = self._checkpoint(run_id, work)
        job = TrainingJob(
            run_id=run_id,
            recipe=recipe,
            data_format=manifest["format"],
            base_dir=str(base_path),
            teacher_dir=str(teacher_path) if teacher_path else None,
            train_file=files["train"],
            eval_file=files.get("eval"),
            output_dir=str(work / "out"),
            resume_from=resume_from,
            artifact_root=self.settings.core.artifact_root,
            checkpoint_ref_key=checkpoint_key(run_id),
            device=self.settings.device,
        )
        return Prepared(job, base_ref(recipe.base_model, base_path), tokenizer_ref(base_path), resume_step)

    def _checkpoint(self, run_id: str, work: Path) -> tuple[str | None, int | None]:
        """The last checkpoint an earlier attempt of this run uploaded, fetched and verified."""
        try:
            pointer = self.store.read_named_json(checkpoint_key(run_id))
        except ArtifactNotFound:
            return None, None
        step = int(pointer["step"])
        target = work / "resume" / f"checkpoint-{step}"
        self.store.fetch_tree(ArtifactRef.model_validate(pointer["tree"]), target)
        return str(target), step

    def _work_dir(self, run_id: str, attempt: int) -> Path:
        path = Path(self.settings.work_dir) / run_id / f"attempt-{attempt}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # -- dataset.approved ---------------------------------------------------------------------
    async def on_approved(self, event: DatasetApproved, ctx: HandlerContext) -> None:
        control = self._control()
        run_id = run_id_for(event, ctx.envelope)
        finished = await control.result(run_id)
        if finished is not None:
            # done before the ack got through: publish the recorded result again (same id, no duplicate)
            await ctx.publish(CandidateReady.read(finished["candidate"]))
            return
        reason = await control.cancel_reason(run_id)
        if reason is not None:
            await ctx.publish(TrainingCancelled(run_id=run_id, reason=reason), "cancelled")
            return
        work = await asyncio.to_thread(self._work_dir, run_id, ctx.attempt)
        try:
            await self._run(event, ctx, run_id, work)
        finally:
            if not self.settings.keep_work:
                await asyncio.to_thread(shutil.rmtree, work, True)

    async def _run(self, event: DatasetApproved, ctx: HandlerContext, run_id: str, work: Path) -> None:
        try:
            prepared = await asyncio.to_thread(self.prepare, event, run_id, work)
        except preflight.PreflightError as error:
            log.warning("run %s refused: %s", run_id, error.message)
            await ctx.publish(
                TrainingFailed(run_id=run_id, error=error.message, reason=error.reason), "failed"
            )
            return
        await ctx.publish(
            TrainingStarted(
                run_id=run_id,
                dataset_id=event.dataset_id,
                method=event.recipe.method,
                base=prepared.base,
                recipe_sha256=recipe_sha256(event.recipe),
                attempt=ctx.attempt,
                resumed_from_step=prepared.resume_step,
            ),
            "started",
            ctx.attempt,
        )
        worker = WorkerRun(prepared.job, python=self.settings.python, work=work)
        self.running[run_id] = worker
        last_step = prepared.resume_step
        throttle = ProgressThrottle(self.settings.progress_interval_s)
        control = self._control()

        async def cancel_requested() -> bool:
            return await control.cancel_reason(run_id) is not None

        try:
            async for message in worker.messages(
                poll_s=self.settings.cancel_poll_s,
                should_stop=cancel_requested,
                grace_s=self.settings.stop_grace_s,
            ):
                extra = message.model_extra or {}
                if message.kind == "progress":
                    last_step = extra.get("step", last_step)
                    if throttle.allow(message):
                        await self._progress(ctx, run_id, extra)
                elif message.kind == "checkpoint":
                    log.info("run %s: checkpoint at step %s", run_id, extra.get("step"))
                elif message.kind == "done":
                    await self._done(event, ctx, run_id, prepared, extra)
                elif message.kind == "cancelled":
                    await self._cancelled(ctx, run_id, extra.get("step", last_step))
                elif message.kind == "error":
                    detail = f"{extra.get('message', 'training failed')}; worker log: {worker.log_path}"
                    await ctx.publish(
                        TrainingFailed(
                            run_id=run_id,
                            error=detail,
                            reason=extra.get("reason", "training-error"),
                            step=last_step,
                        ),
                        "failed",
                    )
        except WorkerCrashed as crash:
            if worker.stop_requested:
                await self._cancelled(ctx, run_id, last_step)
                return
            if ctx.attempt >= self.settings.core.delivery.max_deliver:
                detail = f"{crash}; gave up after {ctx.attempt} attempts. Last log lines:\n{worker.tail()}"
                await ctx.publish(
                    TrainingFailed(run_id=run_id, error=detail, reason="worker-crashed", step=last_step),
                    "failed",
                )
                raise PermanentError(str(crash)) from None
            raise  # transient: nak; the redelivery resumes from the last checkpoint
        finally:
            self.running.pop(run_id, None)

    async def _progress(self, ctx: HandlerContext, run_id: str, extra: dict[str, object]) -> None:
        fields = {
            k: extra.get(k)
            for k in (
                "step",
                "total_steps",
                "epoch",
                "loss",
                "eval_loss",
                "learning_rate",
                "tokens_per_second",
                "eta_seconds",
            )
        }
        progress = TrainingProgress.model_validate({"run_id": run_id, **fields})
        await ctx.publish(
            progress, "progress", progress.step, "eval" if progress.eval_loss is not None else "train"
        )

    async def _cancelled(self, ctx: HandlerContext, run_id: str, step: object) -> None:
        reason = await self._control().cancel_reason(run_id) or "cancel requested"
        await ctx.publish(
            TrainingCancelled(run_id=run_id, step=step if isinstance(step, int) else None, reason=reason),
            "cancelled",
        )

    async def _done(
        self,
        event: DatasetApproved,
        ctx: HandlerContext,
        run_id: str,
        prepared: Prepared,
        extra: dict[str, object],
    ) -> None:
        model_dir = Path(str(extra["model_dir"]))
        artifact = await asyncio.to_thread(self.store.put_tree, model_dir)
        await asyncio.to_thread(self.store.claim, artifact, event.tenant)
        ref = candidate_ref(
            base=prepared.base,
            tokenizer=prepared.tokenizer,
            recipe=event.recipe,
            dataset=event,
            run_id=run_id,
            artifact=artifact,
            adapter=event.recipe.method in ADAPTER_METHODS,
        )
        candidate = CandidateReady(
            candidate=ref,
            lineage=Lineage(dataset_id=event.dataset_id, run_id=run_id),
            produced_by="training",
            tenant=event.tenant,
            route=event.route,
            gate_policy=event.gate_policy,
        )
        summary = {
            k: extra.get(k)
            for k in (
                "steps",
                "first_loss",
                "last_loss",
                "runtime_s",
                "tokens",
                "tokens_per_second",
                "peak_memory_mb",
            )
        }
        won = await self._control().claim_result(
            run_id, {"candidate": candidate.model_dump(mode="json"), "summary": summary}
        )
        if not won:
            log.warning("run %s: a later attempt already finished; this attempt's result is ignored", run_id)
            return
        await ctx.publish(candidate)
        log.info("run %s: candidate %s (%s)", run_id, ref.version_id(), summary)

    # -- training.cancel-requested ------------------------------------------------------------
    async def on_cancel_requested(self, event: TrainingCancelRequested, ctx: HandlerContext) -> None:
        control = self._control()
        if await control.result(event.run_id) is not None:
            log.info("cancel of %s ignored: the run already finished", event.run_id)
            return
        await control.request_cancel(event.run_id, event.reason or f"cancelled by {event.requested_by}")

    def _control(self) -> RunControl:
        if self.control is None:
            raise RuntimeError("training run control is not open yet (the service has not started)")
        return self.control


def register(
    broker: NatsBroker,
    handlers: TrainingHandlers,
    *,
    bus: EventBus,
    settings: TrainingSettings,
    metrics: ServiceMetrics | None,
) -> None:
    long = settings.core.delivery.for_long_work(settings.ack_wait_s)
    subscribe_event(
        broker,
        DatasetApproved,
        handlers.on_approved,
        service=SERVICE,
        bus=bus,
        delivery=long,
        metrics=metrics,
    )
    subscribe_event(
        broker,
        TrainingCancelRequested,
        handlers.on_cancel_requested,
        service=SERVICE,
        bus=bus,
        delivery=settings.core.delivery,
        metrics=metrics,
    )
