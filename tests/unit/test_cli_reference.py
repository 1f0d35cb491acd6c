"""docs/cli.md is every command's `--help`, rendered 100 columns wide without colour: the snapshot
the CLI's help must match byte for byte (a restructuring of the CLI changes none of it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_commands_help_matches_the_committed_reference() -> None:
    # a fresh interpreter: Typer and Rich fix the terminal's width and colour when imported
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.reference", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{done.stderr}\nrun `make docs` if the change is meant"


def test_the_reference_has_every_command_and_no_path_of_this_checkout() -> None:
    import typer

    from services.cli import app
    from services.cli.reference import command_paths

    text = (REPO / "docs" / "cli.md").read_text()
    assert str(REPO) not in text
    paths = command_paths(typer.main.get_command(app))
    assert len(paths) >= 45 and text.count("\n## tuneline") == len(paths)
    assert all(f"\n## {' '.join(('tuneline', *path))}\n" in text for path in paths)
