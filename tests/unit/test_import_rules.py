"""The architecture's import rules (pyproject's [tool.importlinter]) hold, and they bite: a copy of
the code with one planted breach of each kind fails `lint-imports`, naming the broken contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_the_code_keeps_every_import_rule() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "services/training/planted.py",
            "import services.evaluation.app",
            "The seven services are independent",
        ),
        (
            "services/core/planted.py",
            "from services.curation import pipeline",
            "core and the contracts import no",
        ),
        (
            "schemas/planted.py",
            "import services.core.messaging.bus",
            "The contracts import nothing of the services",
        ),
        (
            "services/cli/planted.py",
            "import services.serving.app",
            "The CLI, the stack and the demo import no",
        ),
    ],
)
def test_a_planted_breach_is_caught(tmp_path: Path, module: str, line: str, contract: str) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.jsonl", "*.parquet", "generated")
    for package in ("services", "schemas"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    (tmp_path / module).write_text(f"{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout
    assert f"{contract}" in done.stdout and "BROKEN" in done.stdout
    assert module.removesuffix(".py").replace("/", ".") in done.stdout
