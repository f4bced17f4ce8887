"""What partner gateways trip on (issue 14, items 2-7), one test per requirement. Item 3 ("no documents" is a
plain Success) is tests/ihe/test_iti38_query.py::test_iti38_no_documents_is_a_plain_Success_with_an_empty_list_and
_no_warning_RegistryError; the IPF schematron (item 8) is tests/ihe/test_iti55_schematron.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.ihe.schemas import envelope_errors, schema_errors
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    DEMO_NHS,
    NS,
    Pds,
    body_of,
    envelope,
    iti38_body,
    iti39_body,
    iti55_body,
    parse_response,
    patient,
    unique_id_of,
)

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PRACTICE = "The Trevelyan Practice"  # the practice's name in the stand-in GP Connect record


async def advertised(harness):
    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body()))
    entry = body_of(parse_response(response)).find("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    return entry


async def test_iti39_registry_error_location_names_the_document_unique_id_that_failed(harness):
    unique_id = unique_id_of(await advertised(harness))
    home, repository = harness.settings.home_community_urn, harness.settings.repository_unique_id
    missing = ["1.2.826.0.1.999.1", "1.2.826.0.1.999.2"]
    _, _, message = await harness.answered("/SOAP/iti39", ACTION_39, iti39_body(
        [(home, repository, missing[0]), (home, repository, unique_id), (home, repository, missing[1])]
    ))
    errors = message.findall("rs:RegistryResponse/rs:RegistryErrorList/rs:RegistryError", NS)
    assert [(e.get("errorCode"), e.get("location")) for e in errors] == [
        ("XDSDocumentUniqueIdError", missing[0]), ("XDSDocumentUniqueIdError", missing[1])
    ]
    assert [d.findtext("xdsb:DocumentUniqueId", namespaces=NS) for d in message.iterfind("xdsb:DocumentResponse", NS)
            ] == [unique_id]
    assert schema_errors(message) == []


async def test_iti55_deferred_request_is_AE_with_NS250_unsupported_processing_mode(harness):
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, iti55_body(priority="D"))
    assert message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AE"
    detail = message.find("hl7:acknowledgement/hl7:acknowledgementDetail", NS)
    code = detail.find("hl7:code", NS)
    assert (detail.get("typeCode"), code.get("code"), code.get("codeSystem")) == (
        "E", "NS250", "2.16.840.1.113883.5.1100"
    )
    query_ack = message.find("hl7:controlActProcess/hl7:queryAck", NS)
    assert query_ack.find("hl7:queryResponseCode", NS).get("code") == "AE"
    assert query_ack.find("hl7:statusCode", NS).get("code") == "aborted"
    # No XCPD error code: InternalError or ResponderBusy would suggest that asking again could succeed.
    assert message.find("hl7:controlActProcess/hl7:reasonOf", NS) is None
    assert harness.pds.calls == 0
    assert schema_errors(message) == []
    event = (await harness.events(transaction="ITI-55"))[0]
    assert event["outcome"] == "error" and event["reason"] == "UnsupportedProcessingMode"


async def test_iti55_unknown_gender_is_administrativeGenderCode_nullFlavor_UNK(harness_factory):
    harness = await harness_factory(pds=Pds({DEMO_NHS: patient(gender="unknown")}))
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, iti55_body(gender=None))
    gender = message.find(".//hl7:patientPerson/hl7:administrativeGenderCode", NS)
    assert gender.get("nullFlavor") == "UNK" and gender.get("code") is None
    assert schema_errors(message) == []


async def test_responses_carry_a_wsse_timestamp_only_when_XHUMA_WSSE_TIMESTAMP_SECONDS_is_set(
    harness_factory, make_settings
):
    plain = await harness_factory()
    _, env, _ = await plain.answered("/SOAP/iti55", ACTION_55, iti55_body())
    assert env.find(f"env:Header/{{{WSSE}}}Security", NS) is None

    harness = await harness_factory(make_settings(wsse_timestamp_seconds=300, mtom_responses=False))
    before = datetime.now(UTC) - timedelta(seconds=1)
    for path, action, body in (("/SOAP/iti55", ACTION_55, iti55_body()), ("/SOAP/iti38", ACTION_38, iti38_body())):
        _, env, _ = await harness.answered(path, action, body)
        assert envelope_errors(env) == []
        timestamp = env.find(f"env:Header/{{{WSSE}}}Security/{{{WSU}}}Timestamp", NS)
        created = datetime.fromisoformat(timestamp.findtext(f"{{{WSU}}}Created").replace("Z", "+00:00"))
        expires = datetime.fromisoformat(timestamp.findtext(f"{{{WSU}}}Expires").replace("Z", "+00:00"))
        assert before <= created <= datetime.now(UTC) and expires - created == timedelta(seconds=300)
        assert timestamp.findtext(f"{{{WSU}}}Created").endswith("Z")
    unique_id = unique_id_of(await advertised(harness))
    _, env, _ = await harness.answered("/SOAP/iti39", ACTION_39, iti39_body(
        [(harness.settings.home_community_urn, harness.settings.repository_unique_id, unique_id)]))
    assert env.find(f"env:Header/{{{WSSE}}}Security/{{{WSU}}}Timestamp", NS) is not None


async def test_iti55_names_the_practice_as_iti38_does_with_the_ODS_code_as_id(harness):
    entry = await advertised(harness)  # ITI-38 has seen the practice's GP Connect record
    institution = entry.findtext(".//rim:Slot[@name='authorInstitution']/rim:ValueList/rim:Value", namespaces=NS)
    assert institution.startswith(f"{PRACTICE}^")
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, iti55_body())
    provider = message.find(".//hl7:patient/hl7:providerOrganization", NS)
    ods = patient().gp_ods_code
    assert provider.findtext("hl7:name", namespaces=NS) == PRACTICE
    assert (provider.find("hl7:id", NS).get("root"), provider.find("hl7:id", NS).get("extension")) == (
        "2.16.840.1.113883.2.1.3.2.4.19.1", ods)
    assert institution.endswith(f"^{ods}")
    assert schema_errors(message) == []


async def test_iti55_queryMatchObservation_code_carries_its_codeSystem(harness_factory, make_settings):
    harness = await harness_factory()
    _, _, message = await harness.answered("/SOAP/iti55", ACTION_55, iti55_body())
    code = message.find(".//hl7:subjectOf1/hl7:queryMatchObservation/hl7:code", NS)
    assert (code.get("code"), code.get("codeSystem")) == ("IHE_PDQ", harness.settings.xcpd_match_code_system)
    assert code.get("codeSystem")
    other = await harness_factory(make_settings(xcpd_match_code_system="1.2.3.4"))
    _, _, message = await other.answered("/SOAP/iti55", ACTION_55, iti55_body())
    assert message.find(".//hl7:queryMatchObservation/hl7:code", NS).get("codeSystem") == "1.2.3.4"
