"""Issue 3 coverage rule: every clinical resource of every fixture is accounted for — an entry, a narrative row,
a supporting role, or a report line that explains why not. Nothing is dropped silently (LESSONS 24/25)."""

from __future__ import annotations

import pytest
from tests.ccda.conftest import converted, load, tree, xpath

from xhuma.ccda.bundle import BundleIndex
from xhuma.ccda.document import CLINICAL_REASON

CLINICAL_TYPES = ("AllergyIntolerance", "MedicationStatement", "Immunization", "DiagnosticReport", "Observation",
                  "Encounter", "ReferralRequest", "ProcedureRequest", "DocumentReference", "Condition")


def _problem_list_condition(resource: dict) -> bool:
    profiles = (resource.get("meta") or {}).get("profile") or []
    return resource.get("resourceType") != "Condition" or any("ProblemHeader" in str(p) for p in profiles)


def test_report_lists_every_resource_of_the_bundle(fixture_name: str) -> None:
    index = BundleIndex(load(fixture_name))
    reported = {item["resource"] for item in converted(fixture_name).report["resources"]}
    expected = {key for key, _ in index.resources} | {key for key, _ in index.contained}
    assert reported == expected


@pytest.mark.parametrize("resource_type", CLINICAL_TYPES)
def test_every_clinical_resource_is_accounted_for(fixture_name: str, resource_type: str) -> None:
    report = converted(fixture_name).report
    bundle = load(fixture_name)
    index = BundleIndex(bundle)
    outcomes = {item["resource"]: item for item in report["resources"]}
    unexplained = []
    for key, resource in [*index.resources, *index.contained]:
        if resource.get("resourceType") != resource_type or not _problem_list_condition(resource):
            continue
        item = outcomes[key]
        if item["outcome"] == "not-mapped" and item.get("reason") in (None, CLINICAL_REASON):
            unexplained.append(key)
    assert unexplained == []


def test_every_entry_points_at_an_existing_narrative_id(fixture_name: str) -> None:
    """LESSONS 27: entries are linked to their narrative; every #reference resolves within the document."""
    document = tree(converted(fixture_name))
    ids = set(xpath(document, "//@ID"))
    references = [v[1:] for v in xpath(document, "//c:reference/@value") if v.startswith("#")]
    assert [r for r in references if r not in ids] == []
    assert len(ids) == len(xpath(document, "//@ID")), "narrative IDs are unique"


def test_every_entry_has_a_text_reference_to_a_row() -> None:
    document = tree(converted("uclh-xhuma/9692136744"))
    for template in ("2.16.840.1.113883.10.20.22.4.7", "2.16.840.1.113883.10.20.22.4.16",
                     "2.16.840.1.113883.10.20.22.4.4"):
        entries = xpath(document, f"//*[c:templateId/@root='{template}']")
        assert entries, template
        assert all(xpath(e, "c:text/c:reference/@value") for e in entries), template
