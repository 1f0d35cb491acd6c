"""`make demo QUICK=1` as a newcomer runs it: the whole loop on the tiny model, through promotion."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_the_quick_demo_promotes_its_candidate_and_no_request_fails(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # the demo runs from a repository root
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo"],
        cwd=tmp_path,
        env={**os.environ, "QUICK": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, (out[-4000:], result.stderr[-4000:])
    text = " ".join(out.split())  # rich wraps long lines
    assert "gates.passed started a rollout on 'support-extract'" in text, out[-4000:]
    # the traffic generator's table: every request answered, by the stable or the candidate version
    rows = re.findall(r"│ (stable|candidate|-)\s+│ (\S+)\s+│ (\d{3})\s+│ (\d+)\s+│", out)
    assert rows and {status for _, _, status, _ in rows} == {"200"}, rows
    assert {role for role, *_ in rows} == {"stable", "candidate"}, rows
    candidate = next(version for role, version, *_ in rows if role == "candidate")
    # promoted: the candidate is the route's stable version and the rollout is over
    assert re.search(rf"stable:\s+{candidate} \(adapter\)", out), out[-4000:]
    assert "no rollout in progress" in text
    assert re.search(r"release gates │ passed", text) and re.search(r"demo finished in \d+\.\ds", text)
    # the curl command the summary prints carries the demo tenant's key
    assert re.search(r"authorization: Bearer sk-demo-[0-9a-f]{24}", text)
