"""The embedded stack: nats-server, registry (SQLite), artifact store and every service, one tree."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from pydantic import SecretStr

from services.core.messaging.nats_server import EmbeddedNats, NatsServerError, SecureNats, secure_nats
from services.core.messaging.rpc import RpcError, query
from services.core.processes import stop_with_parent
from services.core.security.pki import write_secret
from services.core.settings import NatsSettings

# In start order. A service exists when its package has a __main__; later issues add theirs.
KNOWN_SERVICES = (
    "registry",
    "curation",
    "training",
    "merging",
    "evaluation",
    "rollout",
    "serving",
)


def available_services() -> list[str]:
    return [
        name
        for name in KNOWN_SERVICES
        if importlib.util.find_spec(f"services.{name}") is not None
        and importlib.util.find_spec(f"services.{name}.__main__") is not None
    ]


class StackError(RuntimeError):
    pass


DATABASE_URL_VARIABLE = "TUNELINE_REGISTRY_DATABASE_URL"
DASHBOARD_KEYS_VARIABLE = "TUNELINE_REGISTRY_DASHBOARD_KEYS"


def masked_url(url: str) -> str:
    """`url` with any password hidden: postgresql://user:***@host/db."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL hidden)"


@dataclass
class StackConfig:
    data_dir: Path = Path(".tuneline")
    nats_url: str | None = None  # None: start the embedded nats-server
    nats_port: int = 4222
    database_url: str | None = None  # None: SQLite in data_dir
    artifact_root: str | None = None  # None: data_dir/artifacts
    log_level: str = "INFO"
    serving_port: int = 8000
    dashboard_port: int = 8090  # the registry's read-only dashboard; 0: off
    services: tuple[str, ...] | None = None  # None: every available service
    secure: bool = False  # TLS and one NATS user per service (infra/nats), embedded server only
    tenants: tuple[str, ...] = ()  # with secure: an `operator-<tenant>` NATS user for each
    env: dict[str, str] = field(default_factory=dict)
    # a service that dies is restarted after these delays (the last repeats); more than
    # `max_crashes` deaths within `crash_window_s` is a crash loop, which stops the stack
    restart_backoff_s: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
    max_crashes: int = 5
    crash_window_s: float = 300.0

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    def masked_database_url(self) -> str:
        """The database URL with its password replaced by ***, for anything printed or logged."""
        return masked_url(self.resolved_database_url())

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str((self.data_dir / "artifacts").resolve())


