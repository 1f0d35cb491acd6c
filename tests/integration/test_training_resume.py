"""A training service killed mid-run (kill -9, real processes): the redelivery resumes from the
last checkpoint and the run still announces exactly one candidate."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.artifacts import ArtifactStore
from services.core.messaging.nats_server import EmbeddedNats
from services.core.messaging.rpc import RpcError, query
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings
from tests.conftest import fast_core_settings, wait_until
from tests.support.stream import stored_events
from tests.support.training import approved, recipe

pytestmark = pytest.mark.integration


def workers_of(work_dir: Path) -> list[int]:
    """Pids of training workers whose job lives under `work_dir`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "services.training.worker" in cmdline and str(work_dir) in cmdline:
            pids.append(int(entry.name))
    return pids


class TrainingProcess:
    def __init__(self, core: CoreSettings, work: Path, log: Path) -> None:
        self.env = {
            **os.environ,
            "TUNELINE_NATS_URL": core.nats.url,
            "TUNELINE_ARTIFACT_ROOT": core.artifact_root,
            "TUNELINE_MODEL_CACHE": core.model_cache,
            "TUNELINE_TRAINING_WORK_DIR": str(work),
            "TUNELINE_TRAINING_DEVICE": "cpu",
            "TUNELINE_TRAINING_ACK_WAIT_S": "3",
            "TUNELINE_TRAINING_PROGRESS_INTERVAL_S": "0",
            "TUNELINE_DELIVERY_FETCH_TIMEOUT_S": "0.5",
            "HF_HUB_OFFLINE": "1",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.training"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def core(nats_server: EmbeddedNats, tmp_path: Path, model_cache: Path, tiny_model: Path) -> CoreSettings:
    return fast_core_settings(nats_server.url).model_copy(
        update={"artifact_root": str(tmp_path / "artifacts"), "model_cache": str(model_cache)}
    )


@pytest.fixture
def service(core: CoreSettings, tmp_path: Path) -> Iterator[TrainingProcess]:
    process = TrainingProcess(core, tmp_path / "work", tmp_path / "training.log")
    yield process
    process.stop()


async def test_killed_training_resumes_from_its_checkpoint_and_emits_one_candidate(
    core: CoreSettings, service: TrainingProcess, tmp_path: Path
) -> None:
    operator = build_runtime("operator", core)
    await operator.broker.start()
    try:
        js = operator.broker.connection.jetstream()
        store = ArtifactStore(core.artifact_root)
        service.start()

        async def healthy() -> bool:
            try:
                return bool(await query(operator.broker, "training", "health", {}, timeout=1))
            except RpcError:
                return False

        await wait_until(healthy, timeout=60)
        await operator.bus.publish(approved(store, recipe("sft-lora", max_steps=150, eval_steps=1000)))

        pointers = await wait_until(lambda: store.list_keys("refs/training"), timeout=90, interval=0.05)
        service.kill()  # mid-run, right after the first checkpoint was uploaded
        killed_at = store.read_named_json(f"{pointers[0]}/checkpoint.json")["step"]
        assert 5 <= killed_at < 150
        # the worker dies with its service instead of training on alone
        await wait_until(lambda: not workers_of(tmp_path / "work"), timeout=10)
        assert await stored_events(js, "candidate.ready") == []

        service.start()
        ready = await wait_until(lambda: stored_events(js, "candidate.ready"), timeout=180, interval=0.5)
        started = [e.payload for e in await stored_events(js, "training.started")]
        assert [s["attempt"] for s in started] == [1, 2]
        assert started[1]["resumed_from_step"] >= killed_at
        assert len(ready) == 1
        assert ready[0].payload["candidate"]["run_id"] == started[0]["run_id"]
        await asyncio.sleep(4)  # past another AckWait: nothing more arrives
        assert len(await stored_events(js, "candidate.ready")) == 1
    finally:
        await operator.broker.stop()
