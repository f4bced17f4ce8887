"""`xhuma simulate` is registered on the CLI and refuses a data directory that does not exist."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from xhuma.cli import app


def test_simulate_is_a_registered_command() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0 and "--data" in result.output and "--port" in result.output


def test_simulate_with_a_missing_data_directory_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "simulator data directory not found" in result.output
