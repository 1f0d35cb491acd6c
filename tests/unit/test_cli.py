"""CLI behaviour that needs no server: validation before sending, help everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from services.cli import app
from tests.support.events import submitted

runner = CliRunner()


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for command in group.registered_commands:
        assert command.callback is not None
        found.append((*prefix, command.name or command.callback.__name__.replace("_", "-")))
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name
        found += _commands(sub.typer_instance, (*prefix, sub.name))
    return found


COMMANDS = _commands(app)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tuneline")
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_publish_names_the_bad_field_and_sends_nothing(tmp_path: Path) -> None:
    data = submitted().model_dump(mode="json")
    data["recipe"]["lora"]["rank"] = 0
    del data["route"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    # no server at this URL: validation must fail before any connection is tried
    result = runner.invoke(
        app,
        [
            "--nats-url",
            "nats://127.0.0.1:1",
            "events",
            "publish",
            "dataset.submitted",
            "--data",
            str(path),
        ],
    )
    assert result.exit_code == 1
    assert "recipe.lora.rank" in result.output
    assert "route: Field required" in result.output
    assert "cannot reach NATS" not in result.output


def test_publish_unknown_type_lists_known_types(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text("{}")
    result = runner.invoke(app, ["events", "publish", "dataset.submited", "--data", str(path)])
    assert result.exit_code == 1
    assert "dataset.submitted" in result.output


def test_publish_dry_run_validates_the_shipped_example() -> None:
    result = runner.invoke(
        app,
        [
            "events",
            "publish",
            "dataset.submitted",
            "--data",
            "examples/dataset.submitted.json",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_unreachable_nats_is_a_clear_error() -> None:
    result = runner.invoke(app, ["--nats-url", "nats://127.0.0.1:1", "models", "list"])
    assert result.exit_code == 1
    assert "cannot reach NATS" in result.output and "tuneline up" in result.output


def test_merge_refuses_a_bad_request_before_connecting() -> None:
    unknown = runner.invoke(
        app, ["--nats-url", "nats://127.0.0.1:1", "merge", "--method", "blend", "--inputs", "a,b"]
    )
    assert unknown.exit_code == 1 and "method" in unknown.output
    weights = runner.invoke(
        app,
        [
            "--nats-url",
            "nats://127.0.0.1:1",
            "merge",
            "--method",
            "ties",
            "--inputs",
            "a,b",
            "--weights",
            "0.5",
        ],
    )
    assert weights.exit_code == 1 and "1 weights for 2 inputs" in weights.output


def test_merge_reads_its_gates_from_a_recipe_and_names_a_bad_field(tmp_path: Path) -> None:
    from services.cli.merge import _gates

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: x\ngates:\n  parent_task_max_drop: 4\n  significance: 0.01\n")
    policy = _gates(recipe)
    assert policy.parent_task_max_drop == 4 and policy.significance == 0.01
    bad = tmp_path / "gates.yaml"
    bad.write_text("parent_task_max_drop: lots\n")
    result = runner.invoke(
        app,
        [
            "--nats-url",
            "nats://127.0.0.1:1",
            "merge",
            "--method",
            "cat",
            "--inputs",
            "a,b",
            "--gates",
            f"{bad}",
        ],
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "is not a gate policy" in output and "valid number" in output
