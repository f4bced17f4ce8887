"""Immunisations (SPEC §8.4.4; LESSONS 24: a non-empty immunisation list must not break the document)."""

from __future__ import annotations

from lxml import etree
from tests.ccda.conftest import CONTEXT, converted, load, section, tree, xpath

from xhuma.ccda import convert
from xhuma.ccda.validate import validate_bytes

IMMUNISATIONS = "11369-6"


def test_given_and_not_given_use_negation_ind() -> None:
    conversion = converted("gpconnect-spec/immunizations_response2")
    assert validate_bytes(conversion.xml).valid
    activities = xpath(section(tree(conversion), IMMUNISATIONS), "c:entry/c:substanceAdministration")
    assert sorted(a.get("negationInd") for a in activities) == ["false", "true"]


def test_not_given_carries_a_refusal_reason_with_the_snomed_reason() -> None:
    document = tree(converted("gpconnect-spec/immunizations_response2"))
    refused = xpath(section(document, IMMUNISATIONS), "c:entry/c:substanceAdministration[@negationInd='true']")[0]
    reason = xpath(refused, "c:entryRelationship[@typeCode='RSON']/c:observation")[0]
    assert xpath(reason, "c:templateId/@root") == ["2.16.840.1.113883.10.20.22.4.53"]
    assert xpath(reason, "c:code/c:translation/@code") == ["213257006"]


def test_unknown_vaccine_without_a_vaccination_procedure_is_null_flavored_with_text() -> None:
    source = load("gpconnect-spec/immunizations_response2")
    for entry in source["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Immunization":
            resource["extension"] = [e for e in resource.get("extension", [])
                                     if not e["url"].endswith("VaccinationProcedure-1")]
    document = etree.fromstring(convert(source, CONTEXT).xml)
    codes = xpath(section(document, IMMUNISATIONS), "//c:manufacturedMaterial/c:code")
    assert codes and all(c.get("nullFlavor") == "UNK" for c in codes)
    assert all(xpath(c, "c:originalText") for c in codes)


def test_dose_sequence_route_site_lot_are_structured() -> None:
    document = tree(converted("gpconnect-spec/immunizations_response2"))
    activity = xpath(section(document, IMMUNISATIONS), "c:entry/c:substanceAdministration")[0]
    assert xpath(activity, "c:repeatNumber/@value") == ["1"]
    assert xpath(activity, "c:routeCode/@code") == ["34206005"]
    assert xpath(activity, "c:approachSiteCode/@code") == ["368209003"]
    assert xpath(activity, "c:doseQuantity/@unit") == ["ml"]
    assert xpath(activity, ".//c:lotNumberText/text()") == ["AAJN11K"]


def test_immunisation_status_observation_is_a_narrative_row() -> None:
    conversion = converted("gpconnect-spec/immunizations_response3")
    outcome = next(r for r in conversion.report["resources"] if r["type"] == "Observation")
    assert outcome["outcome"] == "narrative"
    assert "No consent for any immunization" in conversion.xml.decode()
