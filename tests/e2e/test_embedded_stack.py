"""`tuneline up` and the CLI as a new user runs them: real processes, real nats-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.messaging.nats_server import EmbeddedNats, free_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
TUNELINE = [sys.executable, "-m", "services.cli"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dataset.submitted.json"
TICKETS = EXAMPLE.parent / "support-tickets" / "tickets.jsonl"
RECIPE = EXAMPLE.parent / "support-tickets" / "recipe.yaml"


# a --secure stack's URL → the operator's credentials (<data-dir>/nats/secrets/operator.env)
CLIENT_ENV: dict[str, dict[str, str]] = {}


def cli(nats_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNELINE, "--nats-url", nats_url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **CLIENT_ENV.get(nats_url, {})},
    )


def operator_env(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "nats" / "secrets" / "operator.env").read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if line)


STARTUP_OUTPUT: dict[int, str] = {}


def start_up(*args: str, cwd: Path, models: Path) -> subprocess.Popen[str]:
    """`models`: the session's model cache, so SmolLM2 is converted once (513 MiB), not per test."""
    if "--serving-port" not in args:  # stacks may overlap in time; each serves on its own port
        args = (*args, "--serving-port", str(free_port()))
    if "--dashboard-port" not in args:
        args = (*args, "--dashboard-port", str(free_port()))
    proc = subprocess.Popen(
        [*TUNELINE, "up", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "COLUMNS": "200",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "TUNELINE_MODEL_CACHE": str(models),
        },
    )
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ready" in line:
            STARTUP_OUTPUT[proc.pid] = "".join(lines)
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("tuneline up did not become ready:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def _child_pids(up: subprocess.Popen[str]) -> list[int]:
    """The pids `tuneline up` printed in its table (nats-server and each service)."""
    pids = []
    for line in STARTUP_OUTPUT[up.pid].splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) >= 3 and cells[-1].isdigit():
            pids.append(int(cells[-1]))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def stack(tmp_path: Path, model_cache: Path) -> Iterator[tuple[str, Path]]:
    """`tuneline up --secure`: TLS and one NATS user per service (infra/nats), the CLI as operator.

    Every test on this stack runs its lineage with nothing more than those permissions, and the
    server must not have refused anything any service or the CLI tried.
    """
    data_dir = tmp_path / "data"
    port = free_port()
    proc = start_up(
        "--secure", "--data-dir", str(data_dir), "--nats-port", str(port), cwd=tmp_path, models=model_cache
    )
    env = operator_env(data_dir)
    url = env["TUNELINE_NATS_URL"]
    assert url == f"tls://127.0.0.1:{port}"
    CLIENT_ENV[url] = env
    yield url, data_dir
    if proc.poll() is None:
        stop(proc)
    log = (data_dir / "nats" / "nats-server.log").read_text()
    assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]


def test_up_publish_status_models_tail_and_clean_stop(tmp_path: Path, model_cache: Path) -> None:
    data_dir = tmp_path / "data"
    port, http_port = free_port(), free_port()
    proc = start_up(
        "--data-dir", str(data_dir), "--nats-port", str(port), "--serving-port", str(http_port),
        cwd=tmp_path, models=model_cache,
    )  # fmt: skip
    url = f"nats://127.0.0.1:{port}"
    children = _child_pids(proc)
    # nats-server, the registry, curation, training, merging, evaluation, rollout, serving
    assert len(children) == 8
    assert f"http://127.0.0.1:{http_port}/v1" in STARTUP_OUTPUT[proc.pid]
    try:
        import httpx

        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        routes = cli(url, "routes")
        assert routes.returncode == 0 and "no routes yet" in routes.stdout, routes.stderr

        published = cli(url, "events", "publish", "dataset.submitted", "--data", str(EXAMPLE))
        assert published.returncode == 0, published.stderr
        correlation = published.stdout.split("correlation id:")[1].split()[0]

        status = cli(url, "status", correlation, "--wait", "10")
        assert status.returncode == 0, status.stderr
        assert "dataset.submitted" in status.stdout and "support-ticket-to-json" in status.stdout

        as_json = json.loads(cli(url, "status", correlation, "--json").stdout)
        assert as_json["entries"][0]["type"] == "tuneline.dataset.submitted.v1"

        models = cli(url, "models", "list")
        assert models.returncode == 0 and "no model versions yet" in models.stdout

        tail = cli(url, "events", "tail", "--from-start", "--json", "--count", "1", "--timeout", "10")
        [line] = tail.stdout.splitlines()
        item = json.loads(line)
        assert item["envelope"]["correlation_id"] == correlation
        assert item["data"]["tenant"] == "acme"
        # state lives in the data directory
        assert (data_dir / "registry.db").exists()
        assert (data_dir / "nats" / "jetstream").is_dir()
        assert (data_dir / "artifacts").is_dir()
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert [pid for pid in children if _alive(pid)] == []  # Ctrl-C stopped the whole tree


