"""Confidential items (hazard log H5): an item the GP marked not for disclosure to the patient says so where it is
shown, and items GP Connect withheld are announced, never silently missing."""

from __future__ import annotations

from tests.ccda.crafted import assert_valid, bundle, gp_list, observation, run, section, text_of

NOPAT = {"security": [{"system": "http://hl7.org/fhir/v3/ActCode", "code": "NOPAT",
                       "display": "no disclosure to patient, family or caregivers without attending provider's "
                                  "authorization"}]}
CONFIDENTIAL_ITEMS = {"url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-ListWarningCode-1",
                      "valueCode": "confidential-items"}


def test_a_nopat_result_is_marked_not_for_disclosure_to_the_patient_in_its_row() -> None:
    secret = observation("o1", "10001", "HIV viral load", meta=NOPAT,
                         valueQuantity={"value": 40, "unit": "copies/mL"})
    plain = observation("o2", "10002", "Sodium", valueQuantity={"value": 140, "unit": "mmol/L"})
    conversion, root = run(bundle(gp_list("826501000000100", secret, plain), secret, plain))
    rows = section(root, "30954-2").xpath("//*[local-name()='tr'][.//*[local-name()='td']]")
    marked = [text_of(r) for r in rows if "Not for disclosure to the patient (NOPAT)" in text_of(r)]
    assert len(marked) == 1 and "HIV viral load" in marked[0]
    assert_valid(conversion)


def test_items_withheld_as_confidential_are_announced_in_the_section_and_the_provenance() -> None:
    reading = observation("o1", "10001", "Sodium", valueQuantity={"value": 140, "unit": "mmol/L"})
    conversion, root = run(bundle(gp_list("826501000000100", reading, extension=[CONFIDENTIAL_ITEMS]), reading))
    announcement = "Confidential items: some items have been excluded"
    assert announcement in text_of(section(root, "30954-2"))  # the section the List fed
    warnings_table = root.xpath("//*[local-name()='table'][*[local-name()='caption']='Warnings from the GP system']")
    assert warnings_table and announcement in text_of(warnings_table[0])
    assert_valid(conversion)
