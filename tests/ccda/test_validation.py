"""Issue 3 "done when": every fixture bundle converts to a CCD with 0 CDA_SDTC schema errors and 0 C-CDA R2.1
schematron errors (phase errors; only the known-broken a-1098-28042 ignored) — LESSONS 28."""

from __future__ import annotations

from tests.ccda.conftest import converted

from xhuma.ccda.validate import KNOWN_BROKEN_ASSERTS, validate_bytes


def test_every_fixture_is_schema_and_schematron_valid(fixture_name: str) -> None:
    result = validate_bytes(converted(fixture_name).xml)
    assert result.schema_errors == []
    assert result.schematron_errors == []


def test_only_the_known_broken_assert_is_ignored() -> None:
    assert frozenset({"a-1098-28042"}) == KNOWN_BROKEN_ASSERTS


def test_validator_reports_schema_and_schematron_errors_on_a_broken_document() -> None:
    xml = converted("gpconnect-spec/allergies_response1").xml
    broken = xml.replace(b'<realmCode code="US"/>', b'<realmCode code="GB"/>').replace(
        b"<title>", b"<bogus/><title>", 1
    )
    result = validate_bytes(broken)
    assert result.schema_errors, "an unknown element must fail the CDA schema"
    assert any(f.assert_id == "a-1198-16791" for f in result.schematron_errors), "realmCode US is a SHALL"
