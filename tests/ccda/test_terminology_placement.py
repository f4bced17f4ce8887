"""Placement by SNOMED hierarchy (issue 13): procedures → Procedures, disorders and findings not on the problem list
→ Past Medical History, everything else stays in "Other GP record entries" with the reason; the terminology facts
are an input of the (pure) converter, and without them the documented fallbacks apply."""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import cache
from typing import Any

from tests.ccda.conftest import CONTEXT, load, section, tree, xpath

from xhuma.ccda import Conversion, convert
from xhuma.ccda.context import Hierarchy, TerminologyFacts
from xhuma.ccda.validate import validate_bytes
from xhuma.nhs.terminology import packaged_facts

RECORD = "uclh-xhuma/9690937286"
PROCEDURES, PAST_HISTORY = "47519-4", "11348-0"
PMH_TEMPLATE = "2.16.840.1.113883.10.20.22.2.20"


@cache
def with_packaged(name: str) -> Conversion:
    bundle = load(name)
    return convert(bundle, replace(CONTEXT, terminology=packaged_facts(bundle)))


def _outcomes(conversion: Conversion) -> dict[str, dict[str, str]]:
    return {r["resource"]: r for r in conversion.report["resources"]}


def test_procedures_become_dated_procedure_activity_entries() -> None:
    procedures = section(tree(with_packaged(RECORD)), PROCEDURES)
    entries = xpath(procedures, "c:entry/c:procedure")
    assert entries and procedures.get("nullFlavor") is None
    for procedure in entries:
        assert xpath(procedure, "c:templateId[@root='2.16.840.1.113883.10.20.22.4.14']")
        assert xpath(procedure, "c:effectiveTime/@value")
        assert xpath(procedure, "c:code/@codeSystem") == ["2.16.840.1.113883.6.96"]
    codes = {c for p in entries for c in xpath(p, "c:code/@code")}
    assert codes <= {code for code, h in packaged_facts(load(RECORD)).hierarchy.items() if h is Hierarchy.PROCEDURE}


