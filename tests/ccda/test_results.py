"""Results (SPEC §8.4.5): Result Organizer 4.1:2015-08-01 / Result Observation 4.2:2015-08-01 / Comment 4.64."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import (
    assert_valid,
    bundle,
    concept,
    gp_list,
    observation,
    outcome,
    run,
    section,
    text_of,
    warnings,
)

from xhuma.ccda.ucum import is_ucum

RESULTS = "30954-2"


def _report(*results: dict, status: str = "final", **extra: object) -> dict:
    return {"resourceType": "DiagnosticReport", "id": "r1", "status": status, "issued": "2024-05-02T09:00:00+00:00",
            "identifier": [{"system": "https://supplier.example/id", "value": "r1"}],
            "code": concept("721981007", "Diagnostic studies report"),
            "result": [{"reference": f"Observation/{r['id']}"} for r in results], **extra}


def test_result_organizer_4_1_per_test_group_holds_its_result_observations_4_2() -> None:
    root = tree(converted("gpconnect-spec/pathology_response1"))
    organizers = root.xpath("//c:organizer[c:templateId[@root='2.16.840.1.113883.10.20.22.4.1'"
                            " and @extension='2015-08-01']]", namespaces=NS)
    assert len(organizers) == 1
    organizer = organizers[0]
    assert organizer.get("classCode") == "BATTERY"
    assert organizer.xpath("c:code/@code", namespaces=NS) == ["26604007"]  # group header: full blood count
    assert organizer.xpath("c:templateId[not(@extension)]/@root", namespaces=NS) == ["2.16.840.1.113883.10.20.22.4.1"]
    observations = organizer.xpath("c:component/c:observation", namespaces=NS)
    assert len(observations) == 18
    assert organizer.xpath("c:effectiveTime/c:low/@value", namespaces=NS) == ["20190401110000+0000"]  # collection
    assert organizer.xpath("c:specimen//c:code/@code", namespaces=NS) == ["122555007"]


def test_result_observation_links_to_narrative_row_and_keeps_reference_range_text() -> None:
    root = tree(converted("gpconnect-spec/pathology_response1"))
    rbc = root.xpath("//c:observation[c:code/@code='1022451000000103']", namespaces=NS)[0]
    row_id = rbc.xpath("c:text/c:reference/@value", namespaces=NS)[0][1:]
    row = root.xpath(f"//c:tr[@ID='{row_id}']", namespaces=NS)[0]
    assert "Red blood cell count" in text_of(row) and "4.57" in text_of(row)
    assert rbc.xpath("c:referenceRange/c:observationRange/c:text/text()", namespaces=NS) == ["less than 3.8 to 5"]


def test_ucum_quantity_is_pq_with_unit_and_comparator_is_ivl_pq() -> None:
    b12 = observation("o1", "993391000000108", "Serum vitamin B12 level",
                      valueQuantity={"value": 1000, "comparator": ">=", "unit": "ng/L"},
                      referenceRange=[{"low": {"value": 200}, "high": {"value": 800}}])
    hb = observation("o2", "1022431000000105", "Haemoglobin", valueQuantity={"value": 142, "unit": "g/L"})
    conversion, root = run(bundle(gp_list("887191000000108", _report(b12, hb)), _report(b12, hb), b12, hb))
    value = root.xpath("//c:observation[c:code/@code='993391000000108']/c:value", namespaces=NS)[0]
    assert value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "IVL_PQ"
    low = value.find("c:low", NS)
    assert (low.get("value"), low.get("unit"), low.get("inclusive")) == ("1000", "ng/L", "true")
    ranges = root.xpath("//c:observation[c:code/@code='993391000000108']//c:observationRange/c:value/c:low/@unit",
                        namespaces=NS)
    assert ranges == ["ng/L"]  # the range takes the unit of the result
    hb_value = root.xpath("//c:observation[c:code/@code='1022431000000105']/c:value", namespaces=NS)[0]
    assert (hb_value.get("value"), hb_value.get("unit")) == ("142", "g/L")
    assert_valid(conversion)


def test_non_ucum_unit_keeps_its_number_with_the_unit_text_as_translation() -> None:
    odd = observation("o1", "1022541000000102", "White cell count", valueQuantity={"value": 5.7, "unit": "THOU/uL"})
    conversion, root = run(bundle(gp_list("887191000000108", _report(odd)), _report(odd), odd))
    value = root.xpath("//c:observation[c:code/@code='1022541000000102']/c:value", namespaces=NS)[0]
    assert value.get("nullFlavor") is None
    assert (value.get("value"), value.get("unit")) == ("5.7", "{THOU/uL}")
    assert value.xpath("c:translation/@value", namespaces=NS) == ["5.7"]
    assert value.xpath("c:translation/c:originalText/text()", namespaces=NS) == ["THOU/uL"]
    assert_valid(conversion)


def test_result_status_maps_fhir_status_to_result_status_value_set() -> None:
    pending = observation("o1", "1022541000000102", "White cell count", status="preliminary",
                          valueQuantity={"value": 5.7, "unit": "10*9/L"})
    conversion, root = run(bundle(gp_list("887191000000108", _report(pending, status="partial")),
                                  _report(pending, status="partial"), pending))
    assert root.xpath("//c:organizer/c:statusCode/@code", namespaces=NS) == ["active"]
    assert root.xpath("//c:organizer/c:component/c:observation/c:statusCode/@code", namespaces=NS) == ["active"]
    assert_valid(conversion)


def test_result_without_value_has_null_value_and_comment_activity_4_64() -> None:
    textual = observation("o1", "997201000000100", "Serum ACTH level", comment="Sample haemolysed\nRepeat test")
    conversion, root = run(bundle(gp_list("887191000000108", _report(textual)), _report(textual), textual))
    result = root.xpath("//c:observation[c:code/@code='997201000000100']", namespaces=NS)[0]
    assert result.xpath("c:value/@nullFlavor", namespaces=NS) == ["NI"]
    comment = result.xpath("c:entryRelationship[@typeCode='SUBJ'][@inversionInd='true']/c:act", namespaces=NS)[0]
    assert comment.xpath("c:templateId/@root", namespaces=NS) == ["2.16.840.1.113883.10.20.22.4.64"]
    assert comment.xpath("c:code/@code", namespaces=NS) == ["48767-8"]
    assert "Sample haemolysed" in text_of(section(root, RESULTS))
    assert_valid(conversion)


def test_filing_comments_and_original_request_are_shown_in_the_narrative() -> None:
    conversion = converted("uclh-xhuma/9692136744")
    narrative = text_of(section(tree(conversion), RESULTS))
    assert "Specimen ID: CH2101120LA" in narrative  # TPP filing comment of a report
    assert "Filing comment" in narrative
    key = "Observation/c200000000000000_0337000000000000_FilingComments"
    assert outcome(conversion, key)["outcome"] == "entry"  # a Comment Activity of the organizer
    request_narrative = text_of(section(tree(converted("gpconnect-spec/pathology_response1")), RESULTS))
    assert "Request: FBC - Full blood count" in request_narrative


def test_report_without_test_results_is_a_narrative_row_with_a_warning() -> None:
    filing = observation("c1", "37331000000100", "Comment note", comment="Specimen lost in transit")
    report = _report(filing)
    conversion, root = run(bundle(gp_list("887191000000108", report), report, filing))
    assert "Specimen lost in transit" in text_of(section(root, RESULTS))
    assert outcome(conversion, "DiagnosticReport/r1")["outcome"] == "narrative"
    assert warnings(conversion, "report-without-results")
    assert section(root, RESULTS).get("nullFlavor") == "NI"  # entries-required section without entries
    assert_valid(conversion)


def test_every_diagnostic_report_and_result_of_the_large_bundle_is_accounted_for() -> None:
    conversion = converted("uclh-xhuma/9692136744")
    for item in conversion.report["resources"]:
        if item["type"] in ("DiagnosticReport", "Observation"):
            assert item["outcome"] in ("entry", "narrative", "supporting"), item


def test_duplicate_supplier_identifiers_never_give_duplicate_entry_ids() -> None:
    root = tree(converted("gpconnect-spec/pathology_response1"))  # every Observation repeats one identifier
    ids = root.xpath("//c:section[c:code/@code='30954-2']//c:id/@root", namespaces=NS)
    assert len(ids) == len(set(ids))


def test_ucum_recogniser_accepts_lab_units_and_rejects_free_text() -> None:
    assert all(is_ucum(u) for u in ("10*9/L", "g/dL", "mmol/L", "mL/min/{1.73_m2}", "%", "/min", "mm[Hg]"))
    assert not any(is_ucum(u) for u in ("mmHg", "units/week", "THOU/uL", "x10^9/L", "IU/L", "", "per minute"))
