"""Issue 13, placement: every structured GP entry reaches the EHR as structured data where no terminology is needed
— valued observations as entries (results, vital signs), numbers never lost, vaccines identified, supply units, no
"?" placeholders, referral services named, warnings once with a count, linked items shortened."""

from __future__ import annotations

from typing import Any

import pytest
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
)

from xhuma.ccda.ucum import NHS_UNITS, annotation, is_ucum

RESULTS = "30954-2"
VITALS = "8716-3"
IMMUNIZATIONS = "11369-6"
MEDICATIONS = "10160-0"
PLAN = "18776-5"
UNCATEGORISED = "826501000000100"
OTHER = "Other GP record entries"


def lab(oid: str, display: str, value: float, unit: str, when: str, **fields: Any) -> dict[str, Any]:
    return observation(oid, "1000" + oid[-1], display, effectiveDateTime=when,
                       valueQuantity={"value": value, "unit": unit}, **fields)


def test_valued_uncategorised_observations_become_result_entries_by_day_newest_first() -> None:
    alp = lab("o1", "ALP", 475, "U/L", "2024-05-01T09:00:00+00:00")
    crp = lab("o2", "CRP", 16, "mg/L", "2024-05-01T09:00:00+00:00")
    glucose = lab("o3", "Fasting glucose", 22, "mmol/L", "2024-05-02T08:00:00+00:00")
    conversion, root = run(bundle(gp_list(UNCATEGORISED, alp, crp, glucose), alp, crp, glucose))
    results = section(root, RESULTS)
    organizers = results.xpath("c:entry/c:organizer", namespaces=NS)
    assert [o.xpath("c:effectiveTime/c:low/@value", namespaces=NS)[0][:8] for o in organizers] == [
        "20240502", "20240501"]
    assert organizers[1].xpath("c:component/c:observation/c:value/@value", namespaces=NS) == ["475", "16"]
    assert organizers[1].xpath("c:component/c:observation/c:value/@unit", namespaces=NS) == ["U/L", "mg/L"]
    assert "Filed outside a laboratory report" in text_of(results)
    for key in ("Observation/o1", "Observation/o2", "Observation/o3"):
        assert outcome(conversion, key)["outcome"] == "entry"
        assert outcome(conversion, key)["section"] == "results"
    others = root.xpath(f"//c:section[c:title='{OTHER}']", namespaces=NS)
    assert not others or "ALP" not in text_of(others[0])  # not repeated as text
    assert_valid(conversion)


def test_results_filed_outside_a_report_sit_among_the_reports_by_date() -> None:
    old = lab("o9", "Haemoglobin", 131, "g/L", "2019-03-01T09:00:00+00:00")
    report = {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "issued": "2019-03-02T10:00:00Z",
              "code": concept("15220000", "Laboratory test"), "result": [{"reference": "Observation/o9"}]}
    recent = lab("o1", "ALT", 118, "IU/L 37C", "2024-05-01T09:00:00+00:00",
                 interpretation=concept("H", "High", "http://hl7.org/fhir/v2/0078"))
    conversion, root = run(bundle(gp_list("887191000000108", report), gp_list(UNCATEGORISED, recent), report, old,
                                  recent))
    organizers = section(root, RESULTS).xpath("c:entry/c:organizer", namespaces=NS)
    first_values = [o.xpath("c:component/c:observation/c:value/@value", namespaces=NS) for o in organizers]
    assert first_values == [["118"], ["131"]]  # the newest result first, not the report from five years ago
    alt = organizers[0].xpath("c:component/c:observation", namespaces=NS)[0]
    assert alt.xpath("c:value/@unit", namespaces=NS) == ["[IU]/L"]
    assert alt.xpath("c:interpretationCode/@code", namespaces=NS) == ["H"]
    assert_valid(conversion)


@pytest.mark.parametrize(("text", "ucum"), [("IU/L 37C", "[IU]/L"), ("mu/L", "m[IU]/L"), ("x10^9/L", "10*9/L"),
                                           ("u/L", "U/L"), ("mmol/L", "mmol/L"), ("mL/min/1.73m2", "mL/min/{1.73_m2}")])
def test_nhs_pathology_units_are_sent_as_ucum(text: str, ucum: str) -> None:
    result = lab("o1", "Test", 5, text, "2024-05-01T09:00:00+00:00")
    _, root = run(bundle(gp_list(UNCATEGORISED, result), result))
    value = section(root, RESULTS).xpath("//c:observation/c:value", namespaces=NS)[0]
    assert (value.get("value"), value.get("unit")) == ("5", ucum)
    assert not value.xpath("c:translation", namespaces=NS)


