"""Plan of treatment (SPEC §8.4.9): Planned Encounter 4.40:2014-06-09 (referrals), Planned Act 4.39 (diary)."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import assert_valid, bundle, concept, gp_list, outcome, run, section, text_of

PLAN = "18776-5"


def test_referral_is_a_planned_encounter_requested_with_priority_and_ubrn_in_narrative() -> None:
    plan = section(tree(converted("gp2gp-adaptor/docs-example-response")), PLAN)
    encounters = plan.xpath("c:entry/c:encounter[c:templateId[@root='2.16.840.1.113883.10.20.22.4.40']]",
                            namespaces=NS)
    assert len(encounters) == 2
    physio = plan.xpath("c:entry/c:encounter[c:code/@code='308447003']", namespaces=NS)[0]
    assert physio.get("moodCode") == "RQO"
    assert physio.xpath("c:statusCode/@code", namespaces=NS) == ["active"]
    assert physio.xpath("c:priorityCode/@code", namespaces=NS) == ["R"]
    assert physio.xpath("c:effectiveTime/@value", namespaces=NS) == ["20190328103000+0000"]
    narrative = text_of(plan)
    assert "Referral due to swollen legs" in narrative
    assert "e-Referral UBRN: bb2378b6-dde2-11e9-9d36-2a2ae2dbcce4" in narrative


def test_diary_entry_is_a_planned_act_with_its_due_date() -> None:
    plan = section(tree(converted("gp2gp-adaptor/gpc-access-structured")), PLAN)
    act = plan.xpath("c:entry/c:act[c:templateId[@root='2.16.840.1.113883.10.20.22.4.39']]", namespaces=NS)[0]
    assert act.get("moodCode") == "INT"
    assert act.xpath("c:code/@code", namespaces=NS) == ["86198006"]
    assert act.xpath("c:effectiveTime/@value", namespaces=NS) == ["20300225"]
    assert "Due 25-Feb-2030" in text_of(plan)


def test_list_warnings_and_empty_reason_of_referrals_are_shown() -> None:
    plan = section(tree(converted("gp2gp-adaptor/gpc-access-structured")), PLAN)
    narrative = text_of(plan)
    assert "Data in transit" in narrative
    assert "information recorded before 23-Jun-2010 may be missing" in narrative


def test_diary_entries_missing_from_the_bundle_become_text_rows_and_warnings() -> None:
    conversion = converted("gpconnect-spec/diaryentries_response1")
    plan = section(tree(conversion), PLAN)
    assert "Entries shown as text only" in text_of(plan)
    assert "ProcedureRequest/eba25af1-5b74-4790-aa5a-2134fd27ad45" in text_of(plan)
    assert [w for w in conversion.report["warnings"] if w["code"] == "unresolved-reference"]


def test_referral_without_service_uses_reason_and_indication_from_reason_otherwise() -> None:
    referral = {"resourceType": "ReferralRequest", "id": "rr1", "status": "unknown", "intent": "order",
                "priority": "urgent", "authoredOn": "2024-04-01",
                "serviceRequested": [concept("183519002", "Referral to cardiology service")],
                "reasonCode": [concept("29857009", "Chest pain")],
                "requester": {"agent": {"reference": "Practitioner/gp1"}},
                "recipient": [{"display": "Cardiology, City Hospital"}]}
    conversion, root = run(bundle(gp_list("792931000000107", referral), referral))
    encounter = section(root, PLAN).xpath("c:entry/c:encounter", namespaces=NS)[0]
    assert encounter.xpath("c:code/@code", namespaces=NS) == ["183519002"]
    assert encounter.xpath("c:priorityCode/@code", namespaces=NS) == ["UR"]
    indication = encounter.xpath("c:entryRelationship[@typeCode='RSON']/c:observation", namespaces=NS)[0]
    assert indication.xpath("c:value/@code", namespaces=NS) == ["29857009"]
    assert encounter.xpath("c:author/c:assignedAuthor/c:id/@extension", namespaces=NS) == ["G1234567"]
    assert "Cardiology, City Hospital" in text_of(section(root, PLAN))
    assert outcome(conversion, "ReferralRequest/rr1")["outcome"] == "entry"
    assert_valid(conversion)
