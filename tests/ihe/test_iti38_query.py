"""ITI-38 Cross Gateway Query (ITI TF-2 3.38 / 3.18; SPEC §2; LESSONS 6, 7, 8, 11)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from lxml import etree
from tests.ihe.schemas import schema_errors
from tests.ihe.support import (
    ACTION_38,
    DEMO_NHS,
    GET_DOCUMENTS,
    NHS_OID,
    NS,
    RESTRICTED_NHS,
    SOAP_CT,
    UNIQUE_ID_SCHEME,
    GpConnect,
    UpstreamDown,
    body_of,
    cx,
    envelope,
    iti38_body,
    parse_response,
    unique_id_of,
)

from xhuma.errors import ConsentRefused, NoEndpoint
from xhuma.store.cache import MemoryCache, RedisCache
from xhuma.store.keys import CacheKeys

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"


async def query(harness, body, **kwargs):
    return await harness.answered("/SOAP/iti38", ACTION_38, body, **kwargs)


def slots(**extra):
    values = {"$XDSDocumentEntryPatientId": [f"'{cx()}'"], "$XDSDocumentEntryStatus": [APPROVED]}
    values.update(extra)
    return values


def errors_of(message):
    return [
        (e.get("errorCode"), e.get("codeContext"), e.get("severity"))
        for e in message.iterfind("rs:RegistryErrorList/rs:RegistryError", NS)
    ]


def slot(extrinsic, name):
    return [v.text for v in extrinsic.iterfind(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value", NS)]


async def test_iti38_find_documents_returns_one_complete_stable_DocumentEntry_LESSONS_8(harness):
    _, env, message = await query(harness, iti38_body())
    assert schema_errors(message) == []
    assert message.get("status") == SUCCESS
    (entry,) = message.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    settings = harness.settings
    stored = await harness.records.retrieve_document(unique_id_of(entry))
    entry_uuid = entry.get("id")
    assert entry_uuid.startswith("urn:uuid:") and entry.get("home") == f"urn:oid:{settings.home_community_id}"
    assert entry.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert entry.get("status") == "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    assert entry.get("mimeType") == "text/xml"
    assert slot(entry, "hash") == [hashlib.sha1(stored.content).hexdigest()]
    assert slot(entry, "size") == [str(len(stored.content))] and len(stored.content) > 1
    assert slot(entry, "creationTime") == ["20250301123000"]
    assert slot(entry, "serviceStartTime") == ["20190101000000"]
    assert slot(entry, "serviceStopTime") == ["20250301123000"]
    assert slot(entry, "languageCode") == ["en-GB"]
    assert slot(entry, "repositoryUniqueId") == [settings.repository_unique_id]
    assert slot(entry, "sourcePatientId") == [cx()]
    assert slot(entry, "sourcePatientInfo") == [f"PID-3|{cx()}", "PID-5|SMITH^JANE^^^", "PID-7|19520531", "PID-8|F"]
    schemes = {c.get("classificationScheme"): c for c in entry.iterfind("rim:Classification", NS)}
    expected = {
        "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a": ("34133-9", "2.16.840.1.113883.6.1"),  # class
        "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983": ("34133-9", "2.16.840.1.113883.6.1"),  # type
        "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d": (
            "urn:hl7-org:sdwg:ccda-structuredBody:2.1",
            "1.3.6.1.4.1.19376.1.2.3",
        ),  # format
        "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f": ("N", "2.16.840.1.113883.5.25"),  # confidentiality
        "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1": ("394761003", "2.16.840.1.113883.6.96"),  # facility
        "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead": ("394814009", "2.16.840.1.113883.6.96"),  # practice
    }
    for scheme, (code, coding_scheme) in expected.items():
        classification = schemes[scheme]
        assert classification.get("nodeRepresentation") == code
        assert classification.get("classifiedObject") == entry_uuid
        assert classification.get("id").startswith("urn:uuid:")
        assert slot(classification, "codingScheme") == [coding_scheme]
        assert classification.find("rim:Name/rim:LocalizedString", NS).get("value")
    author = schemes["urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"]
    assert slot(author, "authorInstitution") == [
        "The Trevelyan Practice^^^^^&2.16.840.1.113883.2.1.3.2.4.19.1&ISO^^^^B82617"
    ]
    identifiers = {e.get("identificationScheme"): e for e in entry.iterfind("rim:ExternalIdentifier", NS)}
    patient_id = identifiers["urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"]
    unique_id = identifiers[UNIQUE_ID_SCHEME]
    assert patient_id.get("value") == slot(entry, "sourcePatientId")[0]  # same assigning authority
    assert unique_id.get("value") == stored.unique_id and unique_id.get("value") != entry_uuid
    assert all(part.isdigit() for part in unique_id.get("value").split("."))  # OID-style
    assert len(unique_id.get("value")) <= 64
    for identifier in identifiers.values():
        assert identifier.get("registryObject") == entry_uuid and identifier.get("id").startswith("urn:uuid:")
    header = env.find("env:Header", NS)
    assert header.findtext("wsa:Action", namespaces=NS) == "urn:ihe:iti:2007:CrossGatewayQueryResponse"


async def test_iti38_object_ref_return_type_lists_references_with_home(harness):
    _, _, message = await query(harness, iti38_body(return_type="ObjectRef"))
    (reference,) = message.findall("rim:RegistryObjectList/rim:ObjectRef", NS)
    assert reference.get("id").startswith("urn:uuid:")
    assert reference.get("home") == harness.settings.home_community_urn
    assert schema_errors(message) == []


async def test_iti38_concurrent_identical_queries_run_the_pipeline_once_LESSONS_6(harness_factory):
    harness = await harness_factory(gpconnect=GpConnect(latency=0.2))
    results = await asyncio.gather(*(query(harness, iti38_body()) for _ in range(8)))
    assert harness.gpconnect.calls == 1 and harness.records.pipeline_runs == 1
    unique_ids = {unique_id_of(r[2].find(".//rim:ExtrinsicObject", NS)) for r in results}
    assert len(unique_ids) == 1
    await query(harness, iti38_body())  # and the next one is a cache hit
    assert harness.gpconnect.calls == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(
            iti38_body({"$XDSDocumentEntryPatientId": [f"'{cx()}'"]}), "XDSStoredQueryMissingParam", id="one-slot"
        ),
        pytest.param(
            iti38_body({"$XDSDocumentEntryStatus": [APPROVED]}), "XDSStoredQueryMissingParam", id="no-patient"
        ),
        pytest.param(
            iti38_body(slots(**{"$XDSDocumentEntryPatientId": ["'17855599120^^^&2.16.578.1.12.4.1.4.1&ISO'"]})),
            "XDSUnknownPatientId",
            id="foreign-cx",
        ),
        pytest.param(
            iti38_body(slots(**{"$XDSDocumentEntryPatientId": ["'9690937287^^^&2.16.840.1.113883.2.1.4.1&ISO'"]})),
            "XDSUnknownPatientId",
            id="bad-mod11",
        ),
        pytest.param(
            iti38_body(slots(**{"$XDSDocumentEntryPatientId": ["'garbage'"]})), "XDSUnknownPatientId", id="not-a-cx"
        ),
        pytest.param(
            iti38_body(slots(**{"$XDSDocumentEntryPatientId": [f"'{cx()}'", f"'{cx()}'"]})),
            "XDSStoredQueryParamNumber",
            id="two-patients",
        ),
        pytest.param(
            iti38_body(query_id="urn:uuid:00000000-0000-0000-0000-000000000000"),
            "XDSUnknownStoredQuery",
            id="unknown-query",
        ),
        pytest.param(iti38_body(home="urn:oid:1.2.3.4.5"), "XDSUnknownCommunity", id="other-community"),
        pytest.param(
            iti38_body({"$XDSDocumentEntryUniqueId": ["('1.2.3')"]}, query_id=GET_DOCUMENTS),
            "XDSMissingHomeCommunityId",
            id="getdocuments-without-home",
        ),
    ],
)
async def test_iti38_malformed_queries_get_a_registry_error_never_http_500_LESSONS_7(harness, body, code):
    response, _, message = await query(harness, body)
    assert message.get("status") == FAILURE
    assert [e[0] for e in errors_of(message)] == [code]
    assert errors_of(message)[0][1] and "Traceback" not in response.text and "Error(" not in response.text
    assert (
        message.find("rs:RegistryErrorList/rs:RegistryError", NS).get("location") == harness.settings.home_community_urn
    )
    assert schema_errors(message) == []
    assert harness.gpconnect.calls == 0


async def test_iti38_without_security_header_is_answered_not_500_LESSONS_7(harness):
    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=None))
    assert response.status_code == 200


async def test_iti38_nhn_sample_request_is_accepted_with_a_registry_error_for_its_foreign_patient(harness, data_dir):
    sample = (data_dir / "ihe" / "nhn" / "IT_iti-38_request.xml").read_bytes()
    response = await harness.post("/SOAP/iti38", sample)
    assert response.status_code == 200
    message = body_of(parse_response(response))
    assert [e[0] for e in errors_of(message)] == ["XDSUnknownPatientId"]


async def test_iti38_upstream_failure_is_Failure_with_safe_codeContext(harness_factory):
    harness = await harness_factory(gpconnect=GpConnect(error=UpstreamDown(f"SSP 502 for {DEMO_NHS}: stack")))
    response, _, message = await query(harness, iti38_body())
    assert message.get("status") == FAILURE
    assert errors_of(message) == [
        (
            "XDSRegistryError",
            "GP record could not be retrieved",
            "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error",
        )
    ]
    assert b"SSP 502" not in response.content and DEMO_NHS.encode() not in response.content
    event = (await harness.events(transaction="ITI-38"))[0]
    assert event["outcome"] == "error" and event["error_code"] == "XDSRegistryError"


@pytest.mark.parametrize("error", [NoEndpoint(), ConsentRefused()])
async def test_iti38_no_documents_is_a_plain_Success_with_an_empty_list_and_no_warning_RegistryError(
    harness_factory, error
):
    # Issue 14, item 3: initiators (Metriport's parser) take any RegistryError without documents for a failure.
    harness = await harness_factory(gpconnect=GpConnect(error=error))
    _, _, message = await query(harness, iti38_body())
    assert message.get("status") == SUCCESS
    assert message.find("rim:RegistryObjectList", NS) is not None and not len(
        message.find("rim:RegistryObjectList", NS)
    )
    assert message.find("rs:RegistryErrorList", NS) is None and errors_of(message) == []
    assert schema_errors(message) == []
    event = (await harness.events(transaction="ITI-38"))[0]
    assert event["outcome"] == "no-match" and event["reason"] == error.code  # the reason stays in the audit


async def test_iti38_restricted_patient_gets_no_documents(harness):
    _, _, message = await query(harness, iti38_body(nhs=RESTRICTED_NHS))
    assert message.get("status") == SUCCESS and not len(message.find("rim:RegistryObjectList", NS))
    assert harness.gpconnect.calls == 0


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        ({"$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated')"]}, False),
        ({"$XDSDocumentEntryClassCode": ["('34133-9^^2.16.840.1.113883.6.1')"]}, True),
        ({"$XDSDocumentEntryClassCode": ["('11488-4^^2.16.840.1.113883.6.1')"]}, False),
        (
            {"$XDSDocumentEntryFormatCode": ["('urn:hl7-org:sdwg:ccda-structuredBody:2.1^^1.3.6.1.4.1.19376.1.2.3')"]},
            True,
        ),
        ({"$XDSDocumentEntryFormatCode": ["('urn:ihe:pcc:xphr:2007^^1.3.6.1.4.1.19376.1.2.3')"]}, False),
        ({"$XDSDocumentEntryType": ["('urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248')"]}, False),
        ({"$XDSDocumentEntryCreationTimeFrom": ["20250301"], "$XDSDocumentEntryCreationTimeTo": ["20250302"]}, True),
        ({"$XDSDocumentEntryCreationTimeFrom": ["20250302"]}, False),
        ({"$XDSDocumentEntryCreationTimeTo": ["202503011230"]}, False),  # To is exclusive
        ({"$XDSDocumentEntryServiceStartTimeTo": ["2018"]}, False),
        ({"$XDSDocumentEntryConfidentialityCode": ["('N^^2.16.840.1.113883.5.25')"]}, True),
        ({"$XDSDocumentEntryConfidentialityCode": ["('R^^2.16.840.1.113883.5.25')"]}, False),
    ],
)
async def test_iti38_status_type_class_format_time_and_confidentiality_filters_are_honoured(harness, extra, found):
    _, _, message = await query(harness, iti38_body(slots(**extra)))
    assert message.get("status") == SUCCESS
    assert len(message.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)) == (1 if found else 0)


async def test_iti38_status_filter_without_approved_does_not_fetch_the_record(harness):
    await query(
        harness,
        iti38_body(slots(**{"$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated')"]})),
    )
    assert harness.gpconnect.calls == 0


async def test_iti38_on_demand_setting_advertises_an_on_demand_entry_without_hash_or_size(
    harness_factory, make_settings
):
    harness = await harness_factory(make_settings(entry_type="on-demand"))
    _, _, message = await query(harness, iti38_body(slots()))
    assert not len(message.find("rim:RegistryObjectList", NS))  # stable only when $XDSDocumentEntryType is absent
    _, _, message = await query(
        harness, iti38_body(slots(**{"$XDSDocumentEntryType": ["('urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248')"]}))
    )
    (entry,) = message.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    assert entry.get("objectType") == "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
    assert slot(entry, "hash") == [] and slot(entry, "size") == [] and slot(entry, "creationTime") == []
    assert schema_errors(message) == []


async def test_iti38_get_documents_by_unique_id_and_by_entry_uuid(harness):
    _, _, message = await query(harness, iti38_body())
    entry = message.find("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    unique_id = unique_id_of(entry)
    home = harness.settings.home_community_urn
    for name, value in (("$XDSDocumentEntryUniqueId", unique_id), ("$XDSDocumentEntryEntryUUID", entry.get("id"))):
        _, _, found = await query(harness, iti38_body({name: [f"('{value}')"]}, query_id=GET_DOCUMENTS, home=home))
        (again,) = found.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
        assert again.get("id") == entry.get("id")
    _, _, missing = await query(
        harness, iti38_body({"$XDSDocumentEntryUniqueId": ["('1.2.3.4')"]}, query_id=GET_DOCUMENTS, home=home)
    )
    assert missing.get("status") == SUCCESS and not len(missing.find("rim:RegistryObjectList", NS))


async def test_iti38_other_registry_stored_queries_are_empty_success(harness):
    _, _, message = await query(harness, iti38_body(slots(), query_id="urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"))
    assert message.get("status") == SUCCESS and not len(message.find("rim:RegistryObjectList", NS))


async def test_iti38_document_outlives_60_seconds_in_the_cache_LESSONS_11(harness_factory, make_settings):
    now = [1000.0]
    cache = MemoryCache(clock=lambda: now[0])
    harness = await harness_factory(make_settings(ttl_document_seconds=900), cache=cache)
    _, _, message = await query(harness, iti38_body())
    unique_id = unique_id_of(message.find(".//rim:ExtrinsicObject", NS))
    now[0] += 600  # ten minutes later: the EHR's ITI-39 still finds it
    assert (await harness.records.retrieve_document(unique_id)).unique_id == unique_id
    now[0] += 301
    assert await cache.get(CacheKeys.document(unique_id)) is None


async def test_iti38_document_ttl_in_redis_is_the_configured_one_not_60_seconds_LESSONS_11(
    harness_factory, make_settings, redis_url, redis_namespace
):
    import redis.asyncio as redis_asyncio

    cache = RedisCache(redis_url, namespace=redis_namespace)
    harness = await harness_factory(make_settings(), cache=cache)
    _, _, message = await query(harness, iti38_body())
    unique_id = unique_id_of(message.find(".//rim:ExtrinsicObject", NS))
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        ttl = await client.ttl(f"{redis_namespace}:{CacheKeys.document(unique_id)}")
    finally:
        await client.aclose()
        await cache.close()
    assert harness.settings.ttl_document_seconds - 5 <= ttl <= harness.settings.ttl_document_seconds
    assert ttl > 60


async def test_iti38_the_settings_refuse_a_document_ttl_of_60_seconds_LESSONS_11(make_settings):
    with pytest.raises(ValueError):
        make_settings(ttl_document_seconds=60)


async def test_iti38_any_prefixes_and_pretty_printing_are_accepted(harness):
    raw = etree.tostring(iti38_body())
    for old, new in (
        (b"<query:", b"<q0:"),
        (b"</query:", b"</q0:"),
        (b"xmlns:query=", b"xmlns:q0="),
        (b"<rim:", b"<ns5:"),
        (b"</rim:", b"</ns5:"),
        (b"xmlns:rim=", b"xmlns:ns5="),
    ):
        raw = raw.replace(old, new)
    body = etree.fromstring(raw)
    assert body.prefix == "q0"
    response = await harness.post(
        "/SOAP/iti38", envelope(ACTION_38, body, soap_prefix="soapenv", wsa_prefix="wsa", pretty=True), SOAP_CT
    )
    assert b"ExtrinsicObject" in response.content
    assert NHS_OID in response.text
