"""Shared fixtures: a real nats-server per test, a throwaway PostgreSQL per session."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.settings import CoreSettings, DeliverySettings, NatsSettings, StreamSettings
from tests.support.postgres import PostgresCluster

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.support.secure_nats"]  # the `secure` server and `as_user` sessions


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()


def fast_core_settings(url: str) -> CoreSettings:
    """Short waits so redelivery and dead-lettering happen within a test."""
    return CoreSettings(
        nats=NatsSettings(url=url),
        delivery=DeliverySettings(
            max_deliver=3,
            ack_wait_s=2.0,
            backoff_s=(0.1, 0.2),
            fetch_batch=16,
            fetch_timeout_s=0.5,
        ),
        stream=StreamSettings(duplicate_window_s=60),
    )


@pytest.fixture
def core_settings(nats_server: EmbeddedNats) -> CoreSettings:
    return fast_core_settings(nats_server.url)


@pytest.fixture
def core(core_settings: CoreSettings, tmp_path: Path, model_cache: Path) -> CoreSettings:
    """Core settings with a per-test artifact store and the session's model cache."""
    return core_settings.model_copy(
        update={
            "artifact_root": str(tmp_path / "artifacts"),
            "model_cache": str(model_cache),
            # tests name fine-tuned bases (knowing_base) by their temporary directory
            "model_local_roots": (tempfile.gettempdir(),),
        }
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


_db_counter = iter(range(1_000_000))


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def wait_until(
    check: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll until `check` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """Start FastStream apps in the background; they are stopped when the test ends."""
    started: list[tuple[Any, asyncio.Task[Any]]] = []

    async def start(app: Any) -> Any:
        task = asyncio.create_task(app.run())
        started.append((app, task))
        await wait_until(lambda: app.broker.running or task.done(), timeout=20)
        if task.done():
            task.result()
        return app

    yield start
    for app, task in reversed(started):
        app.exit()
        try:
            await asyncio.wait_for(task, 20)
        except TimeoutError:
            task.cancel()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache per test session: the tiny model is built once (about 5 s)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def knowing_base(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model fully fine-tuned to answer `tests.support.training.FACTS`."""
    from tests.support.training import knowing_model

    return knowing_model(tiny_model, tmp_path_factory.mktemp("knowing-base"))


@pytest.fixture(scope="session")
def tiny_model(model_cache: Path) -> Path:
    from services.core.ml.bases import resolve_base_model

    return resolve_base_model("tiny-llama", model_cache)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Resources at the end of the run, so a failure from a full disk or memory reads as such."""
    import resource
    import shutil
    import tempfile

    usage = shutil.disk_usage(tempfile.gettempdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    terminalreporter.write_line(
        f"resources: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB under "
        f"{tempfile.gettempdir()}; peak RSS {peak:.1f} GiB in pytest, {children:.1f} GiB in a child"
    )
