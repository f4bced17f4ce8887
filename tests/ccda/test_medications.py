"""Medications (SPEC §8.4.2; LESSONS 23, 24)."""

from __future__ import annotations

from tests.ccda.conftest import CONTEXT, bundle_with, converted, gp_list, section, tree, xpath

from xhuma.ccda import ConversionContext, ProductCoding, convert
from xhuma.ccda.validate import validate_bytes

MEDS = "10160-0"
ACTIVITY = "c:entry/c:substanceAdministration"


def _statement(status: str = "active", **dosage: object) -> list[dict]:
    medication = {"resourceType": "Medication", "id": "m1",
                  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "322236009",
                                       "display": "Paracetamol 500mg tablets"}]}}
    plan = {
        "resourceType": "MedicationRequest", "id": "r1", "intent": "plan", "status": status,
        "identifier": [{"system": "https://supplier.example/rx", "value": "PLAN-1"}],
        "medicationReference": {"reference": "Medication/m1"}, "authoredOn": "2024-01-01",
        "dispenseRequest": {"quantity": {"extension": [{
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-MedicationQuantityText-1",
            "valueString": "28 tablet"}]}, "validityPeriod": {"start": "2024-01-01"}},
        "extension": [{"url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-"
                              "MedicationRepeatInformation-1",
                       "extension": [{"url": "numberOfRepeatPrescriptionsAllowed", "valuePositiveInt": 6}]}],
    }
    statement = {
        "resourceType": "MedicationStatement", "id": "s1", "status": status,
        "identifier": [{"system": "https://supplier.example/ms", "value": "MS-1"}],
        "basedOn": [{"reference": "MedicationRequest/r1"}], "medicationReference": {"reference": "Medication/m1"},
        "effectivePeriod": {"start": "2024-01-01"}, "dateAsserted": "2024-01-01",
        "dosage": [{"text": "One tablet four times a day", **dosage}],
    }
    return [medication, plan, statement]


def _activity(status: str = "active", **dosage: object):
    conversion = convert(bundle_with(*_statement(status, **dosage),
                                     lists=[gp_list("933361000000108", "MedicationStatement/s1")]), CONTEXT)
    assert validate_bytes(conversion.xml).valid
    return xpath(section(tree(conversion), MEDS), ACTIVITY)[0], conversion


def test_route_comes_from_dosage_route_never_method_lessons_23() -> None:
    activity, _ = _activity(method={"coding": [{"system": "http://snomed.info/sct", "code": "419652001",
                                                "display": "Take"}]},
                            route={"coding": [{"system": "http://snomed.info/sct", "code": "26643006",
                                               "display": "Oral route"}]})
    assert xpath(activity, "c:routeCode/@code") == ["26643006"]
    no_route, _ = _activity(method={"coding": [{"system": "http://snomed.info/sct", "code": "419652001"}]})
    assert xpath(no_route, "c:routeCode") == []


def test_authorisation_is_a_supply_order_in_intent_mood_lessons_23() -> None:
    activity, _ = _activity()
    supply = xpath(activity, "c:entryRelationship[@typeCode='REFR']/c:supply")
    assert len(supply) == 1
    assert supply[0].get("moodCode") == "INT"
    assert xpath(supply[0], "c:repeatNumber/@value") == ["6"]
    assert xpath(activity, "//c:substanceAdministration[@moodCode='INT']") == []


def test_quantity_text_alone_never_reads_none_lessons_23() -> None:
    _, conversion = _activity()
    text = conversion.xml.decode()
    assert "Quantity: 28 tablet" in text
    assert "None" not in text


def test_statement_status_maps_to_act_status() -> None:
    for fhir, cda in (("active", "active"), ("completed", "completed"), ("stopped", "aborted")):
        activity, _ = _activity(fhir)
        assert xpath(activity, "c:statusCode/@code") == [cda]


def test_free_text_sig_and_dose_and_prn() -> None:
    activity, _ = _activity(doseQuantity={"value": 1}, asNeededBoolean=True,
                            timing={"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}})
    assert xpath(activity, "c:doseQuantity/@value") == ["1"]
    assert xpath(activity, "c:effectiveTime[@operator='A']/c:period/@value") == ["6"]
    assert xpath(activity, "c:effectiveTime[@operator='A']/c:period/@unit") == ["h"]
    assert "2.16.840.1.113883.10.20.22.4.25" in xpath(activity, "c:precondition/c:criterion/c:templateId/@root")
    sig = xpath(activity, "c:entryRelationship[@typeCode='COMP']/c:substanceAdministration/c:text/c:reference/@value")
    assert sig and sig[0].startswith("#med-")


def test_free_text_only_dose_is_null_flavored() -> None:
    activity, _ = _activity()
    assert xpath(activity, "c:doseQuantity/@nullFlavor") == ["UNK"]


def test_product_coding_translation_mode_spec_10_1() -> None:
    bundle = bundle_with(*_statement(), lists=[gp_list("933361000000108", "MedicationStatement/s1")])
    conversion = convert(bundle, ConversionContext(now=CONTEXT.now, product_coding=ProductCoding.TRANSLATION))
    assert validate_bytes(conversion.xml).valid
    code = xpath(tree(conversion), "//c:manufacturedMaterial/c:code")[0]
    assert code.get("nullFlavor") == "OTH"
    assert xpath(code, "c:translation/@code") == ["322236009"]


def test_every_statement_of_a_large_record_becomes_one_activity() -> None:
    document = tree(converted("uclh-xhuma/9692136744"))
    assert len(xpath(section(document, MEDS), ACTIVITY)) == 67


def test_plan_without_statement_is_shown_not_dropped_lessons_24() -> None:
    conversion = converted("gpconnect-spec/split_plan")
    outcomes = [r for r in conversion.report["resources"] if r["type"] == "MedicationRequest"]
    assert outcomes and all(r["outcome"] == "narrative" for r in outcomes)
