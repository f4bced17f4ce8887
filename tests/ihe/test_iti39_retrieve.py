"""ITI-39 Cross Gateway Retrieve (ITI TF-2 3.39 / 3.43; SPEC §3; LESSONS 10, 12)."""

from __future__ import annotations

import base64
import hashlib

from tests.ihe.schemas import envelope_errors, schema_errors
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    NS,
    FailingAuditSink,
    body_of,
    envelope,
    iti38_body,
    iti39_body,
    mtom_wrap,
    parse_response,
    slot_value,
    unique_id_of,
)
from tests.ihe.support import attachments as parts_of

from xhuma.ports import CallerIdentity

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"


async def advertised(harness):
    """Run ITI-38 and return (uniqueId, hash, size) as advertised."""
    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body()))
    entry = body_of(parse_response(response)).find("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    return unique_id_of(entry), slot_value(entry, "hash"), int(slot_value(entry, "size"))


def request_for(harness, unique_id, *, home=None, repository=None):
    return iti39_body(
        [(home or harness.settings.home_community_urn, repository or harness.settings.repository_unique_id, unique_id)]
    )


async def test_iti39_returns_the_advertised_bytes_as_an_mtom_xop_attachment(harness):
    unique_id, hash_, size = await advertised(harness)
    message_id = "urn:uuid:7c8d2f0e-3a55-4ad4-a0a5-4f6c9b1f0a01"
    response = await harness.post(
        "/SOAP/iti39", envelope(ACTION_39, request_for(harness, unique_id), message_id=message_id)
    )
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related") and 'type="application/xop+xml"' in content_type
    assert 'start-info="application/soap+xml"' in content_type
    env = parse_response(response)
    assert envelope_errors(env) == []
    assert env.findtext("env:Header/wsa:Action", namespaces=NS) == "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == message_id
    message = body_of(env)
    assert schema_errors(message) == []
    assert message.find("rs:RegistryResponse", NS).get("status") == SUCCESS
    document_response = message.find("xdsb:DocumentResponse", NS)
    assert document_response.findtext("xdsb:DocumentUniqueId", namespaces=NS) == unique_id
    assert document_response.findtext("xdsb:HomeCommunityId", namespaces=NS) == harness.settings.home_community_urn
    assert document_response.findtext("xdsb:mimeType", namespaces=NS) == "text/xml"
    href = document_response.find("xdsb:Document/xop:Include", NS).get("href")
    content = parts_of(response)[href[4:]]
    assert hashlib.sha1(content).hexdigest() == hash_ and len(content) == size


async def test_iti39_inline_base64_when_the_partner_setting_says_so(harness_factory, make_settings):
    harness = await harness_factory(make_settings(mtom_responses=False))
    unique_id, hash_, _ = await advertised(harness)
    response = await harness.post("/SOAP/iti39", envelope(ACTION_39, request_for(harness, unique_id)))
    assert response.headers["content-type"].startswith("application/soap+xml")
    message = body_of(parse_response(response))
    content = base64.b64decode(message.findtext("xdsb:DocumentResponse/xdsb:Document", namespaces=NS))
    assert hashlib.sha1(content).hexdigest() == hash_
    assert schema_errors(message) == []


async def test_iti39_epic_mtom_request_without_attachments_is_accepted_LESSONS_10(harness):
    unique_id, _, _ = await advertised(harness)
    # pretty-printed, s:/a: prefixes, CRLF, the envelope not on the first line of its part
    wrapped, content_type = mtom_wrap(envelope(ACTION_39, request_for(harness, unique_id), pretty=True))
    response = await harness.post("/SOAP/iti39", wrapped, content_type)
    assert response.status_code == 200
    message = body_of(parse_response(response))
    assert message.find("rs:RegistryResponse", NS).get("status") == SUCCESS


async def test_iti39_mtom_request_with_lf_line_ends_and_no_start_parameter_is_accepted_LESSONS_10(harness):
    unique_id, _, _ = await advertised(harness)
    raw = envelope(ACTION_39, request_for(harness, unique_id), soap_prefix="soapenv", wsa_prefix="wsa")
    wrapped, content_type = mtom_wrap(raw, line_end=b"\n", start=False, boundary="MIMEBoundary_abc")
    response = await harness.post("/SOAP/iti39", wrapped, content_type)
    assert body_of(parse_response(response)).find("rs:RegistryResponse", NS).get("status") == SUCCESS


async def test_iti39_unknown_document_is_XDSDocumentUniqueIdError_and_mixed_requests_are_PartialSuccess(harness):
    unique_id, _, _ = await advertised(harness)
    home, repository = harness.settings.home_community_urn, harness.settings.repository_unique_id
    response = await harness.post(
        "/SOAP/iti39",
        envelope(ACTION_39, iti39_body([(home, repository, unique_id), (home, repository, "1.2.3.4.5.6")])),
    )
    message = body_of(parse_response(response))
    registry_response = message.find("rs:RegistryResponse", NS)
    assert registry_response.get("status") == PARTIAL
    assert [e.get("errorCode") for e in registry_response.iterfind("rs:RegistryErrorList/rs:RegistryError", NS)] == [
        "XDSDocumentUniqueIdError"
    ]
    assert len(message.findall("xdsb:DocumentResponse", NS)) == 1
    assert schema_errors(message) == []
    response = await harness.post("/SOAP/iti39", envelope(ACTION_39, iti39_body([(home, repository, "9.9.9")])))
    message = body_of(parse_response(response))
    assert message.find("rs:RegistryResponse", NS).get("status") == FAILURE
    assert schema_errors(message) == []


async def test_iti39_checks_home_community_and_repository_of_each_request(harness):
    unique_id, _, _ = await advertised(harness)
    home, repository = harness.settings.home_community_urn, harness.settings.repository_unique_id
    response = await harness.post(
        "/SOAP/iti39",
        envelope(
            ACTION_39,
            iti39_body(
                [
                    ("urn:oid:1.2.3.4", repository, unique_id),
                    (home, "1.2.3.4", unique_id),
                    (None, repository, unique_id),
                    (harness.settings.home_community_id, repository, unique_id),
                ]
            ),
        ),
    )
    message = body_of(parse_response(response))
    codes = [
        e.get("errorCode") for e in message.iterfind("rs:RegistryResponse/rs:RegistryErrorList/rs:RegistryError", NS)
    ]
    assert codes == ["XDSUnknownCommunity", "XDSUnknownRepositoryId", "XDSMissingHomeCommunityId"]
    assert len(message.findall("xdsb:DocumentResponse", NS)) == 1  # the bare OID form of our community is ours


async def test_iti39_nhn_sample_request_is_accepted_and_answered_XDSUnknownCommunity(harness, data_dir):
    response = await harness.post("/SOAP/iti39", (data_dir / "ihe" / "nhn" / "IT_iti-39_request.xml").read_bytes())
    assert response.status_code == 200
    message = body_of(parse_response(response))
    assert [e.get("errorCode") for e in message.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError")] == [
        "XDSUnknownCommunity"
    ]


async def test_iti39_disclosure_is_audited_with_the_document_unique_id(harness):
    unique_id, _, _ = await advertised(harness)
    await harness.post("/SOAP/iti39", envelope(ACTION_39, request_for(harness, unique_id)))
    event = (await harness.events(transaction="ITI-39"))[0]
    assert event["outcome"] == "success" and event["document_unique_id"] == unique_id
    assert event["patient_pseudonym"] == harness.gateway.auditor.pseudonym("9690937286")


async def test_iti39_does_not_release_the_document_when_the_audit_cannot_be_committed(harness_factory):
    harness = await harness_factory(audit_sink=FailingAuditSink())
    (document,) = (await harness.records.query_documents("9690937286", CallerIdentity())).documents
    response = await harness.post("/SOAP/iti39", envelope(ACTION_39, request_for(harness, document.unique_id)))
    assert response.status_code == 200
    assert document.content not in response.content
    message = body_of(parse_response(response))
    assert message.find("xdsb:DocumentResponse", NS) is None
    assert message.find("rs:RegistryResponse", NS).get("status") == FAILURE
    assert message.find(".//rs:RegistryError", NS).get("errorCode") == "XDSRepositoryError"
