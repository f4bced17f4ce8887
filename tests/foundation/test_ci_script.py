"""LESSONS 32: CI passed when tests failed. The README's test command (`scripts/test`, which `.ci/run` runs)
must exit non-zero when a test fails, and zero when all pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_test_script(test_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XHUMA_TEST_SKIP_SETUP": "1"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "test"), str(test_file), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(test_file.parent), "-c", os.devnull],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.parametrize(("body", "failing"), [("assert 1 + 1 == 3", True), ("assert 1 + 1 == 2", False)])
def test_ci_command_exit_status_follows_the_tests_LESSONS_32(tmp_path: Path, body: str, failing: bool) -> None:
    test_file = tmp_path / "test_probe.py"
    test_file.write_text(f"def test_probe():\n    {body}\n")
    result = run_test_script(test_file)
    assert ("1 failed" in result.stdout) is failing, result.stdout[-2000:] + result.stderr[-2000:]
    assert (result.returncode != 0) is failing


def test_ci_entry_point_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "exec bash scripts/test" in ci
    assert "bash scripts/test" in readme
