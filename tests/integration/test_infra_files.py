"""infra/compose.yaml, infra/otel/collector.yaml and the Dockerfile, checked without Docker.

There is no Docker engine here, so compose's NATS is started as compose would start it: the same
nats-server.conf and auth.conf, the environment compose gives it, the certificates and passwords
of `tuneline infra secrets`, and every service connects with the environment compose gives it.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from services.core.messaging.nats_server import EmbeddedNats, free_port
from services.core.security.access import ADMIN_USER, inbox_prefix, password_variable, service_access
from services.stack import KNOWN_SERVICES

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::\?[^}]*)?\}")


def secrets(tmp_path: Path) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "infra", "secrets", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,  # ~1 s alone; a CI machine busy with training can starve it for a minute
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())


def substitute(value: str, env: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: env[m.group(1)], value)


def test_compose_runs_every_service_from_the_one_image_as_its_own_nats_user() -> None:
    for service in KNOWN_SERVICES:
        spec = SERVICES[service]
        assert spec["command"] == [service] and spec["build"]["dockerfile"] == "Dockerfile"
        env = spec["environment"]
        assert env["TUNELINE_NATS_USER"] == service
        assert env["TUNELINE_NATS_PASSWORD"].startswith(f"${{{password_variable(service)}:?")
        assert env["TUNELINE_NATS_URL"] == "tls://nats:4222"
        assert env["TUNELINE_STREAM_MANAGE"] == ("true" if service == "registry" else "false")
        assert spec["depends_on"]["nats"] == {"condition": "service_healthy"}
        assert spec["read_only"] is True
    assert SERVICES["registry"]["environment"]["TUNELINE_REGISTRY_DATABASE_URL"].startswith(
        "postgresql+psycopg://"
    )
    # the NATS server is infra/nats as committed, with every user's password
    volumes = SERVICES["nats"]["volumes"]
    assert "./nats/nats-server.conf:/etc/nats/nats-server.conf:ro" in volumes
    assert "./nats/auth.conf:/etc/nats/auth.conf:ro" in volumes
    nats_env = SERVICES["nats"]["environment"]
    assert {password_variable(u) for u in [*service_access(), ADMIN_USER]} <= set(nats_env)


def test_every_variable_compose_needs_is_made_by_infra_secrets(tmp_path: Path) -> None:
    env = secrets(tmp_path)
    needed = set(VARIABLE.findall((INFRA / "compose.yaml").read_text()))
    assert needed and needed <= set(env), needed - set(env)
    again = secrets(tmp_path)  # a second run keeps what the first made
    assert again == env
    operator = dict(line.split("=", 1) for line in (tmp_path / ".env.operator").read_text().splitlines())
    assert operator["TUNELINE_NATS_USER"] == "operator"
    assert operator["TUNELINE_NATS_PASSWORD"] == env[password_variable("operator")]


async def test_composes_nats_accepts_each_service_with_the_environment_compose_gives_it(
    tmp_path: Path,
) -> None:
    env = secrets(tmp_path)
    tls = tmp_path / "tls"
    # compose mounts ./nats and ./tls at /etc/nats; here the same files stay where they are
    server_env = {k: substitute(str(v), env) for k, v in SERVICES["nats"]["environment"].items()}
    server_env |= {
        "TUNELINE_NATS_STORE_DIR": str(tmp_path / "jetstream"),
        "TUNELINE_NATS_TLS_CERT": str(tls / "server.pem"),
        "TUNELINE_NATS_TLS_KEY": str(tls / "server-key.pem"),
        "TUNELINE_NATS_TLS_CA": str(tls / "ca.pem"),
    }
    server = EmbeddedNats(
        tmp_path, port=free_port(), config=INFRA / "nats" / "nats-server.conf", env=server_env, tls=True
    )
    with server:
        context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        for service in KNOWN_SERVICES:
            service_env = SERVICES[service]["environment"]
            client = await nats.connect(
                server.url,
                user=service_env["TUNELINE_NATS_USER"],
                password=substitute(service_env["TUNELINE_NATS_PASSWORD"], env),
                tls=context,
                inbox_prefix=inbox_prefix(service),
                allow_reconnect=False,
            )
            info = await client.jetstream().account_info()
            assert info.limits is not None  # JetStream answers this user
            await client.close()
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                server.url, user="training", password="wrong", tls=context, allow_reconnect=False
            )


def components(pipeline_part: list[str], defined: dict[str, Any]) -> None:
    missing = [name for name in pipeline_part if name not in defined]
    assert missing == [], missing


def test_the_collector_pipelines_use_defined_components_and_reach_every_service() -> None:
    config = yaml.safe_load((INFRA / "otel" / "collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        components(pipeline["receivers"], config["receivers"])
        components(pipeline["processors"], config["processors"])
        components(pipeline["exporters"], config["exporters"])
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    components(config["service"]["extensions"], config["extensions"])
    # the services send to its OTLP/HTTP port, and it scrapes their metrics port
    common = SERVICES["registry"]["environment"]
    otlp_port = common["TUNELINE_OTLP_ENDPOINT"].rsplit(":", 1)[1]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{otlp_port}")
    [job] = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    targets = set(job["static_configs"][0]["targets"])
    assert targets == {f"{s}:{common['TUNELINE_METRICS_PORT']}" for s in KNOWN_SERVICES}


def test_the_image_runs_the_service_named_by_its_argument() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    assert json.loads(entrypoint) == ["python", "-m", "services"]
    assert "USER 10001" in dockerfile and "trust_remote_code" not in dockerfile
    refused = subprocess.run(
        [sys.executable, "-m", "services", "nope"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "choose one of registry, curation" in refused.stderr
    cli = subprocess.run(
        [sys.executable, "-m", "services", "cli", "infra", "export", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert cli.returncode == 0 and "up to date" in cli.stdout, cli.stdout + cli.stderr
    for service in KNOWN_SERVICES:  # each argument names a runnable service module
        assert (REPO / "services" / service / "__main__.py").exists()


def test_composes_prometheus_scrapes_every_service_and_loads_the_generated_rules() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    spec = SERVICES["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in spec["volumes"]}
    assert mounts["./prometheus/rules.yaml"] in config["rule_files"]
    assert spec["command"] == [f"--config.file={mounts['./prometheus/prometheus.yml']}"]
    [job] = config["scrape_configs"]
    port = SERVICES["registry"]["environment"]["TUNELINE_METRICS_PORT"]
    assert set(job["static_configs"][0]["targets"]) == {f"{s}:{port}" for s in KNOWN_SERVICES}
    rules = yaml.safe_load((INFRA / "prometheus" / "rules.yaml").read_text())
    assert [g["name"] for g in rules["groups"]] == ["tuneline-route-objectives"]