def test_every_unit_of_the_table_is_well_formed_ucum() -> None:
    assert all(is_ucum(ucum) for ucum in NHS_UNITS.values())


def test_a_unit_without_a_ucum_form_keeps_its_number_and_its_text() -> None:
    result = lab("o1", "Odd test", 3.5, "widgets per µbucket", "2024-05-01T09:00:00+00:00")
    conversion, root = run(bundle(gp_list(UNCATEGORISED, result), result))
    value = section(root, RESULTS).xpath("//c:observation/c:value", namespaces=NS)[0]
    assert value.get("value") == "3.5" and value.get("nullFlavor") is None
    assert value.get("unit") == "{widgets_per_ubucket}" == annotation("widgets per µbucket")
    assert value.xpath("c:translation/c:originalText/text()", namespaces=NS) == ["widgets per µbucket"]
    assert value.xpath("c:translation/@value", namespaces=NS) == ["3.5"]
    assert "3.5 widgets per µbucket" in text_of(section(root, RESULTS))
    assert_valid(conversion)


@pytest.mark.parametrize(("code", "display", "unit", "loinc"), [
    ("248333004", "Standing height", "cm", "8302-2"),
    ("18491006", "Peak expiratory flow rate", "L/min", "33452-4"),
])
def test_standing_height_and_peak_flow_are_vital_signs(code: str, display: str, unit: str, loinc: str) -> None:
    reading = observation("v1", code, display, valueQuantity={"value": 172, "unit": unit})
    conversion, root = run(bundle(gp_list(UNCATEGORISED, reading), reading))
    vital = section(root, VITALS).xpath("//c:organizer/c:component/c:observation", namespaces=NS)[0]
    assert vital.xpath("c:code/@code", namespaces=NS) == [loinc]
    assert vital.xpath("c:code/c:translation/@code", namespaces=NS) == [code]
    assert vital.xpath("c:value/@value", namespaces=NS) == ["172"]
    assert outcome(conversion, "Observation/v1")["section"] == "vital_signs"
    assert_valid(conversion)


def test_observations_sent_only_in_the_secondary_uncategorised_list_are_placed() -> None:
    conversion = converted("uclh-xhuma/9690937286")
    root = tree(conversion)
    vitals = section(root, VITALS)
    assert {"36.7", "37.1", "96", "97", "16"} <= set(vitals.xpath("//c:observation/c:value/@value", namespaces=NS))
    social = text_of(section(root, "29762-2"))
    assert "Alcohol units consumed per week" in social


def test_every_numeric_observation_of_every_fixture_is_an_entry(fixture_name: str) -> None:
    """A number is never lost: every Observation with a numeric valueQuantity is a structured entry."""
    from tests.ccda.conftest import load

    source = load(fixture_name)
    conversion = converted(fixture_name)
    outcomes = {o["resource"].split("#")[0]: o for o in conversion.report["resources"]}
    numeric = [e["resource"] for e in source.get("entry", []) if isinstance(e, dict)
               and (e.get("resource") or {}).get("resourceType") == "Observation"
               and isinstance(e["resource"].get("valueQuantity"), dict)
               and isinstance(e["resource"]["valueQuantity"].get("value"), int | float)]
    for resource in numeric:
        assert outcomes[f"Observation/{resource['id']}"]["outcome"] == "entry", resource["id"]


def test_immunisation_without_a_product_code_names_the_vaccination_procedure_as_the_vaccine() -> None:
    root = tree(converted("gpconnect-spec/immunizations_response2"))
    materials = section(root, IMMUNIZATIONS).xpath("//c:manufacturedMaterial/c:code", namespaces=NS)
    assert materials
    for code in materials:
        assert code.get("nullFlavor") is None
        assert code.get("codeSystem") == "2.16.840.1.113883.6.96" and code.get("code")


def test_supply_quantity_carries_its_unit_and_repeats_have_no_question_mark() -> None:
    conversion = converted("uclh-xhuma/9690937472")
    root = tree(conversion)
    meds = section(root, MEDICATIONS)
    quantities = meds.xpath("//c:supply/c:quantity", namespaces=NS)
    assert quantities and all(q.get("unit") for q in quantities)
    assert any(q.xpath("c:translation/c:originalText/text()", namespaces=NS) for q in quantities)
    assert "?" not in "".join(line for line in meds.xpath(".//c:td/text()", namespaces=NS) if "Repeats" in line)
    assert "Repeats issued: 1" in text_of(meds)


