"""The embedded stack keeps running when one service dies (it is restarted with backoff), stops on a
crash loop, and hands the database credentials to the registry alone. Real processes, real nats-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.core.messaging.nats_server import free_port
from services.core.runtime import build_runtime
from services.core.settings import CoreSettings, NatsSettings
from services.stack import DATABASE_URL_VARIABLE, Stack, StackConfig, StackError, wait_healthy

pytestmark = pytest.mark.integration


def config(tmp_path: Path, **overrides: object) -> StackConfig:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "nats_port": free_port(),
        "serving_port": free_port(),
        "dashboard_port": 0,
        "services": ("registry", "rollout"),
        **overrides,
    }
    return StackConfig(**values)  # type: ignore[arg-type]


def run_until_crash_loop(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.supervise()
        time.sleep(0.1)


async def test_a_killed_service_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    stack = Stack(config(tmp_path, restart_backoff_s=(0.5,)))
    stack.start()
    operator = build_runtime("cli", CoreSettings(nats=NatsSettings(url=stack.nats_url)))
    try:
        await operator.broker.connect()
        await wait_healthy(operator.broker, stack)
        registry_pid = stack.processes["registry"].pid
        killed = stack.kill("rollout")  # kill -9: no shutdown hooks run
        said: list[str] = []
        deadline = time.monotonic() + 20
        while not any("restarted" in line for line in said) and time.monotonic() < deadline:
            said += stack.supervise()
            await asyncio.sleep(0.1)
        assert any("rollout exited with -9" in line and "restarting in 0.5s" in line for line in said), said
        assert stack.processes["rollout"].pid != killed and stack.restarts == {"rollout": 1}
        health = await wait_healthy(operator.broker, stack)
        assert health["rollout"]["pid"] == stack.processes["rollout"].pid
        assert health["registry"]["pid"] == registry_pid  # untouched
    finally:
        await operator.broker.stop()
        stack.stop()


def test_a_service_that_keeps_dying_is_a_crash_loop_that_stops_the_stack(tmp_path: Path) -> None:
    broken = {"TUNELINE_ROLLOUT_POLICY": "not json"}  # rollout exits at once, every time
    stack = Stack(
        config(tmp_path, services=("rollout",), env=broken, restart_backoff_s=(0.1,), max_crashes=2)
    )
    stack.start()
    try:
        with pytest.raises(StackError, match="rollout died 3 times within 300s") as stopped:
            run_until_crash_loop(stack, timeout=60)
        assert "crash loop" in str(stopped.value) and stack.restarts == {"rollout": 2}
    finally:
        stack.stop()


def test_the_database_url_reaches_the_registry_alone_and_is_printed_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://tuneline:s3cret-pw@db.internal/tuneline"
    monkeypatch.setenv(DATABASE_URL_VARIABLE, url)  # as `tuneline up` reads it from the environment
    stack = Stack(config(tmp_path, database_url=url))
    assert stack.env_for("registry")[DATABASE_URL_VARIABLE] == url
    for name in ("curation", "training", "merging", "evaluation", "rollout", "serving"):
        env = stack.env_for(name)
        assert DATABASE_URL_VARIABLE not in env and not any("s3cret-pw" in v for v in env.values()), name
    assert stack.config.masked_database_url() == "postgresql+psycopg://tuneline:***@db.internal/tuneline"


def test_a_stack_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path) -> None:
    """A CI runner's timeout or the OOM killer sends -9: no shutdown hook runs, yet nats-server
    and the services must not live on (they did, and slowed every test after them)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from services.stack import Stack, StackConfig\n"
        f"stack = Stack(StackConfig(data_dir=Path({str(tmp_path / 'data')!r}), nats_port={free_port()}, "
        f"serving_port={free_port()}, dashboard_port=0, services=('registry',)))\n"
        "stack.start()\n"
        "print(json.dumps([stack.nats.process.pid, *(p.pid for p in stack.processes.values())]), "
        "flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    children = json.loads(parent.stdout.readline())
    assert len(children) == 2 and all(Path(f"/proc/{pid}").exists() for pid in children)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "children outlived their SIGKILLed parent"
