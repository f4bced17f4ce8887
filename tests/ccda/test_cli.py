"""``xhuma convert`` / ``xhuma validate``: outputs and exit codes (issue 3 CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ccda.conftest import DATA
from typer.testing import CliRunner

from xhuma.cli import app

runner = CliRunner()
ALLERGIES = DATA / "gpconnect-spec" / "allergies_response1.json"


def test_convert_writes_document_to_stdout_and_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["convert", str(ALLERGIES), "--report", str(report), "--validate",
                                 "--now", "2025-01-01T12:00:00+00:00"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<?xml")
    assert result.stderr.strip().splitlines() == [f"xhuma: converted {ALLERGIES}: 4 entries, 4 warnings, valid"]
    assert json.loads(report.read_text())["counts"]["sections"]["allergies"]["entries"] == 4


def test_convert_is_reproducible_between_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    for target in (first, second):
        assert runner.invoke(app, ["convert", str(ALLERGIES), "-o", str(target)]).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


def test_unreadable_json_exits_1_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["convert", str(bad)])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "unreadable JSON" in result.stderr


def test_non_bundle_and_non_structured_record_exit_1(tmp_path: Path) -> None:
    for content, words in (({"resourceType": "Patient"}, "not a FHIR Bundle"),
                           ({"resourceType": "Bundle", "type": "searchset", "entry": []}, "not a GP Connect")):
        path = tmp_path / "x.json"
        path.write_text(json.dumps(content))
        result = runner.invoke(app, ["convert", str(path)])
        assert result.exit_code == 1 and words in result.stderr


def test_directory_batch_writes_every_document(tmp_path: Path) -> None:
    source = DATA / "gpconnect-spec"
    out = tmp_path / "out"
    result = runner.invoke(app, ["convert", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.xml"))) == len(list(source.glob("*.json")))


def test_convert_to_a_file_says_so_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "ccd.xml"
    result = runner.invoke(app, ["convert", str(ALLERGIES), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"xhuma: converted {ALLERGIES} to {target}: 4 entries, 4 warnings"]
    assert target.read_bytes().startswith(b"<?xml")


def test_validate_command_flags_an_invalid_document_with_exit_1(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    assert runner.invoke(app, ["convert", str(ALLERGIES), "-o", str(good)]).exit_code == 0
    bad = tmp_path / "bad.xml"
    bad.write_bytes(good.read_bytes().replace(b'<realmCode code="US"/>', b""))
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert "good.xml: valid" in result.stdout and "bad.xml: INVALID" in result.stdout
    assert "a-1198-16791" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "2 documents: 1 valid, 1 invalid, 0 unreadable"


def test_validate_a_directory_checks_every_xml_file_in_it_and_sums_up(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    assert runner.invoke(app, ["convert", str(DATA / "gpconnect-spec"), "-o", str(batch)]).exit_code == 0
    count = len(list(batch.rglob("*.xml")))
    (batch / "nested").mkdir()
    (batch / "nested" / "broken.xml").write_text("<ClinicalDocument")
    (batch / "notes.txt").write_text("not a document")
    result = runner.invoke(app, ["validate", str(batch)])
    assert result.exit_code == 1
    assert "broken.xml: unreadable" in result.stderr and "notes.txt" not in result.output
    assert result.stdout.strip().splitlines()[-1] == f"{count + 1} documents: {count} valid, 0 invalid, 1 unreadable"
    (batch / "nested" / "broken.xml").unlink()
    result = runner.invoke(app, ["validate", str(batch)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"{count} documents: {count} valid, 0 invalid, 0 unreadable"


def test_validate_an_empty_directory_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and "no documents" in result.stderr
