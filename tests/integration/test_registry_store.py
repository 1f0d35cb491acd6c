"""Registry store on SQLite and on a real PostgreSQL: record once, projections, migrations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from schemas.dataset import DatasetApproved
from schemas.envelope import Envelope, derived_event_id, now
from schemas.events import Event
from schemas.training import TrainingProgress
from services.core.artifacts import ArtifactStore
from services.registry.database import create_registry_engine, migrate
from services.registry.store import DUPLICATE, DeadLetter, RegistryStore
from services.registry.tables import Base
from services.registry.views import NotFound
from tests.support.events import candidate, submitted
from tests.support.training import approved, recipe

pytestmark = pytest.mark.integration


@pytest.fixture
def store(database_url: str) -> RegistryStore:
    engine = create_registry_engine(database_url)
    migrate(engine)
    return RegistryStore(engine)


def envelope_for(event: Event, correlation: str = "c1", seconds: float = 0, **kw: object) -> Envelope:
    return Envelope(
        id=str(kw.get("id", derived_event_id(correlation, event.ce_type(), event.entity_id(), seconds))),
        source="tuneline/test",
        type=event.ce_type(),
        time=now() + timedelta(seconds=seconds),
        subject=event.entity_id(),
        correlation_id=correlation,
        tenant="acme",
    )


def test_migrations_create_exactly_the_model_schema(database_url: str) -> None:
    engine = create_registry_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        assert set(inspect(connection).get_table_names()) >= set(Base.metadata.tables)


def test_event_is_recorded_once(store: RegistryStore) -> None:
    event = submitted()
    env = envelope_for(event)
    assert store.record(event, env) == "projected"
    assert store.record(event, env) == DUPLICATE
    assert store.count_events() == 1


def test_concurrent_duplicates_record_one_row(store: RegistryStore) -> None:
    event = submitted()
    env = envelope_for(event)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: store.record(event, env), range(8)))
    assert outcomes.count("projected") == 1
    assert store.count_events() == 1


def test_timeline_is_ordered_by_event_time(store: RegistryStore) -> None:
    later = TrainingProgress(run_id="r1", step=5, total_steps=10, epoch=0.5, loss=1.0)
    earlier = submitted()
    store.record(later, envelope_for(later, seconds=10))
    store.record(earlier, envelope_for(earlier, seconds=0))
    store.record(submitted(9), envelope_for(submitted(9), correlation="other"))
    timeline = store.timeline("c1")
    assert [e.type for e in timeline.entries] == [
        "tuneline.dataset.submitted.v1",
        "tuneline.training.progress.v1",
    ]
    assert [e.position for e in timeline.entries] == [1, 2]
    assert "step=5" in timeline.entries[1].summary


def test_candidate_ready_projects_a_model_version_with_its_tuple(store: RegistryStore) -> None:
    ready = candidate("a")
    store.record(ready, envelope_for(ready))
    [version] = store.list_versions(tenant="acme")
    assert version.version_id == ready.candidate.version_id()
    assert version.base_sha256 == ready.candidate.base.sha256
    assert version.adapter_sha256 == ready.candidate.adapter.artifact.sha256  # type: ignore[union-attr]
    assert version.status == "candidate" and version.method == "sft-lora"
    detail = store.get_version(version.version_id)
    assert detail.model_ref == ready.candidate.model_dump(mode="json")
    assert store.list_versions(tenant="other") == ()


def test_first_candidate_of_a_run_wins(store: RegistryStore) -> None:
    first, late = candidate("a", run_id="run-7"), candidate("b", run_id="run-7")
    assert store.record(first, envelope_for(first)) == "projected"
    assert store.record(late, envelope_for(late, seconds=1)) == "superseded"
    assert [v.version_id for v in store.list_versions()] == [first.candidate.version_id()]
    assert store.count_events() == 2  # the late one is still in the audit log


def test_unknown_version_is_not_found(store: RegistryStore) -> None:
    with pytest.raises(NotFound, match="mv-missing"):
        store.get_version("mv-missing")


def test_dead_letters_are_recorded_once(store: RegistryStore) -> None:
    letter = DeadLetter(
        original_subject="tuneline.events.dataset.submitted",
        service="curation",
        kind="invalid-payload",
        reason="task: Field required",
        headers={"ce-id": "x"},
        body=b"{}",
        dlq_stream_seq=4,
    )
    assert store.record_dead_letter(letter) is True
    assert store.record_dead_letter(letter) is False
    [row] = store.dead_letters()
    assert row["reason"] == "task: Field required" and row["ce_id"] == "x"


def test_the_last_approved_dataset_of_a_route_is_what_a_retrain_resubmits(
    store: RegistryStore, tmp_path: Path
) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    older = approved(artifacts, recipe("sft-lora"), route="support", seed=1)
    newer = approved(artifacts, recipe("sft-lora"), route="support", seed=2)
    elsewhere = approved(artifacts, recipe("sft-lora"), route="billing", seed=3)
    for n, event in enumerate((older, newer, elsewhere)):
        store.record(event, envelope_for(event, correlation=f"c{n}", seconds=n))
    found = store.approved_dataset("support", "acme")
    assert found.approved["dataset_id"] == newer.dataset_id and found.correlation_id == "c1"
    assert DatasetApproved.model_validate(found.approved) == newer, "the payload as it was approved"
    with pytest.raises(NotFound, match="no approved dataset"):
        store.approved_dataset("support", "other-tenant")
    with pytest.raises(NotFound, match="tuneline datasets submit"):
        store.approved_dataset("nowhere", "acme")