def test_disorders_and_findings_not_on_the_problem_list_become_past_medical_history() -> None:
    document = tree(with_packaged(RECORD))
    history = xpath(document, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']")
    assert len(history) == 1
    observations = xpath(history[0], "c:entry/c:observation")
    assert observations
    facts = packaged_facts(load(RECORD)).hierarchy
    for observation in observations:
        assert xpath(observation, "c:templateId/@root")[0] == "2.16.840.1.113883.10.20.22.4.4"
        code = xpath(observation, "c:value/@code")[0]
        assert facts[code] in (Hierarchy.DISORDER, Hierarchy.FINDING)
    # never the active problem list: the Problems section holds only the practice's Conditions
    problems = section(document, "11450-4")
    placed = set(xpath(history[0], "c:entry/c:observation/c:value/@code"))
    assert not placed & set(xpath(problems, ".//c:observation/c:value/@code"))


def test_placed_entries_leave_other_gp_record_entries_and_the_rest_say_why() -> None:
    outcomes = _outcomes(with_packaged(RECORD))
    placed = [o for o in outcomes.values() if o.get("section") in ("procedures", "past_medical_history")]
    assert placed and all(o["outcome"] == "entry" for o in placed)
    # A record with codes the terminology source cannot classify (a consent statement, a supplier's local code)
    left = _outcomes(with_packaged("gp2gp-adaptor/gpc-access-structured"))
    other = [o for o in left.values() if o.get("section") == "uncategorised" and o["type"] == "Observation"]
    assert other and all("hierarchy is not known" in (o.get("reason") or "") for o in other)


def test_a_code_on_the_problem_list_is_not_repeated_as_past_history() -> None:
    bundle = copy.deepcopy(load(RECORD))
    conversion = convert(bundle, replace(CONTEXT, terminology=packaged_facts(bundle)))
    history = xpath(tree(conversion), f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']//c:value/@code")
    code = history[0]
    condition = {"resourceType": "Condition", "id": "on-the-list", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": code, "display": "on the problem list"}]},
        "subject": {"reference": "Patient/" + next(e["resource"]["id"] for e in bundle["entry"]
                                                   if e["resource"]["resourceType"] == "Patient")}}
    bundle["entry"].append({"resource": condition})
    again = tree(convert(bundle, replace(CONTEXT, terminology=packaged_facts(bundle))))
    assert code not in xpath(again, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']//c:value/@code")


def test_without_terminology_nothing_is_placed_by_hierarchy_and_the_report_says_which_items_fell_back() -> None:
    conversion = convert(load(RECORD), CONTEXT)
    document = tree(conversion)
    assert section(document, PROCEDURES).get("nullFlavor") == "NI"
    assert not xpath(document, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']")
    before = _outcomes(conversion)
    placed = [o["resource"] for o in _outcomes(with_packaged(RECORD)).values()
              if o.get("section") in ("procedures", "past_medical_history")]
    assert placed and all(before[key]["outcome"] == "narrative" for key in placed)
    in_other = [before[key] for key in placed if before[key]["section"] == "uncategorised"]
    assert in_other and all("no terminology" in o["reason"] for o in in_other)  # consultation items: in the notes
    assert any(w["code"] == "terminology-unavailable" for w in conversion.report["warnings"])


def test_the_converter_only_uses_the_facts_it_is_given() -> None:
    bundle = load(RECORD)
    facts = packaged_facts(bundle)
    only_procedures = TerminologyFacts({c: h for c, h in facts.hierarchy.items() if h is Hierarchy.PROCEDURE},
                                       source="test", version="1")
    document = tree(convert(bundle, replace(CONTEXT, terminology=only_procedures)))
    assert xpath(document, "//c:section[c:code/@code='47519-4']/c:entry")
    assert not xpath(document, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']")


def test_every_fixture_stays_schema_and_schematron_valid_with_the_packaged_terminology(fixture_name: str) -> None:
    result = validate_bytes(with_packaged(fixture_name).xml)
    assert result.schema_errors == []
    assert result.schematron_errors == []


def _activities(conversion: Conversion) -> list[Any]:
    return xpath(tree(conversion), "//c:section[c:code/@code='10160-0']/c:entry/c:substanceAdministration")


def test_dmd_route_fills_route_code_where_gp_connect_sends_none() -> None:
    name = "uclh-xhuma/9692136744"
    without = _activities(convert(load(name), CONTEXT))
    with_dmd = _activities(with_packaged(name))
    assert len(without) == len(with_dmd)
    filled = [(a, b) for a, b in zip(without, with_dmd, strict=True)
              if not xpath(a, "c:routeCode") and xpath(b, "c:routeCode")]
    assert filled, "some authorisations without a route gain dm+d's route"
    dmd = packaged_facts(load(name)).dmd
    for _, activity in filled:
        product = xpath(activity, "c:consumable//c:manufacturedMaterial/c:code/@code")[0]
        route = dmd[product].route
        assert route is not None and xpath(activity, "c:routeCode/@code") == [route[0]]
    # a route GP Connect sends is never replaced
    for a, b in zip(without, with_dmd, strict=True):
        if xpath(a, "c:routeCode"):
            assert xpath(a, "c:routeCode/@code") == xpath(b, "c:routeCode/@code")


def test_dmd_dose_form_is_the_administration_unit_of_a_countable_dose() -> None:
    for activity in _activities(with_packaged("uclh-xhuma/9692136744")):
        unit = xpath(activity, "c:administrationUnitCode")
        if unit:
            assert not xpath(activity, "c:doseQuantity/@unit")
            assert unit[0].get("codeSystem") == "2.16.840.1.113883.6.96"


ACCESS = "gp2gp-adaptor/gpc-access-structured"


def test_an_occupation_becomes_a_social_history_observation_of_employment() -> None:
    conversion = with_packaged(ACCESS)
    social = section(tree(conversion), "29762-2")
    occupations = xpath(social, "c:entry/c:observation[c:value/@code='265943003']")  # Etcher/engraver
    assert len(occupations) == 1
    occupation = occupations[0]
    assert xpath(occupation, "c:templateId/@root")[0] == "2.16.840.1.113883.10.20.22.4.38"
    assert xpath(occupation, "c:code/@code") == ["364703007"]  # Employment detail (Social History Type)
    assert xpath(occupation, "c:code/c:translation/@code") == ["11341-5"]  # History of Occupation
    assert "Engraver (entry added 13/1/2010" in "".join(social.itertext())
    assert _outcomes(conversion)["Observation/DC9D8AFC-FCC8-446A-A379-5BC60F586DAC"]["section"] == "social_history"


def test_a_history_of_code_is_past_medical_history_not_a_problem() -> None:
    document = tree(with_packaged(ACCESS))
    history = xpath(document, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']")[0]
    assert "161779006" in xpath(history, "c:entry/c:observation/c:value/@code")  # H/O: menstrual disorder
    assert "161779006" not in xpath(section(document, "11450-4"), ".//c:observation/c:value/@code")


def test_the_actual_problem_observation_is_the_problem_observation_not_an_other_row() -> None:
    conversion = with_packaged(ACCESS)
    document = tree(conversion)
    key = "Observation/24F1C94B-ECF2-42E2-BB90-20AF52CECA66"  # Myocardial infarction, actual problem of a problem
    assert _outcomes(conversion)[key]["outcome"] == "entry" and _outcomes(conversion)[key]["section"] == "problems"
    problem = xpath(section(document, "11450-4"), ".//c:observation[c:value/@code='22298006']")
    assert len(problem) == 1
    # the supplier gave the Observation the header's GUID: the Problem Observation carries it once
    assert xpath(problem[0], "c:id/@root") == ["24f1c94b-ecf2-42e2-bb90-20af52ceca66"]
    other = xpath(document, "//c:section[c:title='Other GP record entries']")[0]
    assert "Myocardial infarction" not in "".join(other.itertext())
    # the same happens without terminology: the problem list needs none
    assert _outcomes(convert(load(ACCESS), CONTEXT))[key]["outcome"] == "entry"


def test_an_actual_problem_with_its_own_identifier_adds_it_to_the_problem_observation() -> None:
    conversion = with_packaged("gpconnect-spec/consultations_response1")
    key = "Observation/Consultation1-Topic4-Category-History-Observation-5"  # Upper respiratory infection
    assert _outcomes(conversion)[key]["outcome"] == "entry"
    problem = xpath(section(tree(conversion), "11450-4"), ".//c:observation[c:value/@code='54150009']")
    assert len(problem) == 1 and len(xpath(problem[0], "c:id")) == 2
    assert len(set(xpath(problem[0], "c:id/@root"))) == 2


def test_codes_the_terminology_source_does_not_classify_fall_back_and_the_report_names_them() -> None:
    conversion = with_packaged(ACCESS)
    warned = [w for w in conversion.report["warnings"] if w["code"] == "terminology-code-unknown"]
    assert len(warned) == 1 and warned[0]["message"].startswith("2 coded entries")
    outcomes = _outcomes(conversion)
    for key in ("Observation/3AF29DAA-EA82-432C-9576-573FFD765BF9",  # Consent given for upload ... (unclassified)
                "Observation/94CC79CC-5979-4F67-A5A8-CA12C4C5B23A"):  # a supplier's local code
        assert outcomes[key]["outcome"] == "narrative" and outcomes[key]["section"] == "uncategorised"
        assert "hierarchy is not known to the terminology source" in outcomes[key]["reason"]
    assert not any(w["code"] == "terminology-unavailable" for w in conversion.report["warnings"])


def test_a_product_unknown_to_the_terminology_dmd_without_a_route_is_named_in_the_report() -> None:
    name = "uclh-xhuma/9692136744"
    without_dmd = convert(load(name), replace(CONTEXT, terminology=TerminologyFacts(source="test", version="1")))
    named = {w["resource"] for w in without_dmd.report["warnings"] if w["code"] == "dmd-code-unknown"}
    assert named and all(key.startswith("MedicationStatement/") for key in named)
    assert not any(w["code"] == "dmd-unavailable" for w in without_dmd.report["warnings"])  # terminology answered
    known = {w["resource"] for w in with_packaged(name).report["warnings"] if w["code"] == "dmd-code-unknown"}
    assert known < named  # the products the packaged dm+d knows gain their route instead


# Observations with no structured home, by fixture (docs/mapping/uncategorised.md "What stays here, and why"):
# the report reason each must carry.
NO_STRUCTURED_HOME = {
    "gpconnect-spec/skeleton_full_record": "no code and no value",  # Observation1-3: an id and nothing else
    "gpconnect-spec/immunizations_response3": "immunisation status",  # No consent for any immunization
}


def test_at_least_90_percent_of_the_observations_of_each_fixture_are_entries_with_the_packaged_terminology(
    fixture_name: str,
) -> None:
    observations = [o for o in with_packaged(fixture_name).report["resources"] if o["type"] == "Observation"]
    others = [o for o in observations if o["outcome"] != "entry"]
    if fixture_name in NO_STRUCTURED_HOME:
        assert others and all(NO_STRUCTURED_HOME[fixture_name] in o["reason"] for o in others)
    elif observations:
        assert len(observations) - len(others) >= 0.9 * len(observations), [o["resource"] for o in others]


def test_past_history_from_uncategorised_data_carries_its_list_warnings() -> None:
    document = tree(with_packaged(ACCESS))
    history = xpath(document, f"//c:section[c:templateId/@root='{PMH_TEMPLATE}']")[0]
    first = ["".join(p.itertext()) for p in xpath(history, "c:text/c:paragraph")[:3]]
    assert any("Data in transit" in p for p in first) and any("Confidential items" in p for p in first)
