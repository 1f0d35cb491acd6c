"""Curation's subscriber: fetch sources, run the pipeline in a worker thread, publish the verdict."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker

from schemas.dataset import DatasetApproved, DatasetRejected, DatasetSubmitted, DataSource, Finding, SplitInfo
from schemas.slo import RetrainRequested
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.messaging import uploads
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext, subscribe_event
from services.core.ml.bases import resolve_base_model
from services.core.ml.models import ModelResolutionError, load_tokenizer, tokenizer_sha256
from services.core.ml.suite_catalogue import all_suites
from services.core.prometheus import ServiceMetrics
from services.curation.checks.context import Tokenizer
from services.curation.config import CurationSettings
from services.curation.pipeline import (
    FINDINGS_IN_EVENT,
    Curated,
    curate,
    manifest,
    report,
    report_json,
)
from services.curation.retrain import Retrainer
from services.curation.sources import SourceError

SERVICE = "curation"
log = logging.getLogger(__name__)


class SourceResolver:
    """Turns a DataSource URI into a local path, refusing anything the settings do not allow."""

    def __init__(self, settings: CurationSettings, store: ArtifactStore, work: Path, tenant: str) -> None:
        self.settings = settings
        self.store = store
        self.work = work
        self.tenant = tenant  # the submission's: it may name only its own tenant's artifacts
        self.fetched: dict[str, Path | str] = {}  # upload: URIs fetched up front (or their error)

    def __call__(self, source: DataSource) -> Path:
        uri = source.uri
        if uri.startswith(uploads.PREFIX):
            got = self.fetched.get(uri, f"{uri}: was not fetched")
            if isinstance(got, str):
                raise SourceError(got)
            return got
        if uri.startswith("artifact:"):
            return self._artifact(source)
        if "://" in uri and not uri.startswith("file://"):
            return self._remote(uri)
        return self._local(Path(uri.removeprefix("file://")))

    def _artifact(self, source: DataSource) -> Path:
        from schemas.refs import ArtifactRef

        key = source.uri.removeprefix("artifact:")
        digest = source.sha256 or key.rsplit("/", 1)[-1]
        try:
            self.store.path_for(key)  # refuses keys that escape the store before anything else
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise SourceError(
                    f"{source.uri}: give the source's sha256 (or a content-addressed blobs/sha256/… key) "
                    "so its content can be verified"
                )
            ref = ArtifactRef(key=key, sha256=digest, size_bytes=0)
            self.store.require_owner(digest, self.tenant, source.uri)
            return self.store.fetch_file(ref, self.work / "artifacts" / digest)
        except (ArtifactError, ValueError) as error:
            raise SourceError(f"{source.uri}: {error}") from None

    def _remote(self, uri: str) -> Path:
        if not any(uri.startswith(prefix) for prefix in self.settings.remote_prefixes):
            raise SourceError(
                f"{uri}: remote sources must start with one of TUNELINE_CURATION_REMOTE_PREFIXES "
                f"({list(self.settings.remote_prefixes)}); ask an operator to allow the bucket, or use "
                "`tuneline submit` to upload the file"
            )
        import fsspec

        target = self.work / "remote" / Path(uri).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fsspec.open(uri).fs.get(uri, str(target), recursive=True)
        except (OSError, ImportError, ValueError) as error:
            raise SourceError(f"{uri}: cannot fetch it ({error})") from None
        return target

    def _local(self, path: Path) -> Path:
        real = path.expanduser().resolve()
        for root in self.settings.local_roots:
            base = Path(root).expanduser().resolve()
            if real == base or base in real.parents:
                return real
        raise SourceError(
            f"{path}: local paths are only read under TUNELINE_CURATION_LOCAL_ROOTS "
            f"({list(self.settings.local_roots)}); use `tuneline submit {path.name}`, which uploads the file"
        )


class CurationHandlers:
    def __init__(self, settings: CurationSettings, store: ArtifactStore, broker: NatsBroker) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()

    def tokenizer_for(self, base_model: str, tenant: str) -> Tokenizer:
        with self._lock:
            # an artifact base is checked for the tenant every time, not only on its first use
            path = resolve_base_model(
                base_model,
                self.settings.core.model_cache,
                self.store,
                local_roots=self.settings.core.model_local_roots,
                tenant=tenant,
            )
            if base_model not in self._tokenizers:
                self._tokenizers[base_model] = Tokenizer.from_hf(
                    base_model, tokenizer_sha256(path), load_tokenizer(path)
                )
            return self._tokenizers[base_model]

    async def _fetch_uploads(self, event: DatasetSubmitted, resolver: SourceResolver) -> None:
        sources = list(event.sources) + [c.source for c in event.mix.components if c.source is not None]
        js = self.broker.connection.jetstream()
        for source in sources:
            if source.uri.startswith(uploads.PREFIX) and source.uri not in resolver.fetched:
                try:
                    resolver.fetched[source.uri] = await uploads.download(js, source.uri, resolver.work)
                except uploads.UploadError as error:
                    resolver.fetched[source.uri] = str(error)

    def _work_dir(self, submission_id: str) -> Path:
        Path(self.settings.work_dir).mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in submission_id[:40])
        return Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=self.settings.work_dir))

    async def on_submitted(self, event: DatasetSubmitted, ctx: HandlerContext) -> None:
        work = await asyncio.to_thread(self._work_dir, event.submission_id)
        try:
            resolver = SourceResolver(self.settings, self.store, work, event.tenant)
            await self._fetch_uploads(event, resolver)
            tokenizer, tokenizer_error = None, None
            try:
                tokenizer = await asyncio.to_thread(self.tokenizer_for, event.recipe.base_model, event.tenant)
            except (ModelResolutionError, OSError, ValueError) as error:
                tokenizer_error = f"base model {event.recipe.base_model!r}: {error}"
            suites = await asyncio.to_thread(all_suites, self.store)
            result = await asyncio.to_thread(
                curate,
                event,
                resolve=resolver,
                tokenizer=tokenizer,
                suites=suites,
                tokenizer_error=tokenizer_error,
                limits=self.settings.source_limits(),
            )
            outcome = await asyncio.to_thread(self._store, result, event, tokenizer)
            await ctx.publish(outcome)
            log.info(
                "submission %s: %s (%d checks, %d findings)",
                event.submission_id,
                "approved" if result.approved else "rejected",
                len(result.audit.checks),
                len(result.audit.findings),
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _store(
        self, result: Curated, event: DatasetSubmitted, tokenizer: Tokenizer | None
    ) -> DatasetApproved | DatasetRejected:
        findings = result.audit.failed_first()
        report_ref = self.store.put_bytes(report_json(report(result, event)), media_type="application/json")
        self.store.claim(report_ref, event.tenant)
        shown = tuple(findings[:FINDINGS_IN_EVENT])
        if len(findings) > FINDINGS_IN_EVENT:
            more = len(findings) - FINDINGS_IN_EVENT + 1
            note = Finding(check="report", message=f"{more} more findings in the report {report_ref.key}")
            shown = (*shown[:-1], note)
        if not result.approved:
            return DatasetRejected(
                submission_id=event.submission_id,
                tenant=event.tenant,
                task=event.task,
                findings=shown or (Finding(check="audit", message="rejected"),),
                findings_total=len(findings),
                audit=tuple(result.audit.checks),
                report=report_ref,
                sources=tuple(result.sources),
            )
        split_refs: dict[str, Any] = {}
        splits = []
        for name, data in result.splits.items():
            ref = self.store.put_bytes(data, media_type="application/jsonl")
            self.store.claim(ref, event.tenant)
            split_refs[name] = ref.model_dump(mode="json")
            splits.append(SplitInfo(name=name, rows=result.split_rows[name], artifact=ref))
        manifest_value = manifest(result, event, split_refs, tokenizer)
        manifest_value["report"] = report_ref.model_dump(mode="json")
        manifest_ref = self.store.put_json(manifest_value)
        self.store.claim(manifest_ref, event.tenant)
        return DatasetApproved(
            submission_id=event.submission_id,
            dataset_id=result.dataset_id,
            tenant=event.tenant,
            task=event.task,
            route=event.route,
            manifest=manifest_ref,
            splits=tuple(splits),
            audit=tuple(result.audit.checks),
            findings=shown,
            findings_total=len(findings),
            report=report_ref,
            sources=tuple(result.sources),
            mix=tuple(result.mix),
            recipe=event.recipe,
            gate_policy=event.gate_policy,
        )


def register(
    broker: NatsBroker,
    handlers: CurationHandlers,
    *,
    bus: EventBus,
    settings: CurationSettings,
    metrics: ServiceMetrics | None,
) -> None:
    subscribe_event(
        broker,
        DatasetSubmitted,
        handlers.on_submitted,
        service=SERVICE,
        bus=bus,
        delivery=settings.core.delivery,
        metrics=metrics,
    )
    subscribe_event(
        broker,
        RetrainRequested,
        Retrainer(handlers.store, broker).on_retrain,
        service=SERVICE,
        bus=bus,
        delivery=settings.core.delivery,
        metrics=metrics,
    )