def test_status_of_unknown_lineage_is_an_error(stack: tuple[str, Path]) -> None:
    url, _ = stack
    result = cli(url, "status", "no-such-lineage")
    assert result.returncode == 1
    assert "no events recorded" in result.stderr


def test_up_against_external_nats_and_postgres(tmp_path: Path, postgres_url: str, model_cache: Path) -> None:
    with EmbeddedNats(tmp_path / "external-nats", port=free_port()) as nats:
        proc = start_up(
            "--nats-url",
            nats.url,
            "--database-url",
            postgres_url,
            "--data-dir",
            str(tmp_path / "data"),
            cwd=tmp_path,
            models=model_cache,
        )
        try:
            published = cli(nats.url, "events", "publish", "dataset.submitted", "--data", str(EXAMPLE))
            correlation = published.stdout.split("correlation id:")[1].split()[0]
            status = cli(nats.url, "status", correlation, "--wait", "10")
            assert status.returncode == 0, status.stderr
        finally:
            out = stop(proc)
        assert proc.returncode == 0, out
        assert not (tmp_path / "data" / "registry.db").exists()  # PostgreSQL held the data
        assert not (tmp_path / "data" / "nats").exists()  # no embedded server was started
    from sqlalchemy import create_engine, text

    with create_engine(postgres_url).connect() as connection:
        assert connection.execute(text("select count(*) from events")).scalar() == 1


