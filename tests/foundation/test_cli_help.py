"""The command line's first contact (issue 16): ``--version``, flags shown as flags, the exit statuses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from xhuma.cli import EXIT_CONFIGURATION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, group)]
    if hasattr(group, "commands"):  # typer's groups (typer vendors click's classes)
        for name, command in group.commands.items():
            found += _commands(command, (*path, name))
    return found


def test_version_prints_the_packaged_version_and_exits_0() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == EXIT_OK
    assert result.stdout.strip() == f"xhuma {version}"


def test_every_boolean_option_of_every_command_is_shown_as_a_flag_without_a_value_type() -> None:
    root = typer.main.get_command(app)
    flags_seen = 0
    for path, command in _commands(root):
        help_text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).stdout
        assert "<bool>" not in help_text, path
        for option in command.params:
            if getattr(option, "is_flag", False):
                flags_seen += 1
                shown = re.search(re.escape(option.opts[0]) + r"(?:,-\w)?\s+(\S+)", help_text)
                assert shown is not None and not shown.group(1).startswith("<"), (path, option.opts[0])
    assert flags_seen >= 5  # --version, --validate, --verbose, --all, --yes at least


def test_value_options_still_show_their_type() -> None:
    help_text = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).stdout
    assert "<path>" in help_text and "<str>" in help_text


def test_exit_statuses_are_distinct_and_documented_in_the_readme_and_the_help() -> None:
    assert len({EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIGURATION}) == 4
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIGURATION) == (0, 1, 2, 3)
    readme = (ROOT / "README.md").read_text()
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert status in readme
    assert "3 configuration error" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout


def test_an_unknown_option_is_a_usage_error() -> None:
    assert runner.invoke(app, ["convert", "--no-such-option", "x.json"]).exit_code == EXIT_USAGE
