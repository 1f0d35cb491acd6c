"""Runs one training worker subprocess and turns its output into messages, with cancel and kill."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from services.training.job import FINAL, TrainingJob, WorkerMessage, parse

log = logging.getLogger(__name__)


class WorkerCrashed(Exception):
    """The worker ended without a final message (killed, out of memory, interpreter crash)."""


class WorkerRun:
    def __init__(self, job: TrainingJob, *, python: str, work: Path) -> None:
        self.job = job
        self.python = python
        self.work = work
        self.process: asyncio.subprocess.Process | None = None
        self.stop_requested = False

    @property
    def log_path(self) -> Path:
        return self.work / "worker.log"

    async def _spawn(self) -> asyncio.StreamReader:
        """The worker process on this run's job file; its stdout carries the protocol."""
        job_file = self.work / "job.json"
        job_file.write_text(self.job.model_dump_json())
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                self.python, "-m", "services.training.worker", str(job_file),
                stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
            )  # fmt: skip
        assert self.process.stdout is not None
        return self.process.stdout

    def _read(self, line: bytes) -> WorkerMessage | None:
        message = parse(line.decode("utf-8", "replace"))
        if message is None:
            log.warning("run %s: unreadable worker line %r", self.job.run_id, line[:200])
        return message

    async def messages(
        self, *, poll_s: float, should_stop: Callable[[], Awaitable[bool]], grace_s: float
    ) -> AsyncIterator[WorkerMessage]:
        """Yield the worker's messages until its final one; raise WorkerCrashed if there is none.
        Every `poll_s` it asks `should_stop`; a yes stops the worker (SIGTERM, then SIGKILL)."""
        stdout = await self._spawn()
        final = False
        killer: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        try:
            while not final:
                try:
                    line: bytes | None = await asyncio.wait_for(stdout.readline(), timeout=poll_s)
                except TimeoutError:
                    line = None
                if not self.stop_requested and loop.time() >= next_check:
                    next_check = loop.time() + poll_s
                    if await should_stop():
                        self.stop_requested = True
                        killer = asyncio.create_task(self._stop(grace_s))
                if line == b"":
                    break  # the worker closed its stdout: it has exited
                message = self._read(line) if line is not None else None
                if message is not None:
                    final = isinstance(message, FINAL)
                    yield message
        finally:
            if killer is not None:
                killer.cancel()
            await self._reap()
        if not final:
            returncode = self.process.returncode if self.process else None
            raise WorkerCrashed(
                f"training worker for {self.job.run_id} exited with {returncode} before finishing; "
                f"its log: {self.log_path}"
            )

    async def _stop(self, grace_s: float) -> None:
        """SIGTERM (stop at the next step), then SIGKILL if it takes longer than the grace period."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _reap(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), timeout=5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
