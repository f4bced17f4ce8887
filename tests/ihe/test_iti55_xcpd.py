"""ITI-55 Cross Gateway Patient Discovery (ITI TF-2 3.55; SPEC §1; LESSONS 1-5)."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree
from tests.ihe.schemas import envelope_errors, schema_errors
from tests.ihe.support import (
    ACTION_55,
    DECEASED_NHS,
    DEMO_NHS,
    NHS_OID,
    NS,
    OTHER_NHS,
    RESTRICTED_NHS,
    SUPERSEDED_NHS,
    UNKNOWN_NHS,
    Pds,
    UpstreamDown,
    envelope,
    iti38_body,
    iti55_body,
)

EPIC_OID = "1.2.840.114350.1.13.525.3.7.3.688884.100"


async def discover(harness, body, **kwargs):
    return await harness.answered("/SOAP/iti55", ACTION_55, body, **kwargs)


def ack(message):
    return message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code")


def query_response_code(message):
    return message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code")


async def test_iti55_match_is_AA_OK_with_patient_and_custodian_and_validates_against_PRPA_IN201306UV02(harness):
    _, env, message = await discover(harness, iti55_body())
    assert schema_errors(message) == []
    assert envelope_errors(env) == []
    assert ack(message) == "AA" and query_response_code(message) == "OK"
    patient = message.find(".//hl7:registrationEvent/hl7:subject1/hl7:patient", NS)
    patient_id = patient.find("hl7:id", NS)
    assert (patient_id.get("root"), patient_id.get("extension")) == (NHS_OID, DEMO_NHS)
    person = patient.find("hl7:patientPerson", NS)
    assert person.findtext("hl7:name/hl7:family", namespaces=NS) == "Smith"
    assert person.findtext("hl7:name/hl7:given", namespaces=NS) == "Jane"
    assert person.find("hl7:administrativeGenderCode", NS).get("code") == "F"
    assert person.find("hl7:birthTime", NS).get("value") == "19520531"
    assert person.findtext("hl7:addr/hl7:postalCode", namespaces=NS) == "LS1 1AA"
    custodian = message.find(".//hl7:custodian/hl7:assignedEntity", NS)
    assert custodian.find("hl7:id", NS).get("root") == harness.settings.home_community_id
    assert custodian.find("hl7:code", NS).get("code") == "NotHealthDataLocator"


async def test_iti55_response_header_fields_follow_the_schema_and_echo_the_query(harness):
    """LESSONS 5: HL7 TS creationTime, interactionId root 2.16.840.1.113883.1.6, no nested ids; queryAck and
    the echoed queryByParameter carry the request's queryId; device ids swap sender/receiver."""
    request = iti55_body()
    _, _, message = await discover(harness, request)
    creation = message.find("hl7:creationTime", NS).get("value")
    assert len(creation) == 14 and creation.isdigit() and creation.startswith("20")
    assert message.find("hl7:interactionId", NS).attrib == {
        "root": "2.16.840.1.113883.1.6",
        "extension": "PRPA_IN201306UV02",
    }
    assert message.find(".//hl7:id/hl7:id", NS) is None
    assert message.find(".//hl7:moodCode", NS) is None
    assert message.find("hl7:sender/hl7:device/hl7:id", NS).get("root") == harness.settings.device_oid
    assert message.find("hl7:receiver/hl7:device/hl7:id", NS).get("root") == "1.2.840.114350.1.13.999.567"
    assert (
        message.find("hl7:receiver/hl7:device/hl7:asAgent/hl7:representedOrganization/hl7:id", NS).get("root")
        == EPIC_OID
    )
    target = message.find("hl7:acknowledgement/hl7:targetMessage/hl7:id", NS)
    assert (target.get("root"), target.get("extension")) == ("1.2.840.114350.1.13.0.1.7.1.1", "35423")
    query_ack = message.find("hl7:controlActProcess/hl7:queryAck", NS)
    assert query_ack.find("hl7:queryId", NS).get("extension") == "18204"
    assert query_ack.find("hl7:statusCode", NS).get("code") == "deliveredResponse"
    echoed = message.find("hl7:controlActProcess/hl7:queryByParameter", NS)
    c14n = lambda element: etree.tostring(element, method="c14n", exclusive=True)  # noqa: E731
    assert c14n(echoed) == c14n(request.find(".//hl7:queryByParameter", NS))


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param([[(NHS_OID, DEMO_NHS)]], id="one-id-one-value"),
        pytest.param([[("1.2.840.114350.1.13.99997.2.3412", "E1234"), (NHS_OID, DEMO_NHS)]], id="one-id-two-values"),
        pytest.param([[("1.2.840.114350.1.13.99997.2.3412", "E1234")], [(NHS_OID, DEMO_NHS)]], id="two-ids"),
        pytest.param([[(NHS_OID, "969 093 7286")]], id="spaced"),
    ],
)
async def test_iti55_finds_the_nhs_number_in_any_livingSubjectId_shape_LESSONS_1(harness, ids):
    _, _, message = await discover(harness, iti55_body(ids))
    assert query_response_code(message) == "OK"


