"""`make demo QUICK=1` as a newcomer runs it: the whole loop on the tiny model, through promotion."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
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


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (nats-server and the stack's services)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _state(pid: int) -> str | None:
    """A process's state letter (Z: exited, not yet reaped), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.timeout(300)
def test_sigterm_to_the_demo_stops_its_whole_stack(tmp_path: Path) -> None:
    """`kill <demo pid>` (what a CI runner or a container stop sends) stops the stack as Ctrl-C does."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo"],
        cwd=tmp_path,
        env={**os.environ, "QUICK": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    while not any("2. submitting" in line for line in lines):  # the stack is up and healthy
        line = demo.stdout.readline()
        assert line or demo.poll() is None, "".join(lines)
        lines.append(line)
    children = _children(demo.pid)
    # nats-server and seven services, and the `tuneline submit` under way when it has started
    assert len(children) >= 8, (children, "".join(lines))
    demo.send_signal(signal.SIGTERM)
    out, _ = demo.communicate(timeout=90)
    still = {pid: _state(pid) for pid in children if _state(pid) not in (None, "Z")}
    assert still == {}, (demo.returncode, ("".join(lines) + out)[-4000:])