def test_dosage_text_is_literal_text_of_the_free_text_sig_as_well_as_its_reference() -> None:
    root = tree(converted("uclh-xhuma/9690937472"))
    sigs = section(root, MEDICATIONS).xpath(
        "//c:substanceAdministration[c:templateId/@root='2.16.840.1.113883.10.20.22.4.147']/c:text", namespaces=NS)
    assert sigs
    for text in sigs:
        assert (text.text or "").strip()
        assert text.xpath("c:reference/@value", namespaces=NS)[0].startswith("#")


def test_a_warning_repeated_by_many_lists_is_stated_once_with_their_count() -> None:
    root = tree(converted("gp2gp-adaptor/gpc-access-structured"))
    rows = root.xpath("//c:table[c:caption='Warnings from the GP system']/c:tbody/c:tr", namespaces=NS)
    transit = [text_of(r) for r in rows if "Data in transit" in text_of(r)]
    assert len(transit) == 1
    assert "(10 lists:" in transit[0]


def test_linked_items_of_a_problem_are_one_short_line_with_counts() -> None:
    root = tree(converted("uclh-xhuma/9690937286"))
    cells = root.xpath("//c:td[.//text()[starts-with(., 'Linked:')]]", namespaces=NS)
    assert cells
    for cell in cells:
        lines = [t for t in cell.xpath(".//text()") if t.startswith("Linked:")]
        assert len(lines) == 1 and len(lines[0]) < 300
    everything = " ".join(t for cell in cells for t in cell.xpath(".//text()"))
    assert "Comment note (×8)" in everything and "(19 linked items)" in everything and " more (" in everything


def test_referral_to_a_service_names_the_service_and_its_provider() -> None:
    trust = {"resourceType": "Organization", "id": "org9", "name": "City Hospital NHS Trust",
             "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RXX"}]}
    service = {"resourceType": "HealthcareService", "id": "hs1", "name": "Two week wait breast clinic",
               "providedBy": {"reference": "Organization/org9"}}
    referral = {"resourceType": "ReferralRequest", "id": "rr1", "status": "active", "intent": "order",
                "authoredOn": "2024-04-01", "serviceRequested": [concept("183519002", "Referral to breast clinic")],
                "requester": {"agent": {"reference": "Practitioner/gp1"}},
                "recipient": [{"reference": "HealthcareService/hs1"}]}
    conversion, root = run(bundle(gp_list("792931000000107", referral), referral, service, trust))
    plan = section(root, PLAN)
    name = plan.xpath("//c:encounter/c:performer/c:assignedEntity/c:representedOrganization/c:name/text()",
                      namespaces=NS)
    assert name == ["Two week wait breast clinic (City Hospital NHS Trust)"]
    assert "Two week wait breast clinic (City Hospital NHS Trust)" in text_of(plan)
    assert outcome(conversion, "HealthcareService/hs1")["outcome"] == "supporting"
    assert_valid(conversion)


@pytest.mark.parametrize(("dose", "unit"), [
    ({"value": 0.5, "unit": "ml"}, "ml"),
    ({"value": 5, "unit": "millilitres"}, "mL"),
    ({"value": 1, "unit": "tablet", "system": "http://snomed.info/sct", "code": "428673006"}, None),
    ({"value": 2, "unit": "puffs"}, None),
])
def test_a_dose_carries_a_ucum_unit_when_its_text_has_one_and_a_countable_form_none(
        dose: dict[str, Any], unit: str | None) -> None:
    vaccination = {"resourceType": "Immunization", "id": "im1", "status": "completed", "notGiven": False,
                   "date": "2024-03-01", "primarySource": True, "doseQuantity": dose,
                   "vaccineCode": concept("39114911000001105", "Influenza vaccine", "https://dmd.nhs.uk")}
    conversion, root = run(bundle(gp_list("1102181000000102", vaccination), vaccination))
    quantity = section(root, IMMUNIZATIONS).xpath("//c:substanceAdministration/c:doseQuantity", namespaces=NS)[0]
    assert (quantity.get("value"), quantity.get("unit")) == (str(dose["value"]), unit)
    assert_valid(conversion)
