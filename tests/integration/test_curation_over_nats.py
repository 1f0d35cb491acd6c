"""Curation on a real nats-server with the registry: upload, audit, verdict, manifest, queries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.dataset import DatasetSubmitted, DataSource
from schemas.refs import ArtifactRef
from services.core.artifacts import ArtifactStore
from services.core.messaging import uploads
from services.core.messaging.rpc import query
from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings
from services.curation.app import build_curation
from services.curation.config import CurationSettings
from services.curation.handlers import SourceResolver
from services.curation.sources import SourceError
from services.registry.app import build_registry
from services.registry.config import RegistrySettings
from tests.conftest import wait_until
from tests.support.curation import replay_mix, submission, task_rows, write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(
    core: CoreSettings, tmp_path: Path, running: Any, tiny_model: Path
) -> AsyncIterator[ServiceRuntime]:
    registry = build_registry(RegistrySettings(database_url=f"sqlite:///{tmp_path / 'r.db'}", core=core))
    await running(registry.app)
    await running(build_curation(CurationSettings(core=core, work_dir=str(tmp_path / "work"))).app)
    operator = build_runtime("operator", core)
    await operator.broker.start()
    yield operator
    await operator.broker.stop()


async def submit(operator: ServiceRuntime, path: Path, **kw: Any) -> DatasetSubmitted:
    uri, sha = await uploads.upload(operator.broker.connection.jetstream(), path)
    event = submission(DataSource(uri=uri, sha256=sha), **kw)
    await operator.bus.publish(event)
    return event


async def verdict(operator: ServiceRuntime, submission_id: str) -> dict[str, Any]:
    async def decided() -> dict[str, Any] | None:
        try:
            detail = await query(operator.broker, "registry", "datasets.get", {"id": submission_id})
        except Exception:  # noqa: BLE001  (not recorded yet)
            return None
        return detail if detail["summary"]["status"] != "submitted" else None

    return dict(await wait_until(decided, timeout=60, interval=0.2))


async def test_approved_dataset_has_manifest_splits_and_registry_record(
    stack: ServiceRuntime, core: CoreSettings, tmp_path: Path
) -> None:
    rows = task_rows(40)
    rows[3]["prompt"] += " call me at 555-201-7733"
    src = write_jsonl(tmp_path / "tickets.jsonl", rows)
    before = src.read_bytes()
    event = await submit(stack, src, mix=replay_mix(), submission_id="sub-ok")
    detail = await verdict(stack, event.submission_id)
    assert detail["summary"]["status"] == "approved", detail["findings"]
    assert src.read_bytes() == before

    store = ArtifactStore(core.artifact_root)
    manifest = store.read_json(ArtifactRef.model_validate(detail["manifest"]))
    assert manifest["dataset_id"] == detail["summary"]["dataset_id"]
    assert manifest["pii_counts"] == {"phone": 1}
    assert {c["name"] for c in manifest["mix"]["components"]} == {"task", "general-replay", "safety"}
    assert manifest["tokenizer"]["name"] == "tiny-llama"
    for split in detail["splits"]:
        data = store.read_bytes(ArtifactRef.model_validate(split["artifact"]))  # sha256 verified
        assert len(data.splitlines()) == split["rows"]
    report = store.read_json(ArtifactRef.model_validate(detail["report"]))
    assert report["approved"] and any(f["check"] == "pii" and f["row"] == 4 for f in report["findings"])
    listed = await query(stack.broker, "registry", "datasets.list", {"status": "approved"})
    assert [d["submission_id"] for d in listed["datasets"]] == ["sub-ok"]

    # same data again (a new submission): same dataset id
    again = await submit(stack, src, mix=replay_mix(), submission_id="sub-again")
    assert (await verdict(stack, again.submission_id))["summary"]["dataset_id"] == manifest["dataset_id"]
    by_prefix = await query(stack.broker, "registry", "datasets.get", {"id": manifest["dataset_id"][:10]})
    assert by_prefix["summary"]["dataset_id"] == manifest["dataset_id"]


async def test_rejected_dataset_lists_every_finding_with_rows(stack: ServiceRuntime, tmp_path: Path) -> None:
    rows: list[Any] = task_rows(20)
    rows[1] = {"prompt": "no completion"}
    rows[4] = "not json at all"
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    event = await submit(stack, src, submission_id="sub-bad")
    detail = await verdict(stack, event.submission_id)
    assert detail["summary"]["status"] == "rejected"
    rows_named = {(f.get("row"), f.get("field")) for f in detail["findings"] if f["check"] == "schema"}
    assert {(2, "completion"), (5, None)} <= rows_named
    assert detail["details"]["findings_total"] == len(detail["findings"])


async def test_unknown_base_model_rejects_with_the_reason(stack: ServiceRuntime, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", task_rows(20))
    uri, sha = await uploads.upload(stack.broker.connection.jetstream(), src)
    base = submission(DataSource(uri=uri, sha256=sha), submission_id="sub-nobase")
    event = base.model_copy(update={"recipe": base.recipe.model_copy(update={"base_model": "no-such-model"})})
    await stack.bus.publish(event)
    detail = await verdict(stack, "sub-nobase")
    assert detail["summary"]["status"] == "rejected"
    assert any("no-such-model" in f["message"] for f in detail["findings"])


async def test_uploaded_directory_round_trips_and_tampering_is_refused(
    stack: ServiceRuntime, tmp_path: Path
) -> None:
    from datasets import Dataset

    Dataset.from_list(task_rows(10)).save_to_disk(str(tmp_path / "hf"))
    js = stack.broker.connection.jetstream()
    uri, _ = await uploads.upload(js, tmp_path / "hf")
    fetched = await uploads.download(js, uri, tmp_path / "fetch")
    assert (fetched / "state.json").exists()
    forged = uri.replace(uri[len("upload:") : len("upload:") + 8], "00000000")
    with pytest.raises(uploads.UploadError):
        await uploads.download(js, forged, tmp_path / "fetch2")


def test_local_paths_and_remote_urls_need_an_operator_allowance(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a"))
    allowed = tmp_path / "data"
    allowed.mkdir()
    (allowed / "ok.jsonl").write_text(json.dumps(task_rows(1)[0]) + "\n")
    resolver = SourceResolver(CurationSettings(local_roots=(str(allowed),)), store, tmp_path / "work", "acme")
    assert resolver(DataSource(uri=str(allowed / "ok.jsonl"))) == (allowed / "ok.jsonl").resolve()
    for uri in ("/etc/passwd", str(allowed / ".." / "escape.jsonl"), "s3://someone-elses-bucket/x.jsonl"):
        with pytest.raises(SourceError, match="TUNELINE_CURATION_"):
            resolver(DataSource(uri=uri))
    with pytest.raises(SourceError, match=r"escapes|must be a relative"):
        resolver(DataSource(uri="artifact:../../etc/passwd"))


async def test_a_submission_cannot_name_another_tenants_artifact(
    stack: ServiceRuntime, core: CoreSettings, tmp_path: Path
) -> None:
    """The attack: tenant `other` submits `artifact:<acme's curated split>`. Curation records each
    artifact's owner as it produces it, and refuses the foreign one (a rejection naming the rule)."""
    src = write_jsonl(tmp_path / "tickets.jsonl", task_rows(40))
    event = await submit(stack, src, mix=replay_mix(), submission_id="sub-acme")
    detail = await verdict(stack, event.submission_id)
    assert detail["summary"]["status"] == "approved", detail["findings"]
    split = ArtifactRef.model_validate(detail["splits"][0]["artifact"])
    store = ArtifactStore(core.artifact_root)
    assert store.owners(split.sha256) == {"acme"}

    stolen = DataSource(uri=f"artifact:{split.key}", sha256=split.sha256)
    theirs = submission(stolen, submission_id="sub-other").model_copy(update={"tenant": "other"})
    await stack.bus.publish(theirs)
    rejected = await verdict(stack, "sub-other")
    assert rejected["summary"]["status"] == "rejected"
    assert any("belongs to tenant 'other'" in f["message"] for f in rejected["findings"]), rejected
    # the owner itself may name it: no ownership finding for acme
    await stack.bus.publish(submission(stolen, submission_id="sub-acme-again"))
    again = await verdict(stack, "sub-acme-again")
    assert not any("belongs to tenant" in f["message"] for f in again["findings"]), again["findings"]
