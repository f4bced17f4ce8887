"""Document level: US Realm Header + CCD (SPEC §8.1; LESSONS 24, 26), determinism and robustness."""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime

import pytest
from tests.ccda.conftest import CONTEXT, NOW, converted, load, tree, xpath

from xhuma.ccda import ConversionContext, NotAStructuredRecord, convert
from xhuma.ccda.validate import validate_bytes

OID_OR_UUID = re.compile(r"^([0-2](\.(0|[1-9][0-9]*))+|[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})$")


def test_header_has_every_shall_element_lessons_26() -> None:
    conversion = converted("uclh-xhuma/9690937286")
    document = tree(conversion)
    assert uuid.UUID(xpath(document, "/c:ClinicalDocument/c:id/@root")[0]) == uuid.UUID(conversion.document_id)
    assert xpath(document, "/c:ClinicalDocument/c:code/@code") == ["34133-9"]
    assert xpath(document, "/c:ClinicalDocument/c:effectiveTime/@value") == ["20250101120000+0000"]
    assert xpath(document, "/c:ClinicalDocument/c:confidentialityCode/@code") == ["N"]
    assert xpath(document, "/c:ClinicalDocument/c:languageCode/@code") == ["en-GB"]
    assert xpath(document, "/c:ClinicalDocument/c:setId/@root") and xpath(document, "//c:versionNumber/@value")
    role = xpath(document, "//c:recordTarget/c:patientRole")[0]
    assert xpath(role, "c:id/@root") == ["2.16.840.1.113883.2.1.4.1"]
    assert xpath(role, "c:id/@extension") == [conversion.nhs_number]
    assert xpath(role, "c:patient/c:administrativeGenderCode/@code")[0] in ("M", "F", "UN")
    assert xpath(role, "c:patient/c:birthTime/@value")
    assert xpath(document, "//c:author/c:assignedAuthor/c:assignedAuthoringDevice/c:softwareName")
    assert xpath(document, "//c:custodian//c:representedCustodianOrganization/c:name/text()") == ["Xhuma Gateway"]
    event = xpath(document, "//c:documentationOf/c:serviceEvent[@classCode='PCPR']")[0]
    assert xpath(event, "c:effectiveTime/c:low/@value") and xpath(event, "c:effectiveTime/c:high/@value")


def test_ii_roots_are_oids_or_uuids_never_urls_lessons_26(fixture_name: str) -> None:
    roots = xpath(tree(converted(fixture_name)), "//@root")
    assert [r for r in roots if not OID_OR_UUID.match(r)] == []


def test_same_input_gives_byte_identical_output() -> None:
    bundle = load("uclh-xhuma/9690937286")
    assert convert(copy.deepcopy(bundle), CONTEXT).xml == convert(copy.deepcopy(bundle), CONTEXT).xml


def test_document_time_without_context_comes_from_the_bundle_not_the_clock() -> None:
    first = convert(load("uclh-xhuma/9690937286"))
    second = convert(load("uclh-xhuma/9690937286"))
    assert first.xml == second.xml
    assert first.effective_time < datetime(2100, 1, 1, tzinfo=UTC)
    assert first.effective_time.tzinfo is not None


def test_entry_ids_do_not_depend_on_the_document_time() -> None:
    later = ConversionContext(now=datetime(2030, 1, 1, tzinfo=UTC))
    a = tree(convert(load("gpconnect-spec/allergies_response1"), CONTEXT))
    b = tree(convert(load("gpconnect-spec/allergies_response1"), later))
    entry_ids = "//c:entry//c:id/@root"
    assert xpath(a, entry_ids) == xpath(b, entry_ids)
    assert xpath(a, "/c:ClinicalDocument/c:id/@root") != xpath(b, "/c:ClinicalDocument/c:id/@root")


def test_conversion_exposes_document_entry_metadata() -> None:
    conversion = converted("uclh-xhuma/9692136744")
    assert conversion.title and conversion.effective_time == NOW
    assert conversion.service_start is not None and conversion.service_stop is not None
    assert conversion.service_start <= conversion.service_stop
    assert conversion.confidentiality_code == "N" and conversion.language_code == "en-GB"
    assert conversion.practice_ods
    assert conversion.nhs_number == "9692136744"


@pytest.mark.parametrize("name", ["gpconnect-spec/split_plan", "uclh-xhuma/pathologyexample",
                                  "gpconnect-spec/diaryentries_response1", "gpconnect-spec/consultations_response1"])
def test_awkward_bundles_convert_with_warnings_lessons_24(name: str) -> None:
    """No Patient, no managingOrganization, entries without resource, duplicated ids: still a valid CCD."""
    conversion = converted(name)
    assert validate_bytes(conversion.xml).valid
    assert conversion.report["warnings"]


def test_unknown_resource_type_and_unresolvable_reference_are_reported() -> None:
    bundle = copy.deepcopy(load("gpconnect-spec/allergies_response2"))
    bundle["entry"].append({"resource": {"resourceType": "Basic", "id": "x1"}})
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "List":
            entry["resource"]["entry"].append({"item": {"reference": "AllergyIntolerance/missing"}})
    conversion = convert(bundle, CONTEXT)
    assert validate_bytes(conversion.xml).valid
    codes = {w["code"] for w in conversion.report["warnings"]}
    assert {"unknown-resource-type", "unresolved-reference"} <= codes
    basic = next(r for r in conversion.report["resources"] if r["resource"] == "Basic/x1")
    assert basic["outcome"] == "not-mapped" and "Basic" in basic["reason"]


@pytest.mark.parametrize("value", [{"resourceType": "Patient"}, [], {"resourceType": "Bundle", "type": "searchset"}])
def test_non_structured_record_is_refused(value: object) -> None:
    with pytest.raises(NotAStructuredRecord):
        convert(value, CONTEXT)  # type: ignore[arg-type]


def test_list_warnings_and_disabled_areas_reach_the_narrative_spec_8_5() -> None:
    text = converted("uclh-xhuma/9690938118").xml.decode()
    assert "Data in transit" in text or "Confidential items" in text or "awaiting filing" in text
    outcome = converted("gpconnect-spec/consultations_forwards_response1")
    assert "did not supply" in outcome.xml.decode()


def test_provenance_section_names_practice_and_time() -> None:
    document = tree(converted("uclh-xhuma/9690937286"))
    first_title = xpath(document, "//c:structuredBody/c:component[1]/c:section/c:title/text()")
    assert first_title == ["About this document"]
    text = "".join(xpath(document, "//c:structuredBody/c:component[1]/c:section/c:text//text()"))
    assert "retrieved 01-Jan-2025 12:00" in text and "ODS" in text


def test_every_mandatory_ccd_section_is_present(fixture_name: str) -> None:
    codes = set(xpath(tree(converted(fixture_name)), "//c:section/c:code/@code"))
    assert {"48765-2", "10160-0", "11450-4", "30954-2", "8716-3", "29762-2"} <= codes
