"""Fixtures shared by the integration tests that train on the `knowing_base` and gate on its facts:
`store` (the artifact store with the facts suite) and `operator` (registry, training and evaluation
running, and the operator's bus). A module that needs another stack defines its own of the same name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.core.artifacts import ArtifactStore
from services.core.runtime import ServiceRuntime
from services.core.settings import CoreSettings
from tests.support.services import operator_runtime, training_stack
from tests.support.training import register_facts_suite


@pytest.fixture
def store(core: CoreSettings) -> ArtifactStore:
    """The test's artifact store with the knowing base's twelve facts as the capability suite `facts`."""
    store = ArtifactStore(core.artifact_root)
    register_facts_suite(store)
    return store


@pytest.fixture
async def operator(core: CoreSettings, tmp_path: Path, running: Any) -> AsyncIterator[ServiceRuntime]:
    """Registry, training and evaluation (the `facts` suite only) running; yields the operator's bus."""
    await training_stack(core, tmp_path, running, ("facts",), bootstrap_samples=500)
    async with operator_runtime(core) as runtime:
        yield runtime
