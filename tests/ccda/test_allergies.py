"""Allergies (SPEC §8.4.1; SCAL GPC-STR-TST-ALG-*; LESSONS 20, 21, 24)."""

from __future__ import annotations

import copy

from tests.ccda.conftest import CONTEXT, bundle_with, converted, gp_list, load, section, tree, xpath

from xhuma.ccda import convert
from xhuma.ccda.validate import validate_bytes

ALLERGIES = "48765-2"
OBS = "c:entry/c:act/c:entryRelationship/c:observation"


def _allergy(code: str = "91936005", display: str = "Allergy to penicillin", **extra: object) -> dict:
    return {
        "resourceType": "AllergyIntolerance", "id": "a1", "clinicalStatus": "active",
        "identifier": [{"system": "https://supplier.example/allergy", "value": "A-1"}],
        "category": ["medication"], "type": "allergy", "assertedDate": "2020-01-02",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]}, **extra,
    }


def _convert(*resources: dict, lists: list[dict]) -> object:
    conversion = convert(bundle_with(*resources, lists=lists), CONTEXT)
    assert validate_bytes(conversion.xml).valid
    return tree(conversion)


def test_gpc_str_tst_alg_07_no_known_allergies_is_a_negated_assertion() -> None:
    nka = _allergy("716186003", "No known allergy")
    document = _convert(nka, lists=[gp_list("886921000000105", "AllergyIntolerance/a1")])
    observation = xpath(section(document, ALLERGIES), OBS)[0]
    assert observation.get("negationInd") == "true"
    assert xpath(observation, "c:value/@code") == ["419199007"]
    assert xpath(observation, "c:participant/c:participantRole/c:playingEntity/c:code/@nullFlavor") == ["NA"]
    assert section(document, ALLERGIES).get("nullFlavor") is None


def test_gpc_str_tst_alg_08_nothing_recorded_is_a_null_section_not_a_negation() -> None:
    empty = gp_list("886921000000105", emptyReason={"coding": [{"code": "no-content-recorded",
                                                              "display": "No Content Recorded"}]},
                    note=[{"text": "Information not available"}])
    del empty["entry"]
    document = _convert(lists=[empty])
    allergies = section(document, ALLERGIES)
    assert allergies.get("nullFlavor") == "NI"
    assert xpath(allergies, "c:entry") == []
    text = "".join(xpath(allergies, "c:text//text()"))
    assert "Information not available" in text and "No Content Recorded" in text


def test_environmental_allergy_is_not_coded_as_drug_allergy_lessons_21() -> None:
    document = tree(converted("gpconnect-spec/allergies_response1"))
    values = xpath(section(document, ALLERGIES), f"{OBS}/c:value/@code")
    assert "419199007" in values  # peanut, category environment + type allergy
    assert values.count("416098002") == 2  # the two medication allergies only


def test_ended_allergy_is_never_active_and_has_an_end_lessons_21() -> None:
    document = tree(converted("gpconnect-spec/allergies_response1"))
    acts = xpath(section(document, ALLERGIES), "c:entry/c:act")
    statuses = [xpath(a, "c:statusCode/@code")[0] for a in acts]
    assert statuses.count("completed") == 1 and statuses.count("active") == 3
    ended = next(a for a in acts if xpath(a, "c:statusCode/@code") == ["completed"])
    assert xpath(ended, "c:effectiveTime/c:high/@value") == ["20180301"]


def test_list_is_found_by_code_not_title_lessons_20() -> None:
    renamed = copy.deepcopy(load("gpconnect-spec/allergies_response2"))
    for entry in renamed["entry"]:
        if entry["resource"]["resourceType"] == "List":
            entry["resource"]["title"] = "Something else entirely"
    before = xpath(section(tree(converted("gpconnect-spec/allergies_response2")), ALLERGIES), "c:entry")
    after = xpath(section(tree(convert(renamed, CONTEXT)), ALLERGIES), "c:entry")
    assert len(before) == len(after) == 1


def test_criticality_severity_and_reaction_are_structured() -> None:
    document = tree(converted("gpconnect-spec/allergies_response1"))
    allergies = section(document, ALLERGIES)
    assert set(xpath(allergies, "//c:observation[c:code/@code='82606-5']/c:value/@code")) == {"CRITL", "CRITH"}
    reactions = xpath(allergies, "//c:observation[c:templateId/@root='2.16.840.1.113883.10.20.22.4.9']")
    assert {xpath(r, "c:value/@code")[0] for r in reactions} >= {"241933001", "304386008"}
    severities = xpath(allergies, "//c:observation[c:code/@code='SEV']/c:value/@code")
    assert "24484000" in severities and "255604002" in severities


def test_description_display_is_the_agent_text() -> None:
    document = tree(converted("gpconnect-spec/allergies_response1"))
    assert "Peanut" in "".join(xpath(section(document, ALLERGIES), "c:text//text()"))


def test_transfer_degraded_code_is_kept_and_flagged() -> None:
    document = tree(converted("gpconnect-spec/allergies_response1"))
    allergies = section(document, ALLERGIES)
    assert xpath(allergies, "//c:playingEntity/c:code[@code='196461000000101']")
    assert "transfer-degraded" in "".join(xpath(allergies, "c:text//text()"))


def test_one_broken_allergy_degrades_only_itself_lessons_24(monkeypatch: object) -> None:
    """An allergy whose conversion raises becomes a narrative row plus a report warning; the others and the
    section survive, and the document stays valid."""
    from xhuma.ccda.sections import allergies as module

    original = module.AllergyConcernAct.build

    def build(self: module.AllergyConcernAct) -> None:
        if self.allergy.get("id") == "a1":
            raise ValueError("simulated defect")
        original(self)

    monkeypatch.setattr(module.AllergyConcernAct, "build", build)  # type: ignore[attr-defined]
    second = _allergy(display="Latex allergy")
    second["id"] = "a2"
    bundle = bundle_with(_allergy(), second, lists=[gp_list("886921000000105", "AllergyIntolerance/a1",
                                                            "AllergyIntolerance/a2")])
    conversion = convert(bundle, CONTEXT)
    assert validate_bytes(conversion.xml).valid
    allergies = section(tree(conversion), ALLERGIES)
    assert len(xpath(allergies, "c:entry")) == 1
    assert "Allergy to penicillin" in "".join(xpath(allergies, "c:text//text()"))
    outcome = next(r for r in conversion.report["resources"] if r["resource"] == "AllergyIntolerance/a1")
    assert outcome["outcome"] == "narrative" and "ValueError" in outcome["reason"]
    assert any(w["code"] == "entry-conversion-failed" for w in conversion.report["warnings"])
