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
from schemas.checkpoints import CheckpointChoice, CheckpointScreenRequest, ScreenCandidate
from schemas.dataset import DatasetApproved
from schemas.envelope import Envelope
from schemas.queries import CHECKPOINTS_SCREEN
from schemas.refs import ArtifactRef, Lineage, ModelRef
from schemas.training import (
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingFailed,
    TrainingProgress,
    TrainingStarted,
)
from services.core.artifacts import ArtifactStore
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext, PermanentError, subscribe_event
from services.core.messaging.rpc import RpcError, ask
from services.core.prometheus import ServiceMetrics
from services.training import preflight, selection
from services.training.config import TrainingSettings
from services.training.control import RunControl
from services.training.job import ADAPTER_METHODS, Cancelled, Checkpoint, Done, Failed, Progress
from services.training.model_ref import candidate_ref, recipe_sha256
from services.training.preparation import Prepared, prepare
from services.training.runner import WorkerCrashed, WorkerRun

SERVICE = "training"
log = logging.getLogger(__name__)


def run_id_for(event: DatasetApproved, envelope: Envelope) -> str:
    """One run per dataset.approved event: redeliveries of it map to the same run."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"tuneline/training/{envelope.id}").hex
    return f"run-{event.dataset_id[:8]}-{digest[:8]}"


@dataclass
class _Run:
    """One attempt of a run while its worker reports."""

    event: DatasetApproved
    ctx: HandlerContext
    run_id: str
    prepared: Prepared
    worker: WorkerRun
    last_step: int | None


class ProgressThrottle:
    """At most one progress event per interval; evaluations and the last step always pass."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = float("-inf")

    def allow(self, message: Progress) -> bool:
        now = time.monotonic()
        final = message.step == message.total_steps
        if message.eval_loss is not None or final or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


