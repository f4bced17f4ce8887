"""scripts/setup checks the Python version before anything else (issue 16): an old or missing interpreter is one
line and exit 1, never minutes of pip backtracking."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_setup(tmp_path: Path, python: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    return subprocess.run(["bash", "scripts/setup"], cwd=tmp_path, env={**os.environ, "PYTHON": python},
                          capture_output=True, text=True, timeout=60, check=False)


def fake_python(tmp_path: Path, version: tuple[int, int, int]) -> Path:
    """An interpreter that reports ``version``: the real one, with sys.version_info replaced before -c runs."""
    stub = tmp_path / "python-old"
    stub.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = -c ] && exec "{sys.executable}" -c "import sys; sys.version_info = {version!r}; $2"\n'
        "exit 99\n"
    )
    stub.chmod(0o755)
    return stub


def test_python_3_10_is_refused_in_one_line_before_any_install(tmp_path: Path) -> None:
    result = run_setup(tmp_path, str(fake_python(tmp_path, (3, 10, 12))))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"scripts/setup: Xhuma needs Python 3.11 or later; {tmp_path / 'python-old'} is 3.10.12. "
        "Install one and run: PYTHON=python3.11 bash scripts/setup"
    ]
    assert not (tmp_path / ".venv").exists() and result.stdout == ""


def test_a_missing_interpreter_is_named_in_one_line(tmp_path: Path) -> None:
    result = run_setup(tmp_path, "python3.99-nowhere")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "scripts/setup: Xhuma needs Python 3.11 or later; 'python3.99-nowhere' was not found. "
        "Install one and run: PYTHON=python3.11 bash scripts/setup"
    ]


def test_a_venv_made_with_an_old_python_is_named(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(fake_python(tmp_path, (3, 9, 2)), tmp_path / ".venv" / "bin" / "python")
    result = run_setup(tmp_path, sys.executable)
    assert result.returncode == 1
    assert ".venv was made with Python 3.9.2: remove .venv" in result.stderr
