"""The command line under bad input: one clear line on stderr and a non-zero exit, never a traceback
(LESSONS 7 "never a 500", the CLI's form of it; src/xhuma/cli.py "never a traceback")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xhuma.cli import app
from xhuma.config import CONFIG_FILE_ENV

BUNDLE = Path(__file__).parent.parent / "data" / "gpconnect" / "uclh-xhuma" / "9690937278.json"


@pytest.fixture(autouse=True)
def _restore_config_file_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # `xhuma --config FILE` exports XHUMA_CONFIG_FILE for the rest of the process: undo it after each test.
    monkeypatch.setenv(CONFIG_FILE_ENV, "unused")
    monkeypatch.delenv(CONFIG_FILE_ENV)


def cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr and 'File "' not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "not.json").write_text("this is not json")
    (tmp_path / "array.json").write_text("[1, 2, 3]")
    (tmp_path / "string.json").write_text('"a string"')
    (tmp_path / "patient.json").write_text('{"resourceType": "Patient"}')
    (tmp_path / "bundle.json").write_text('{"resourceType": "Bundle", "entry": "not a list"}')
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x01garbage")
    (tmp_path / "bad.xml").write_text("<unclosed")
    (tmp_path / "binary.xml").write_bytes(b"\x00\x01\x02\x03")
    (tmp_path / "empty.xml").write_bytes(b"")
    (tmp_path / "a-file").write_text("x")
    return tmp_path


@pytest.mark.parametrize(("name", "expected"), [
    ("not.json", "unreadable JSON"), ("array.json", "not a JSON object"), ("string.json", "not a JSON object"),
    ("patient.json", "not a FHIR Bundle"), ("bundle.json", "not a GP Connect structured record"),
    ("empty.json", "unreadable JSON"), ("binary.json", "unreadable JSON"), ("missing.json", "no such file"),
])
def test_convert_bad_input_is_one_line_and_exit_1(files: Path, name: str, expected: str) -> None:
    code, stdout, stderr = cli("convert", str(files / name))
    assert code == 1 and stdout == ""
    assert expected in one_clear_line(stderr)


def test_convert_directory_of_garbage_reports_each_file_and_exits_1(files: Path, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("not.json", "array.json", "binary.json", "empty.json"):
        (batch / name).write_bytes((files / name).read_bytes())
    unreadable = batch / "unreadable.json"
    unreadable.write_bytes(b"\x00garbage")
    unreadable.chmod(0)  # unreadable for a normal user; garbage for root
    (batch / "sub.json").mkdir()  # a directory with a .json name is not a bundle file
    code, stdout, stderr = cli("convert", str(batch), "-o", str(tmp_path / "out"))
    assert code == 1 and "Traceback" not in stdout + stderr
    for name in ("not.json", "array.json", "binary.json", "empty.json", "unreadable.json"):
        assert name in stdout


def test_convert_directory_without_output_is_one_line(files: Path) -> None:
    code, _, stderr = cli("convert", str(files))
    assert code == 1 and "needs -o" in one_clear_line(stderr)


def test_convert_bad_now_is_one_line(files: Path) -> None:
    code, _, stderr = cli("convert", str(BUNDLE), "--now", "yesterday")
    assert code == 1 and "--now" in one_clear_line(stderr)


def xhuma(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XHUMA_")}
    return subprocess.run([sys.executable, "-m", "xhuma", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_convert_output_that_cannot_be_written_is_one_line_not_a_traceback(files: Path) -> None:
    """Before the fix `-o a-file/ccd.xml` (parent is a file: unwritable even for root), `-o /proc/ccd.xml` and
    `--report DIRECTORY` ended in a Python traceback (FileExistsError / FileNotFoundError / IsADirectoryError out of
    src/xhuma/ccda/cli.py); `xhuma` now prints one line naming the path and exits 1."""
    for extra in (["-o", str(files / "a-file" / "ccd.xml")], ["-o", "/proc/xhuma-ccd.xml"],
                  ["-o", str(files / "out" / "ccd.xml"), "--report", str(files)]):
        result = xhuma("convert", str(BUNDLE), *extra, cwd=files)
        assert result.returncode == 1
        line = one_clear_line(result.stderr)
        assert line.startswith("xhuma: ") and ("a-file" in line or "/proc" in line or str(files) in line)


@pytest.mark.parametrize("extra", [
    pytest.param(["-o", "{files}/a-file/ccd.xml"], id="output-under-a-file"),
    pytest.param(["-o", "{files}/out/ccd.xml", "--report", "{files}"], id="report-is-a-directory"),
])
def test_convert_unwritable_output_is_a_cli_error_in_process_too(files: Path, extra: list[str]) -> None:
    """The convert command itself (not only the `xhuma` entry point) turns an unwritable output into one line."""
    code, _, stderr = cli("convert", str(BUNDLE), *(part.format(files=files) for part in extra))
    assert code == 1
    assert "cannot write" in one_clear_line(stderr)


def test_convert_directory_into_a_file_is_a_cli_error(files: Path) -> None:
    source = files / "bundles"
    source.mkdir()
    (source / "one.json").write_bytes(BUNDLE.read_bytes())
    code, _, stderr = cli("convert", str(source), "-o", str(files / "a-file"))
    assert code == 1
    assert "cannot write" in one_clear_line(stderr)


@pytest.mark.parametrize(("name", "expected"), [
    ("bad.xml", "unreadable"), ("binary.xml", "unreadable"), ("empty.xml", "unreadable"),
    ("missing.xml", "unreadable"),
])
def test_validate_bad_input_is_one_line_and_exit_1(files: Path, name: str, expected: str) -> None:
    code, stdout, stderr = cli("validate", str(files / name))
    assert code == 1 and stdout == ""
    assert expected in one_clear_line(stderr)


@pytest.mark.parametrize(("content", "expected"), [
    ("a = [", "configuration error"), ('profile = "bogus"', "XHUMA_PROFILE"),
    ('max_request_bytes = "lots"', "XHUMA_MAX_REQUEST_BYTES"), ("\udcff", "configuration error"),
])
def test_malformed_toml_configuration_is_one_line_and_exit_3(tmp_path: Path, content: str, expected: str) -> None:
    config = tmp_path / "xhuma.toml"
    config.write_bytes(content.encode("utf-8", "surrogateescape"))
    code, _, stderr = cli("--config", str(config), "config", "show")
    assert code == 3 and expected in one_clear_line(stderr)


def test_missing_configuration_file_is_one_line_and_exit_3(tmp_path: Path) -> None:
    code, _, stderr = cli("--config", str(tmp_path / "nope.toml"), "config", "show")
    assert code == 3 and "not found" in one_clear_line(stderr)


@pytest.mark.parametrize("args", [
    ["--patient", "abc"], ["--patient", "9690937287"], ["--patient", "-1"], ["--patient", "1e10"],
    ["--patient", ""], [], ["--all", "--patient", "9690937286"],
])
def test_cache_purge_bad_numbers_are_one_line_and_exit_2(args: list[str]) -> None:
    code, stdout, stderr = cli("cache", "purge", *args)
    assert code == 2 and "9690937287" not in stdout + stderr
    one_clear_line(stderr)


def test_cache_purge_patient_from_stdin_that_is_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, stderr = cli("cache", "purge", "--patient", "-", stdin="\x00\xff not a number\n")
    assert code == 2 and "not a valid NHS number" in one_clear_line(stderr)


@pytest.mark.parametrize("kid", ["", "x" * 100, "bad kid", "../etc"])
def test_cache_new_key_bad_kid_is_one_line_and_exit_2(kid: str) -> None:
    code, _, stderr = cli("cache", "new-key", "--kid", kid)
    assert code == 2 and "--kid" in one_clear_line(stderr)


def test_simulate_with_a_missing_data_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for data in (tmp_path / "missing", Path(__file__)):
        code, _, stderr = cli("simulate", "--data", str(data))
        assert code == 2 and "simulator data directory not found" in one_clear_line(stderr)