class TrainingHandlers:
    def __init__(
        self, settings: TrainingSettings, store: ArtifactStore, broker: NatsBroker | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker  # asks evaluation to screen checkpoints (recipe checkpoint_selection)
        self.control: RunControl | None = None  # opened at startup (a NATS KV bucket)
        self.running: dict[str, WorkerRun] = {}

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
            prepared = await asyncio.to_thread(prepare, event, run_id, work, self.settings, self.store)
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
        run = _Run(event, ctx, run_id, prepared, worker, prepared.resume_step)
        try:
            await self._follow(run)
        except WorkerCrashed as crash:
            await self._crashed(run, crash)
        finally:
            self.running.pop(run_id, None)

    async def _follow(self, run: _Run) -> None:
        """The worker's messages, each turned into its event, until the final one."""
        throttle = ProgressThrottle(self.settings.progress_interval_s)
        control = self._control()

        async def cancel_requested() -> bool:
            return await control.cancel_reason(run.run_id) is not None

        async for message in run.worker.messages(
            poll_s=self.settings.cancel_poll_s,
            should_stop=cancel_requested,
            grace_s=self.settings.stop_grace_s,
        ):
            match message:
                case Progress():
                    run.last_step = message.step
                    if throttle.allow(message):
                        await self._progress(run.ctx, run.run_id, message)
                case Checkpoint():
                    log.info("run %s: checkpoint at step %s", run.run_id, message.step)
                case Done():
                    await self._done(run, message)
                case Cancelled():
                    await self._cancelled(run.ctx, run.run_id, message.step or run.last_step)
                case Failed():
                    detail = f"{message.message}; worker log: {run.worker.log_path}"
                    await self._failed(run, message.reason, detail)

    async def _crashed(self, run: _Run, crash: WorkerCrashed) -> None:
        """A worker that died without a final message: cancelled, retried, or failed for good."""
        if run.worker.stop_requested:
            await self._cancelled(run.ctx, run.run_id, run.last_step)
            return
        attempt = run.ctx.attempt
        if attempt < self.settings.core.delivery.max_deliver:
            raise crash  # transient: nak; the redelivery resumes from the last checkpoint
        detail = f"{crash}; gave up after {attempt} attempts. Last log lines:\n{run.worker.tail()}"
        await run.ctx.publish(
            TrainingFailed(run_id=run.run_id, error=detail, reason="worker-crashed", step=run.last_step),
            "failed",
        )
        raise PermanentError(str(crash)) from None

    async def _progress(self, ctx: HandlerContext, run_id: str, message: Progress) -> None:
        progress = TrainingProgress.model_validate({"run_id": run_id, **message.model_dump(exclude={"kind"})})
        await ctx.publish(
            progress, "progress", progress.step, "eval" if progress.eval_loss is not None else "train"
        )

    async def _cancelled(self, ctx: HandlerContext, run_id: str, step: int | None) -> None:
        reason = await self._control().cancel_reason(run_id) or "cancel requested"
        await ctx.publish(TrainingCancelled(run_id=run_id, step=step, reason=reason), "cancelled")

    def _ref(self, run: _Run, artifact: ArtifactRef) -> ModelRef:
        return candidate_ref(
            base=run.prepared.base,
            tokenizer=run.prepared.tokenizer,
            recipe=run.event.recipe,
            dataset=run.event,
            run_id=run.run_id,
            artifact=artifact,
            adapter=run.event.recipe.method in ADAPTER_METHODS,
        )

    async def _done(self, run: _Run, done: Done) -> None:
        event, run_id = run.event, run.run_id
        artifact = await asyncio.to_thread(self.store.put_tree, Path(done.model_dir))
        choice = None
        if event.recipe.checkpoint_selection is not None:
            chosen = await self._choose(run, done, artifact)
            if chosen is None:
                return
            artifact, choice = chosen
        await asyncio.to_thread(self.store.claim, artifact, event.tenant)
        ref = self._ref(run, artifact)
        candidate = CandidateReady(
            candidate=ref,
            lineage=Lineage(dataset_id=event.dataset_id, run_id=run_id),
            produced_by="training",
            tenant=event.tenant,
            route=event.route,
            gate_policy=event.gate_policy,
            checkpoint_choice=choice,
        )
        summary = {**done.summary(), **({"chosen_step": choice.chosen_step} if choice else {})}
        won = await self._control().claim_result(
            run_id, {"candidate": candidate.model_dump(mode="json"), "summary": summary}
        )
        if not won:
            log.warning("run %s: a later attempt already finished; this attempt's result is ignored", run_id)
            return
        await run.ctx.publish(candidate)
        log.info("run %s: candidate %s (%s)", run_id, ref.version_id(), summary)

    async def _choose(
        self, run: _Run, done: Done, final: ArtifactRef
    ) -> tuple[ArtifactRef, CheckpointChoice] | None:
        """Screen every checkpoint of the run (evaluation) and pick one; None: the run failed."""
        recipe = run.event.recipe
        assert recipe.checkpoint_selection is not None
        work = Path(done.model_dir).parent

        def offer() -> list[selection.Offered]:
            history = selection.saved_checkpoints(self.store, run.run_id)
            adapter = recipe.method in ADAPTER_METHODS

            def release(tree: ArtifactRef) -> ArtifactRef:
                return selection.release_tree(
                    self.store, tree, work, adapter=adapter, base_model=recipe.base_model
                )

            return selection.offered(history, done, final, release)

        offers = await asyncio.to_thread(offer)
        request = CheckpointScreenRequest(
            selection=recipe.checkpoint_selection,
            checkpoints=tuple(ScreenCandidate(step=o.step, candidate=self._ref(run, o.tree)) for o in offers),
        )
        try:
            if self.broker is None:
                raise RpcError("training has no broker to ask evaluation with")
            screen = await ask(
                self.broker, CHECKPOINTS_SCREEN, request, timeout=self.settings.screen_timeout_s
            )
        except RpcError as error:
            await self._failed(
                run,
                "checkpoint-screen-failed",
                f"the recipe asks for checkpoint_selection and evaluation could not screen the "
                f"{len(offers)} checkpoints: {error}. Start the evaluation service (or drop "
                "checkpoint_selection) and resubmit; the checkpoints stay in the artifact store",
            )
            return None
        losses = {o.step: o.eval_loss for o in offers}
        rows = tuple(r.model_copy(update={"eval_loss": losses.get(r.step)}) for r in screen.checkpoints)
        chosen = selection.choose(rows)
        log.info("run %s: checkpoint screen\n%s", run.run_id, selection.table(rows))
        if chosen is None:
            await self._failed(
                run,
                "guardrails",
                "no checkpoint passed its guardrail screen (harm = base - checkpoint, points):\n"
                + selection.table(rows),
            )
            return None
        trees = {o.step: o.tree for o in offers}
        choice = CheckpointChoice(
            checkpoints=rows, screened_items=screen.screened_items, chosen_step=chosen.step
        )
        return trees[chosen.step], choice

    async def _failed(self, run: _Run, reason: str, error: str) -> None:
        failed = TrainingFailed(run_id=run.run_id, error=error, reason=reason, step=run.last_step)
        await run.ctx.publish(failed, "failed")

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
