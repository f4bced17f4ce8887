"""Problems (SPEC §8.4.3; LESSONS 22)."""

from __future__ import annotations

from tests.ccda.conftest import CONTEXT, bundle_with, gp_list, section, tree, xpath

from xhuma.ccda import convert
from xhuma.ccda.validate import validate_bytes

PROBLEMS = "11450-4"


def _problem(status: str = "active", **extra: object):
    condition = {
        "resourceType": "Condition", "id": "c1", "clinicalStatus": status,
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/CareConnect-GPC-ProblemHeader-Condition-1"]},
        "identifier": [{"system": "https://supplier.example/problem", "value": "P-1"}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]},
        "assertedDate": "2020-06-01", "onsetDateTime": "2019-03", **extra,
    }
    conversion = convert(bundle_with(condition, lists=[gp_list("717711000000103", "Condition/c1")]), CONTEXT)
    assert validate_bytes(conversion.xml).valid
    return xpath(section(tree(conversion), PROBLEMS), "c:entry/c:act")[0]


def test_onset_is_onset_datetime_not_asserted_date_lessons_22() -> None:
    act = _problem()
    observation = xpath(act, "c:entryRelationship/c:observation")[0]
    assert xpath(observation, "c:effectiveTime/c:low/@value") == ["201903"]
    assert xpath(act, "c:effectiveTime/c:low/@value") == ["20200601"]


def test_clinical_status_is_not_copied_into_observation_status_lessons_22() -> None:
    for fhir, concern in (("active", "active"), ("inactive", "completed")):
        act = _problem(fhir, abatementDateTime="2021-01-01") if fhir == "inactive" else _problem(fhir)
        assert xpath(act, "c:statusCode/@code") == [concern]
        assert xpath(act, "c:entryRelationship/c:observation/c:statusCode/@code") == ["completed"]


def test_abatement_closes_concern_and_observation() -> None:
    act = _problem("inactive", abatementDateTime="2021-01-01")
    assert xpath(act, "c:effectiveTime/c:high/@value") == ["20210101"]
    assert xpath(act, "c:entryRelationship/c:observation/c:effectiveTime/c:high/@value") == ["20210101"]


def test_inactive_without_abatement_has_unknown_end_spec_8_3_rule_5() -> None:
    act = _problem("inactive")
    assert xpath(act, "c:effectiveTime/c:high/@nullFlavor") == ["UNK"]


def test_unknown_onset_is_null_flavored() -> None:
    act = _problem(onsetDateTime=None)
    assert xpath(act, "c:entryRelationship/c:observation/c:effectiveTime/c:low/@nullFlavor") == ["UNK"]


def test_problem_code_has_loinc_translation_and_value_is_the_condition() -> None:
    act = _problem()
    observation = xpath(act, "c:entryRelationship/c:observation")[0]
    assert xpath(observation, "c:code/@code") == ["55607006"]
    assert xpath(observation, "c:code/c:translation/@code") == ["75326-9"]
    assert xpath(observation, "c:value/@code") == ["38341003"]
