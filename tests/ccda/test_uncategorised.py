"""Other GP record entries (SPEC §8.4.12): uncategorised Observations, DocumentReferences, QuestionnaireResponses
— nothing dropped silently; GP Connect warnings (List warnings, disabled areas) reach the narrative (SPEC §8.5)."""

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
    section_titled,
    text_of,
    warnings,
)

OTHER = "Other GP record entries"
MY_TYPES = ("Observation", "DiagnosticReport", "Encounter", "ReferralRequest", "ProcedureRequest",
            "DocumentReference", "QuestionnaireResponse")


def test_uncategorised_observations_not_vital_or_social_are_listed_with_comments() -> None:
    conversion = converted("gp2gp-adaptor/gpc-access-structured")
    other = section_titled(tree(conversion), OTHER)
    narrative = text_of(other)
    assert "Etcher/engraver" in narrative and "Family member : Uncle" in narrative
    assert "Systolic arterial pressure" not in narrative  # a vital sign, shown once in Vital signs
    assert outcome(conversion, "Observation/DC9D8AFC-FCC8-446A-A379-5BC60F586DAC")["outcome"] == "narrative"
    assert other.xpath("c:text/c:paragraph[@styleCode='Bold'][contains(., 'Confidential items')]", namespaces=NS)


def test_document_reference_is_a_row_with_description_and_date() -> None:
    conversion = converted("gp2gp-adaptor/wiremock_correctPatientStructuredRecordResponseNormal")
    narrative = text_of(section_titled(tree(conversion), OTHER))
    assert "Christmas Party" in narrative
    assert "Referral Non-AbsentAttachment's Christmas Party (23-Dec-2021)" in narrative
    assert "22-Dec-2020 14:53" in narrative
    assert outcome(conversion, "DocumentReference/D7AF52BA-T3ST-C4S3-N0N0-F0C2DF916CEC")["outcome"] == "narrative"


def test_questionnaire_response_answers_are_readable() -> None:
    response = {"resourceType": "QuestionnaireResponse", "id": "q1", "status": "completed",
                "authored": "2024-03-01", "questionnaire": {"display": "PHQ-9"},
                "item": [{"linkId": "1", "text": "Little interest or pleasure", "answer": [{"valueInteger": 2}]},
                         {"linkId": "2", "text": "Feeling down", "answer": [{"valueString": "Several days"}]}]}
    conversion, root = run(bundle(response))
    narrative = text_of(section_titled(root, OTHER))
    assert "PHQ-9" in narrative and "Little interest or pleasure: 2" in narrative
    assert "Feeling down: Several days" in narrative
    assert outcome(conversion, "QuestionnaireResponse/q1")["outcome"] == "narrative"
    assert_valid(conversion)


def test_observation_in_no_list_is_still_shown_with_a_warning() -> None:
    listed = observation("listed", "1990681000006100", "Preferred method of contact: unknown")
    unlisted = observation("unlisted", "394995008", "Hospital prescription")
    conversion, root = run(bundle(gp_list("826501000000100", listed), listed, unlisted))
    key = "Observation/unlisted"
    assert outcome(conversion, key)["outcome"] == "narrative"
    assert any(w.get("resource") == key for w in warnings(conversion, "unlisted-observation"))
    narrative = text_of(section_titled(root, OTHER))
    assert "Hospital prescription" in narrative and "Not converted by any other section" in narrative
    assert_valid(conversion)


def test_the_actual_problem_of_a_problem_in_no_list_is_the_problems_entry_not_an_other_row() -> None:
    conversion = converted("uclh-xhuma/9692136744")
    key = "Observation/5000000000000000_fdb9b41000000000"  # Hospital prescription, a problem's actual problem
    assert outcome(conversion, key)["outcome"] == "entry" and outcome(conversion, key)["section"] == "problems"
    assert not any(w.get("resource") == key for w in warnings(conversion, "unlisted-observation"))
    assert "Hospital prescription" not in text_of(section_titled(tree(conversion), OTHER))


def test_disabled_uncategorised_area_is_stated_in_vital_signs_social_history_and_other_entries() -> None:
    outcome_resource = {"resourceType": "OperationOutcome", "id": "oo", "issue": [{
        "severity": "warning", "code": "not-supported", "diagnostics": "includeUncategorisedData",
        "details": {"coding": [{"system": "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1",
                                "code": "NOT_IMPLEMENTED"}], "text": "includeUncategorisedData has been disabled"}}]}
    other = observation("o1", "1990681000006100", "Preferred method of contact: unknown")
    conversion, root = run(bundle(gp_list("826501000000100", other), other, outcome_resource))
    for code in ("8716-3", "29762-2"):
        assert "includeUncategorisedData has been disabled" in text_of(section(root, code))
    assert "includeUncategorisedData has been disabled" in text_of(section_titled(root, OTHER))
    assert "Preferred method of contact" in text_of(section_titled(root, OTHER))
    assert_valid(conversion)


def test_every_resource_of_these_areas_in_every_fixture_is_accounted_for(fixture_name: str) -> None:
    for item in converted(fixture_name).report["resources"]:
        if item["type"] in MY_TYPES:
            assert item["outcome"] in ("entry", "narrative", "supporting"), item



def test_a_list_entry_naming_its_item_by_bare_id_shows_that_item_not_a_missing_item_row() -> None:
    # Some suppliers' Lists write "Obs-1" for "Observation/Obs-1" (the GP Connect spec's consultations_response1 does,
    # 47 times): the item is in the bundle, so saying "the GP record did not include it" would be false.
    pulse = observation("obs-pulse", "364075005", "Heart rate", valueQuantity={
        "value": 72, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"})
    note = observation("obs-note", "225323000", "Smoking cessation education")
    listed = gp_list("826501000000100", pulse, note)
    listed["entry"] = [{"item": {"reference": "obs-pulse"}}, {"item": {"reference": "obs-note"}}]
    conversion, root = run(bundle(listed, pulse, note))
    assert_valid(conversion)
    assert "did not include it" not in text_of(root)
    assert outcome(conversion, "Observation/obs-pulse")["outcome"] == "entry"
    [warning] = warnings(conversion, "reference-without-type")
    assert warning["message"].startswith("2 entries of list List/list-826501000000100 name their item by id alone")


def test_a_bare_id_two_resources_share_is_never_guessed() -> None:
    note = observation("shared-id", "225323000", "Smoking cessation education")
    document = {"resourceType": "DocumentReference", "id": "shared-id", "status": "current",
                "type": {"text": "Letter"}, "subject": {"reference": "Patient/p1"}}
    listed = gp_list("826501000000100", note)
    listed["entry"] = [{"item": {"reference": "shared-id"}}]
    conversion, root = run(bundle(listed, note, document))
    assert "Referenced item shared-id" in text_of(section_titled(root, OTHER))
    assert warnings(conversion, "reference-without-type") == []
