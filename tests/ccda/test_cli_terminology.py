"""``xhuma convert --terminology URL|packaged|none`` (issue 13): the packaged subset by default, the documented
fallbacks with ``none`` or a server that cannot be reached (one line, the conversion still made)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ccda.conftest import DATA
from typer.testing import CliRunner

from xhuma.cli import app

runner = CliRunner()
RECORD = DATA / "uclh-xhuma" / "9690937286.json"
PAST_HISTORY = b"2.16.840.1.113883.10.20.22.2.20"


def _convert(tmp_path: Path, *options: str) -> tuple[int, bytes, dict[str, object], str]:
    target, report = tmp_path / "ccd.xml", tmp_path / "report.json"
    result = runner.invoke(app, ["convert", str(RECORD), "-o", str(target), "--report", str(report), *options])
    if result.exit_code != 0:
        return result.exit_code, b"", {}, result.output
    return result.exit_code, target.read_bytes(), json.loads(report.read_text()), result.output


def test_convert_uses_the_packaged_terminology_by_default(tmp_path: Path) -> None:
    code, xml, report, _ = _convert(tmp_path)
    assert code == 0 and PAST_HISTORY in xml
    assert not any(w["code"] == "terminology-unavailable" for w in report["warnings"])  # type: ignore[attr-defined]


def test_convert_with_no_terminology_applies_the_fallbacks_and_says_so(tmp_path: Path) -> None:
    code, xml, report, _ = _convert(tmp_path, "--terminology", "none")
    assert code == 0 and PAST_HISTORY not in xml
    assert any(w["code"] == "terminology-unavailable" for w in report["warnings"])  # type: ignore[attr-defined]


def test_an_unreachable_terminology_server_falls_back_with_one_line(tmp_path: Path) -> None:
    code, xml, _, output = _convert(tmp_path, "--terminology", "http://127.0.0.1:1/fhir")
    assert code == 0 and PAST_HISTORY not in xml
    assert "terminology server unavailable" in output and "Traceback" not in output


def test_an_unknown_terminology_choice_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, _, _, output = _convert(tmp_path, "--terminology", "snomed-please")
    assert code != 0
    assert "--terminology is a URL, 'packaged' or 'none'" in output and "Traceback" not in output
