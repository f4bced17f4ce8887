"""Vital signs (SPEC §8.4.6): Vital Signs Organizer 4.26:2015-08-01 / Vital Sign Observation 4.27:2014-06-09."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import (
    assert_valid,
    bundle,
    gp_list,
    observation,
    outcome,
    run,
    section,
    text_of,
    warnings,
)

VITALS = "8716-3"


def test_vital_signs_are_taken_from_uncategorised_data_with_loinc_codes_and_snomed_translations() -> None:
    conversion = converted("gpconnect-spec/uncategorised_response1")
    vitals = section(tree(conversion), VITALS)
    organizers = vitals.xpath("c:entry/c:organizer", namespaces=NS)
    assert len(organizers) == 1  # three readings at the same time → one organizer
    organizer = organizers[0]
    assert organizer.xpath("c:code/@code", namespaces=NS) == ["46680005"]
    assert organizer.xpath("c:code/c:translation/@code", namespaces=NS) == ["74728-7"]
    codes = organizer.xpath("c:component/c:observation/c:code/@code", namespaces=NS)
    assert sorted(codes) == ["59408-5", "8310-5", "9279-1"]
    temperature = organizer.xpath("c:component/c:observation[c:code/@code='8310-5']", namespaces=NS)[0]
    assert temperature.xpath("c:code/c:translation/@code", namespaces=NS) == ["703421000"]
    assert (temperature.find("c:value", NS).get("value"), temperature.find("c:value", NS).get("unit")) == (
        "36.7", "Cel")
    resp = organizer.xpath("c:component/c:observation[c:code/@code='9279-1']/c:value/@unit", namespaces=NS)
    assert resp == ["/min"]  # "{resps}/min" normalised to the Vital Sign unit


def test_blood_pressure_panel_components_become_systolic_and_diastolic_observations() -> None:
    vitals = section(tree(converted("gp2gp-adaptor/gpc-access-structured")), VITALS)
    organizer = vitals.xpath("c:entry/c:organizer[c:effectiveTime/@value='20100714175500+0100']", namespaces=NS)[0]
    values = {o.xpath("string(c:code/@code)", namespaces=NS): o.xpath("string(c:value/@value)", namespaces=NS)
              for o in organizer.xpath("c:component/c:observation", namespaces=NS)}
    assert values == {"8480-6": "120", "8462-4": "75"}
    assert organizer.xpath("c:component/c:observation/c:value/@unit", namespaces=NS) == ["mm[Hg]", "mm[Hg]"]


def test_vital_signs_are_not_repeated_as_other_gp_record_entries() -> None:
    conversion = converted("gpconnect-spec/uncategorised_response1")
    root = tree(conversion)
    other = root.xpath("//c:section[c:title='Other GP record entries']", namespaces=NS)
    assert not other or "Respiratory rate" not in text_of(other[0])
    key = "Observation/Consultation1-topic2-category-Examination-Observation-3"
    assert outcome(conversion, key)["section"] == "vital_signs"


def test_reading_with_a_non_ucum_unit_is_a_text_row_and_a_warning() -> None:
    weight = observation("w1", "27113001", "Body weight", valueQuantity={"value": 11, "unit": "stone"})
    conversion, root = run(bundle(gp_list("826501000000100", weight), weight))
    vitals = section(root, VITALS)
    assert "11 stone" in text_of(vitals)
    assert vitals.get("nullFlavor") == "NI"  # no structured vital sign could be made
    assert warnings(conversion, "vital-sign-not-structured")
    assert outcome(conversion, "Observation/w1")["outcome"] == "narrative"
    others = root.xpath("//c:section[c:title='Other GP record entries']", namespaces=NS)
    assert all("11 stone" not in text_of(other) for other in others)  # shown once, in Vital signs
    assert_valid(conversion)


def test_readings_at_different_times_get_separate_organizers_and_are_valid() -> None:
    pulse = observation("p1", "364075005", "Heart rate", valueQuantity={"value": 72, "unit": "bpm"})
    bmi = observation("b1", "60621009", "Body mass index", valueQuantity={"value": 24.1, "unit": "kg/m2"},
                      effectiveDateTime="2023-01-01")
    conversion, root = run(bundle(gp_list("826501000000100", pulse, bmi), pulse, bmi))
    organizers = section(root, VITALS).xpath("c:entry/c:organizer", namespaces=NS)
    assert [o.xpath("string(c:effectiveTime/@value)", namespaces=NS) for o in organizers] == [
        "20240501100000+0000", "20230101"]  # most recent first
    assert_valid(conversion)


def test_no_vital_signs_gives_a_null_flavored_section() -> None:
    vitals = section(tree(converted("gp2gp-adaptor/sampleJson_empty_lists")), VITALS)
    assert vitals.get("nullFlavor") == "NI"
    assert not vitals.xpath("c:entry", namespaces=NS)
    assert "no entries" in text_of(vitals)  # the uncategorised list's emptyReason is shown