@pytest.mark.parametrize(
    ("nhs", "reason"),
    [
        (UNKNOWN_NHS, "PatientNotFound"),
        (RESTRICTED_NHS, "PatientRestricted"),
        (DECEASED_NHS, "PatientDeceased"),
        (SUPERSEDED_NHS, "PatientSuperseded"),
        ("9690937287", "InvalidNhsNumber"),
    ],
)
async def test_iti55_no_match_is_AA_NF_and_the_reason_goes_to_the_audit_only_LESSONS_2(harness, nhs, reason):
    response, _, message = await discover(harness, iti55_body([[(NHS_OID, nhs)]]))
    assert ack(message) == "AA"
    assert query_response_code(message) == "NF"
    assert message.find(".//hl7:subject", NS) is None
    assert message.find("hl7:controlActProcess/hl7:reasonOf", NS) is None
    assert schema_errors(message) == []
    assert reason.encode() not in response.content and b"estricted" not in response.content
    events = await harness.events(transaction="ITI-55")
    assert events[0]["outcome"] == "no-match" and events[0]["reason"].startswith(reason)


async def test_iti55_demographics_that_conflict_with_PDS_are_no_match_LESSONS_3(harness):
    for kwargs in ({"family": "Jones"}, {"birth": "19520601"}, {"gender": "M"}, {"given": "Tom"}):
        _, _, message = await discover(harness, iti55_body(**kwargs))
        assert query_response_code(message) == "NF", kwargs
        assert message.find(".//hl7:patientPerson", NS) is None
    _, _, message = await discover(harness, iti55_body(family="SMITH", given="jane"))
    assert query_response_code(message) == "OK"


async def test_iti55_strict_matching_needs_name_and_birth_date_but_lenient_accepts_an_identifier_only_query(
    harness_factory, make_settings
):
    strict = await harness_factory(make_settings(demographics_match="strict"))
    _, _, message = await discover(strict, iti55_body(family=None, given=None, birth=None, gender=None))
    assert query_response_code(message) == "NF"
    lenient = await harness_factory(make_settings(demographics_match="lenient"))
    _, _, message = await discover(lenient, iti55_body(family=None, given=None, birth=None, gender=None))
    assert query_response_code(message) == "OK"
    _, _, message = await discover(lenient, iti55_body(family="Jones"))
    assert query_response_code(message) == "NF"
    off = await harness_factory(make_settings(demographics_match="off"))
    _, _, message = await discover(off, iti55_body(family="Jones"))
    assert query_response_code(message) == "OK"


async def test_iti55_upstream_error_is_AE_with_XCPD_code_and_no_exception_text_or_query_dump_LESSONS_4(
    harness_factory,
):
    harness = await harness_factory(pds=Pds(error=UpstreamDown(f"PDS said 503 for {DEMO_NHS} <trace>")))
    response, _, message = await discover(harness, iti55_body())
    assert ack(message) == "AE"
    assert message.find("hl7:acknowledgement/hl7:acknowledgementDetail", NS).get("typeCode") == "E"
    code = message.find(
        ".//hl7:reasonOf/hl7:detectedIssueEvent/hl7:mitigatedBy/hl7:detectedIssueManagement/hl7:code", NS
    )
    assert (code.get("code"), code.get("codeSystem")) == ("InternalError", "1.3.6.1.4.1.19376.1.2.27.3")
    queryack = message.find("hl7:controlActProcess/hl7:queryAck", NS)
    assert queryack.find("hl7:queryResponseCode", NS).get("code") == "AE"
    assert queryack.find("hl7:statusCode", NS).get("code") == "aborted"
    assert b"PDS said" not in response.content and b"<trace>" not in response.content
    detail_text = message.findtext("hl7:acknowledgement/hl7:acknowledgementDetail/hl7:text", namespaces=NS)
    assert DEMO_NHS not in detail_text and "Smith" not in detail_text
    assert schema_errors(message) == []


async def test_iti55_rate_limited_upstream_is_AE_ResponderBusy(harness_factory):
    harness = await harness_factory(pds=Pds(error=UpstreamDown("busy", status=429)))
    _, _, message = await discover(harness, iti55_body())
    code = message.find(".//hl7:detectedIssueManagement/hl7:code", NS)
    assert code.get("code") == "ResponderBusy"


async def test_iti55_several_different_nhs_numbers_are_no_match(harness):
    _, _, message = await discover(harness, iti55_body([[(NHS_OID, DEMO_NHS)], [(NHS_OID, OTHER_NHS)]]))
    assert query_response_code(message) == "NF"


async def test_iti55_ipf_sample_request_is_accepted_and_answered_NF_without_an_nhs_number(harness, data_dir):
    body = etree.parse(str(data_dir / "ihe" / "ipf" / "iti55-sample-request.xml")).getroot()
    _, _, message = await discover(harness, body)
    assert ack(message) == "AA" and query_response_code(message) == "NF"
    assert schema_errors(message) == []


async def test_iti55_match_is_audited_with_pseudonym_and_message_id(harness):
    message_id = "urn:uuid:0d8e2c4a-2b43-4d7a-9c1f-0a8b8c2f1e11"
    await discover(harness, iti55_body(), message_id=message_id)
    event = (await harness.events(transaction="ITI-55"))[0]
    assert event["outcome"] == "success" and event["message_id"] == message_id
    assert event["patient_pseudonym"] == harness.gateway.auditor.pseudonym(DEMO_NHS)


async def test_iti55_prefetch_on_match_makes_the_following_iti38_a_cache_hit(harness_factory, make_settings):
    harness = await harness_factory(make_settings(prefetch_on_match=True))
    await discover(harness, iti55_body())
    for _ in range(50):
        if harness.gpconnect.calls and not harness.records._inflight:
            break
        await asyncio.sleep(0.01)
    assert harness.gpconnect.calls == 1
    response = await harness.post("/SOAP/iti38", envelope("urn:ihe:iti:2007:CrossGatewayQuery", iti38_body()))
    assert b"ExtrinsicObject" in response.content
    assert harness.gpconnect.calls == 1 and harness.records.pipeline_runs == 1