def test_submit_audits_the_data_and_datasets_show_prints_the_report(
    stack: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = stack
    submitted = cli(
        url, "submit", str(TICKETS), "--recipe", str(RECIPE),
        "--base-model", "tiny-llama", "--max-seq-len", "1024", "--wait", "120",
        timeout=180,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert "approved" in submitted.stdout
    submission_id = submitted.stdout.split("submitted ")[1].split()[0]

    show = cli(url, "datasets", "show", submission_id, "--findings", "100")
    assert show.returncode == 0, show.stderr
    for expected in (
        "near-duplicate of row 13",
        "phone 1 (redacted)",
        "teacher boilerplate",
        "general-replay",
    ):
        assert expected in show.stdout, expected
    detail = json.loads(cli(url, "datasets", "show", submission_id, "--json").stdout)
    assert detail["summary"]["status"] == "approved" and len(detail["summary"]["dataset_id"]) == 64

    listed = cli(url, "datasets", "list")
    assert submission_id in listed.stdout


def test_submit_refuses_a_bad_recipe_before_uploading(stack: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = stack
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: t\nroute: Bad_Route\ntraining: {base_model: tiny-llama, learning_rate: 5}\n")
    result = cli(url, "submit", str(TICKETS), "--recipe", str(recipe))
    assert result.returncode == 1
    assert "route" in result.stderr and "learning_rate" in result.stderr
    missing = cli(url, "submit", str(tmp_path / "nope.jsonl"), "--recipe", str(RECIPE))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def _training_recipe(path: Path, **training: object) -> Path:
    fields = {"base_model": "tiny-llama", "max_seq_len": 1024, "eval_steps": 100_000, **training}
    inner = ", ".join(f"{k}: {v}" for k, v in fields.items())
    # the stack evaluates each candidate while the test goes on: samples of the largest suites keep
    # that within the test's budget on 2 busy cores (the full 2,700 capability items took minutes)
    gates = "gates: {suite_items: {capability: 300, jailbreak: 100, safety: 100}}\n"
    path.write_text(f"task: ticket-to-json\nroute: support-extract\ntraining: {{{inner}}}\n{gates}")
    return path


def _run_of(url: str, known: set[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = cli(url, "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        fresh = [r for r in json.loads(listed.stdout) if r["run_id"] not in known]
        if fresh:
            return dict(fresh[0])
        time.sleep(0.5)
    raise AssertionError("no new training run appeared")


def test_training_runs_can_be_watched_and_cancelled_from_the_cli(
    stack: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = stack
    known = {r["run_id"] for r in json.loads(cli(url, "runs", "--json").stdout)}

    short = _training_recipe(tmp_path / "short.yaml", max_steps=8)
    assert (
        cli(url, "submit", str(TICKETS), "--recipe", str(short), "--wait", "120", timeout=180).returncode == 0
    )
    run = _run_of(url, known)
    known.add(str(run["run_id"]))
    watched = cli(url, "watch", str(run["run_id"]), "--timeout", "120", timeout=180)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "completed: candidate mv-" in watched.stdout
    version = watched.stdout.split("completed: candidate ", 1)[1].split()[0]
    deadline = time.monotonic() + 30
    while json.loads(cli(url, "runs", "show", str(run["run_id"]), "--json").stdout)["summary"]["status"] != (
        "completed"
    ):
        assert time.monotonic() < deadline, "the registry never recorded the run as completed"
        time.sleep(0.3)
    shown = cli(url, "runs", "show", str(run["run_id"]))
    assert "candidate.ready" in shown.stdout and "training.started" in shown.stdout
    again = cli(url, "cancel", str(run["run_id"]))
    assert again.returncode == 1 and "already completed" in again.stderr

    long = _training_recipe(tmp_path / "long.yaml", max_steps=100_000, checkpoint_steps=1000)
    assert (
        cli(url, "submit", str(TICKETS), "--recipe", str(long), "--wait", "120", timeout=180).returncode == 0
    )
    run = _run_of(url, known)
    cancelled = cli(url, "cancel", str(run["run_id"]), "--reason", "e2e", "--wait", "60", timeout=90)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "cancelled at step" in cancelled.stdout
    watched = cli(url, "watch", str(run["run_id"]))
    assert watched.returncode == 1 and "cancelled" in watched.stdout

    _evaluated_with_card_and_suites(url, version, tmp_path)


def _evaluated_with_card_and_suites(url: str, version: str, tmp_path: Path) -> None:
    """The finished candidate was evaluated meanwhile: tables, gate verdicts and the adaptation card;
    the suite catalogue lists, accepts and refuses from the CLI; a drift check can be asked for."""
    deadline = time.monotonic() + 240
    while (shown := cli(url, "evals", "show", version)).returncode == 2:
        assert time.monotonic() < deadline, "no evaluation of the candidate within 240 s"
        time.sleep(1)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for expected in (
        "capability",
        "safety",
        "few-shot",
        "release gates",
        "capability:capability",
        "latency-p95",
    ):
        assert expected in shown.stdout
    card = json.loads(cli(url, "card", version, "--json").stdout)
    assert card["version_id"] == version and card["gates"]["gates"]
    assert card["rollback"] == "tuneline rollback support-extract"
    written = cli(url, "card", version[:8], "--out", str(tmp_path / "card"))
    assert written.returncode == 0 and "# Adaptation card" in (tmp_path / "card.md").read_text()
    listed = json.loads(cli(url, "suites", "list", "--json").stdout)["suites"]
    assert {"capability", "safety", "quant-tail", "latency"} <= {s["name"] for s in listed}
    extra = tmp_path / "mine.jsonl"
    extra.write_text('{"id": 1, "prompt": "Say hi", "answer": "hi"}\n')
    added = cli(url, "suites", "add", "mine", str(extra), "--scorer", "contains", "--kind", "capability")
    assert added.returncode == 0 and "registered suite mine" in added.stdout, added.stderr
    refused = cli(url, "suites", "add", "bad", str(extra), "--scorer", "bleu")
    assert refused.returncode == 1 and "unknown scorer" in refused.stderr
    drift = cli(url, "drift", "check", "support-extract")
    assert drift.returncode == 0 and "drift check of support-extract requested" in drift.stdout
