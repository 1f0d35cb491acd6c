"""docs/cli.md: the `--help` page of every `tuneline` command, generated from the Typer app.

`python -m services.cli.reference` writes it; `--check` fails when the file drifts from the app
(`make test` runs it, as it checks the generated schemas). The pages are rendered as a terminal
100 columns wide without colour, so the file is the same on every machine and is the snapshot
that a restructuring of the CLI must leave byte-identical.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# Typer and Rich read these when they are imported: set them first
os.environ.update(
    {
        "TERMINAL_WIDTH": "100",
        "COLUMNS": "100",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "_TYPER_FORCE_DISABLE_TERMINAL": "1",
    }
)

import click
import typer
from typer.testing import CliRunner

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADER = (
    "# `tuneline` command reference\n\n"
    "Every command's `--help`, generated from the Typer app by `make docs` "
    "(`python -m services.cli.reference`); `make test` fails when this file drifts from the code.\n"
)


def command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under `command`, depth first, in the order `--help` lists them."""
    paths = [path]
    if hasattr(command, "list_commands"):  # a group (Typer carries its own copy of click)
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                paths += command_paths(sub, (*path, name))
    return paths


def help_page(app: typer.Typer, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="tuneline", env=dict(os.environ))
    if result.exit_code != 0:
        raise RuntimeError(f"tuneline {' '.join(path)} --help exited {result.exit_code}: {result.output}")
    return result.output


def reference(app: typer.Typer) -> str:
    sections = [HEADER]
    for path in command_paths(typer.main.get_command(app)):
        title = " ".join(("tuneline", *path))
        sections.append(f"\n## {title}\n\n```text\n{help_page(app, path).rstrip()}\n```\n")
    return "".join(sections)


def main(argv: list[str]) -> int:
    from services.cli import app

    text = reference(app)
    if "--check" in argv:
        if not REFERENCE.exists() or REFERENCE.read_text() != text:
            print(f"{REFERENCE} is out of date; run `make docs` and commit the result", file=sys.stderr)
            return 1
        print(f"{REFERENCE.name} is up to date ({text.count(chr(10) + '## ')} commands)")
        return 0
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
