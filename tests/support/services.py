"""Services for integration tests: the registry on SQLite, a quiet evaluation, an operator's bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from faststream import FastStream

from services.core.runtime import ServiceRuntime, build_runtime
from services.core.settings import CoreSettings
from services.evaluation.app import build_evaluation
from services.evaluation.config import EvaluationSettings
from services.registry.app import build_registry
from services.registry.config import RegistrySettings


def registry_app(core: CoreSettings, tmp_path: Path) -> FastStream:
    return build_registry(RegistrySettings(database_url=f"sqlite:///{tmp_path / 'r.db'}", core=core)).app


def evaluation_app(
    core: CoreSettings, tmp_path: Path, suites: tuple[str, ...], **overrides: Any
) -> FastStream:
    """Evaluation on CPU with only the named catalogue suites, no latency probes, no drift schedule."""
    values: dict[str, Any] = {"latency_items": 0, "drift_interval_s": 0, **overrides}
    settings = EvaluationSettings(
        core=core, work_dir=str(tmp_path / "evaluation"), device="cpu", suites=suites, **values
    )
    return build_evaluation(settings).app


@contextlib.asynccontextmanager
async def operator_runtime(core: CoreSettings) -> AsyncIterator[ServiceRuntime]:
    """A connected bus the test publishes and reads with, as an operator would."""
    runtime = build_runtime("operator", core)
    await runtime.broker.start()
    try:
        yield runtime
    finally:
        await runtime.broker.stop()


async def training_stack(
    core: CoreSettings, tmp_path: Path, running: Any, suites: tuple[str, ...], **evaluation: Any
) -> None:
    """The registry, training on CPU and a quiet evaluation (only `suites`), started by the test's
    `running` fixture on its nats-server."""
    from services.training.app import build_training
    from services.training.config import TrainingSettings

    await running(registry_app(core, tmp_path))
    training = TrainingSettings(core=core, work_dir=str(tmp_path / "training"), device="cpu")
    await running(build_training(training).app)
    await running(evaluation_app(core, tmp_path, suites, **evaluation))