class Stack:
    """Starts and stops the process tree; `stop` is idempotent and kills what will not stop."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.nats: EmbeddedNats | None = None
        self.secure: SecureNats | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.nats_url = config.nats_url or ""
        self.crashes: dict[str, list[float]] = {}  # when each service was found dead, recent first
        self.restart_due: dict[str, float] = {}  # service → monotonic time of its scheduled restart
        self.restarts: dict[str, int] = {}

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TUNELINE_NATS_URL": self.nats_url,
                "TUNELINE_ARTIFACT_ROOT": self.config.resolved_artifact_root(),
                "TUNELINE_LOG_LEVEL": self.config.log_level,
                "HF_HUB_OFFLINE": "1",
                "TUNELINE_CURATION_WORK_DIR": str((self.config.data_dir / "work" / "curation").resolve()),
                "TUNELINE_TRAINING_WORK_DIR": str((self.config.data_dir / "work" / "training").resolve()),
                "TUNELINE_EVALUATION_WORK_DIR": str((self.config.data_dir / "work" / "evaluation").resolve()),
                "TUNELINE_MERGING_WORK_DIR": str((self.config.data_dir / "work" / "merging").resolve()),
                "TUNELINE_SERVING_WORK_DIR": str((self.config.data_dir / "work" / "serving").resolve()),
                "TUNELINE_SERVING_PORT": str(self.config.serving_port),
                # the embedded stack serves on loopback for one person; deployments set API keys
                "TUNELINE_SERVING_ALLOW_ANONYMOUS": "true",
                "TUNELINE_REGISTRY_HTTP_PORT": str(self.config.dashboard_port),
            }
        )
        env.update(self.config.env)
        return env

    def env_for(self, name: str) -> dict[str, str]:
        """One service's environment: with --secure, its own NATS user; only the registry manages
        the streams' limits (the others may only create a missing stream)."""
        env = self.service_env()
        # the database credentials reach the registry alone (it owns the database; serving, say,
        # has no business holding them), also when the caller's own environment carries them
        env.pop(DATABASE_URL_VARIABLE, None)
        env.pop(DASHBOARD_KEYS_VARIABLE, None)
        if name == "registry":
            env[DATABASE_URL_VARIABLE] = self.config.resolved_database_url()
            if self.config.dashboard_port:
                keys = self.config.env.get(DASHBOARD_KEYS_VARIABLE) or os.environ.get(DASHBOARD_KEYS_VARIABLE)
                env[DASHBOARD_KEYS_VARIABLE] = keys or json.dumps({self.dashboard_key(): "*"})
        if self.secure is not None:
            env.update(self.secure.client_env(name))
            env["TUNELINE_STREAM_MANAGE"] = "true" if name == "registry" else "false"
        return env

    def nats_settings(self, user: str = "operator") -> NatsSettings:
        """How an in-process client reaches this stack's NATS as `user` (the operator by default)."""
        if self.secure is None:
            return NatsSettings(url=self.nats_url)
        return NatsSettings(
            url=self.nats_url,
            user=user,
            password=SecretStr(self.secure.passwords[user]),
            tls_ca_file=self.secure.tls.ca_file,
        )

    def client_env(self, user: str = "operator") -> dict[str, str]:
        """What the CLI needs to reach this stack's NATS as `user`."""
        if self.secure is not None:
            return self.secure.client_env(user)
        return {"TUNELINE_NATS_URL": self.nats_url}

    def start(self) -> None:
        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "logs").mkdir(exist_ok=True)
        Path(self.config.resolved_artifact_root()).mkdir(parents=True, exist_ok=True)
        if self.config.secure and self.config.nats_url is not None:
            raise StackError("--secure starts its own nats-server; leave out --nats-url")
        if self.config.tenants and not self.config.secure:
            raise StackError("--tenant makes a NATS user per tenant: it needs --secure")
        if self.config.nats_url is None:
            if self.config.secure:
                self.secure = secure_nats(
                    data_dir / "nats", port=self.config.nats_port, tenants=self.config.tenants
                )
                self.nats = self.secure.server
                for user in ["operator", *(f"operator-{tenant}" for tenant in self.config.tenants)]:
                    lines = (f"export {k}={v}\n" for k, v in self.client_env(user).items())
                    write_secret(data_dir / "nats" / "secrets" / f"{user}.env", "".join(lines))
            else:
                self.nats = EmbeddedNats(data_dir / "nats", port=self.config.nats_port)
            try:
                self.nats.start()
            except NatsServerError as error:
                raise StackError(
                    f"could not start nats-server on port {self.config.nats_port}: {error}\n"
                    "Is another `tuneline up` running? Use --nats-port or --nats-url."
                ) from error
            self.nats_url = self.nats.url
        names = self.config.services or tuple(available_services())
        for name in names:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        log = open(self.config.data_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (child owns it)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=self.env_for(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
            preexec_fn=stop_with_parent,  # killed with -9, we still take the services with us
        )
        log.close()

    def kill(self, name: str) -> int:
        """SIGKILL one service (no shutdown hooks run: a crash); returns its pid."""
        proc = self.processes[name]
        proc.kill()
        proc.wait()
        return proc.pid

    def restart(self, name: str) -> None:
        """Start a service again with the same environment (after `kill` or a crash)."""
        if self.processes[name].poll() is None:
            raise StackError(f"{name} is still running; kill or stop it first")
        self._spawn(name)

    def dashboard_key(self) -> str:
        """This stack's admin key for the dashboard, made once and kept 0600 in the data dir."""
        path = self.config.data_dir / "secrets" / "dashboard-key"
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_secret(path, "dk-" + secrets.token_urlsafe(24))
        return path.read_text().strip()

    def dashboard_url(self) -> str:
        """The dashboard's address with the admin key (the page trades it for a cookie)."""
        return f"http://127.0.0.1:{self.config.dashboard_port}/?key={self.dashboard_key()}"

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart dead services with backoff; returns what it did, one line each.

        One service dying must not take the stack down (a kill -9 of training stopped serving with
        it). A service that keeps dying is a crash loop: `StackError`, and the caller stops.
        """
        now = time.monotonic() if now is None else now
        said: list[str] = []
        for name, code in self.dead_services().items():
            due = self.restart_due.get(name)
            if due is not None:
                if now >= due:
                    del self.restart_due[name]
                    self._spawn(name)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    said.append(f"{name} restarted (pid {self.processes[name].pid})")
                continue
            recent = [t for t in self.crashes.get(name, []) if now - t < self.config.crash_window_s]
            self.crashes[name] = [*recent, now]
            deaths = len(self.crashes[name])
            if deaths > self.config.max_crashes:
                raise StackError(
                    f"{name} died {deaths} times within {self.config.crash_window_s:.0f}s (exit code "
                    f"{code}): a crash loop, so the stack stops. Its log ends:\n{self.log_tail(name)}"
                )
            backoff = self.config.restart_backoff_s
            delay = backoff[min(deaths - 1, len(backoff) - 1)] if backoff else 0.0
            self.restart_due[name] = now + delay
            said.append(
                f"{name} exited with {code} (death {deaths} of at most {self.config.max_crashes} in "
                f"{self.config.crash_window_s:.0f}s); restarting in {delay:g}s. Its log ends:\n"
                f"{self.log_tail(name, 8)}"
            )
        return said

    def dead_services(self) -> dict[str, int]:
        return {name: code for name, proc in self.processes.items() if (code := proc.poll()) is not None}

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.config.data_dir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.nats is not None:
            self.nats.stop()


async def wait_healthy(broker: NatsBroker, stack: Stack, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Poll every started service's health query until all answer; fail fast if one dies."""
    names = list(stack.processes)
    healthy: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(healthy) < len(names):
        if dead := stack.dead_services():
            name, code = next(iter(dead.items()))
            raise StackError(f"{name} exited with {code} while starting:\n{stack.log_tail(name)}")
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(healthy))
            raise StackError(f"services not healthy after {timeout}s: {', '.join(missing)}")
        for name in names:
            if name not in healthy:
                with contextlib.suppress(RpcError):
                    healthy[name] = await query(broker, name, "health", {}, timeout=0.5)
        await asyncio.sleep(0.2)
    return healthy
