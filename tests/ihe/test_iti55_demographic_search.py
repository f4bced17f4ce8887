"""ITI-55 without an NHS number: discovery by a PDS demographic search (issue 14; docs/ihe.md).

The PDS port here is the in-test stand-in (the real client and the simulator's search are tested in
tests/nhs/test_pds_search.py; the whole path over real HTTP in tests/nhs/test_iti55_demographic_search_simulator.py).
"""

from __future__ import annotations

import pytest
import structlog
from lxml import etree
from tests.ihe.schemas import schema_errors
from tests.ihe.support import (
    ACTION_55,
    DEMO_NHS,
    HL7,
    NHS_OID,
    NS,
    Pds,
    UpstreamDown,
    assertion,
    cx,
    epic_statement,
    iti55_body,
    new_signing_key,
    patient,
    security_header,
)

from xhuma.ports import PdsSearchMatch, PdsSearchResult

EPIC_MRN = ("1.2.840.114350.1.13.525.3.7.3.688884.100", "E12345")
MORE_ATTRIBUTES = "1.3.6.1.4.1.19376.1.2.27.1"


def without_nhs_number(*, postcode: str | None = None, telecom: str | None = None, **kwargs) -> etree._Element:
    """An Epic-shaped query: the initiator's own MRN and demographics, no NHS number."""
    body = iti55_body([[EPIC_MRN]], **kwargs)
    parameters = body.find(".//hl7:parameterList", NS)
    if postcode:
        address = etree.SubElement(etree.SubElement(parameters, f"{{{HL7}}}patientAddress"), f"{{{HL7}}}value")
        etree.SubElement(address, f"{{{HL7}}}postalCode").text = postcode
        etree.SubElement(parameters[-1], f"{{{HL7}}}semanticsText").text = "Patient.addr"
    if telecom:
        element = etree.SubElement(parameters, f"{{{HL7}}}patientTelecom")
        etree.SubElement(element, f"{{{HL7}}}value", value=telecom)
        etree.SubElement(element, f"{{{HL7}}}semanticsText").text = "Patient.telecom"
    return body


async def discover(harness, body):
    return (await harness.answered("/SOAP/iti55", ACTION_55, body))[2]


def answer_codes(message) -> tuple[str, str]:
    return (message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code"),
            message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code"))


def requested(message) -> list[tuple[str, str]]:
    return [(code.get("code"), code.get("codeSystem")) for code in message.iterfind(
        "hl7:controlActProcess/hl7:reasonOf/hl7:detectedIssueEvent/hl7:triggerFor/hl7:actOrderRequired/hl7:code", NS)]


def searching(result: PdsSearchResult) -> Pds:
    pds = Pds()
    pds.search_result = result
    return pds


def one(score: float = 1.0, **overrides) -> PdsSearchResult:
    return PdsSearchResult((PdsSearchMatch(patient(**overrides), score),))


async def test_iti55_without_nhs_number_finds_the_patient_by_pds_search_and_answers_the_nhs_number(harness_factory):
    harness = await harness_factory(pds=searching(one()))
    message = await discover(harness, without_nhs_number(postcode="LS1 1AA"))
    assert answer_codes(message) == ("AA", "OK")
    assert schema_errors(message) == []
    person_patient = message.find(".//hl7:registrationEvent/hl7:subject1/hl7:patient", NS)
    ids = [(i.get("root"), i.get("extension")) for i in person_patient.iterfind("hl7:id", NS)]
    assert ids == [(NHS_OID, DEMO_NHS)]  # the NHS number, which the partner uses in ITI-38
    other = person_patient.find("hl7:patientPerson/hl7:asOtherIDs", NS)
    assert (other.find("hl7:id", NS).get("root"), other.find("hl7:id", NS).get("extension")) == EPIC_MRN
    assert other.find("hl7:scopingOrganization/hl7:id", NS).get("root") == EPIC_MRN[0]
    search = harness.pds.searches[0]
    assert (search.family, search.given, search.birth_date, search.gender, search.postcode) == (
        "Smith", "Jane", "1952-05-31", "female", "LS1 1AA")
    assert search.mode == "non-fuzzy"
    event = (await harness.events(transaction="ITI-55"))[0]
    assert event["outcome"] == "success" and event["patient_pseudonym"] == harness.gateway.auditor.pseudonym(DEMO_NHS)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (PdsSearchResult(too_many=True), "TooManyMatches"),
        (PdsSearchResult((PdsSearchMatch(patient(), 1.0), PdsSearchMatch(patient("9434765919"), 0.95))),
         "SeveralCandidates"),
        (one(score=0.85), "LowScore"),
    ],
    ids=["too-many-matches", "several-candidates", "low-score"],
)
async def test_iti55_several_candidates_or_a_low_score_is_NF_asking_for_more_demographics_never_a_guess(
    harness_factory, result, reason
):
    harness = await harness_factory(pds=searching(result))
    message = await discover(harness, without_nhs_number())
    assert answer_codes(message) == ("AA", "NF")
    assert message.find(".//hl7:registrationEvent", NS) is None
    # Gender was sent; address and telecom were not (ITI TF-2 3.55.4.2.2.6).
    assert requested(message) == [
        ("PatientAddressRequested", MORE_ATTRIBUTES), ("PatientTelecomRequested", MORE_ATTRIBUTES)
    ]
    issue = message.find("hl7:controlActProcess/hl7:reasonOf/hl7:detectedIssueEvent/hl7:code", NS)
    assert (issue.get("code"), issue.get("codeSystem")) == (
        "ActAdministrativeDetectedIssueCode", "2.16.840.1.113883.5.4"
    )
    assert message.find(".//hl7:queryAck/hl7:statusCode", NS).get("code") == "deliveredResponse"
    assert schema_errors(message) == []
    event = (await harness.events(transaction="ITI-55"))[0]
    assert event["outcome"] == "no-match" and event["reason"] == f"MoreDemographicsNeeded:{reason}"
    assert event["patient_pseudonym"] is None


async def test_iti55_asks_only_for_what_the_query_did_not_send(harness_factory):
    harness = await harness_factory(pds=searching(PdsSearchResult(too_many=True)))
    message = await discover(harness, without_nhs_number(gender=None, postcode="LS1 1AA", telecom="tel:+441632960001"))
    assert [code for code, _ in requested(message)] == ["LivingSubjectAdministrativeGenderRequested"]
    assert harness.pds.searches[0].phone == "+441632960001"


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ({"security": "R", "addresses": (), "gp_ods_code": None}, "PatientRestricted"),
        ({"deceased": "2020-01-01T00:00:00+00:00"}, "PatientDeceased"),
        ({"family": "Smyth"}, "DemographicsMismatch"),
    ],
    ids=["restricted", "deceased", "family-name-disagrees"],
)
async def test_iti55_search_candidate_restricted_deceased_or_disagreeing_is_plain_NF_disclosing_nothing(
    harness_factory, candidate, reason
):
    harness = await harness_factory(pds=searching(one(**candidate)))
    message = await discover(harness, without_nhs_number())
    assert answer_codes(message) == ("AA", "NF")
    assert message.find("hl7:controlActProcess/hl7:reasonOf", NS) is None
    assert DEMO_NHS.encode() not in etree.tostring(message)
    event = (await harness.events(transaction="ITI-55"))[0]
    assert event["reason"].split(":")[0] == reason


async def test_iti55_search_needs_family_name_and_full_birth_date_else_NF_without_asking_pds(harness_factory):
    harness = await harness_factory(pds=searching(one()))
    message = await discover(harness, without_nhs_number(birth="1952"))
    assert answer_codes(message) == ("AA", "NF") and harness.pds.searches == []
    assert (await harness.events(transaction="ITI-55"))[0]["reason"] == "PatientNotFound:DemographicsMissing"


async def test_iti55_demographic_search_can_be_turned_off_for_trusts_that_require_the_nhs_number(
    harness_factory, make_settings
):
    harness = await harness_factory(make_settings(pds_demographic_search=False), pds=searching(one()))
    message = await discover(harness, without_nhs_number())
    assert answer_codes(message) == ("AA", "NF") and harness.pds.searches == []
    assert (await harness.events(transaction="ITI-55"))[0]["reason"] == "PatientNotFound:NoNhsNumber"


async def test_iti55_score_threshold_is_a_setting(harness_factory, make_settings):
    harness = await harness_factory(make_settings(pds_search_min_score=0.8), pds=searching(one(score=0.85)))
    assert answer_codes(await discover(harness, without_nhs_number())) == ("AA", "OK")


async def test_iti55_pds_search_error_is_AE_with_a_retry_hint_never_NF(harness_factory):
    pds = searching(one())
    pds.error = UpstreamDown("PDS 503 while searching Smith", status=503)
    harness = await harness_factory(pds=pds)
    message = await discover(harness, without_nhs_number())
    assert answer_codes(message) == ("AE", "AE")
    assert "retry later" in message.findtext("hl7:acknowledgement/hl7:acknowledgementDetail/hl7:text", namespaces=NS)
    assert b"Smith" not in etree.tostring(message.find("hl7:acknowledgement", NS))
    assert schema_errors(message) == []


async def test_iti55_demographics_never_reach_a_log_line_or_the_audit_row_in_clear(harness_factory):
    harness = await harness_factory(pds=searching(PdsSearchResult(too_many=True)))
    with structlog.testing.capture_logs() as logs:
        await discover(harness, without_nhs_number(postcode="LS1 1AA"))
    harness.pds.search_result = one()
    with structlog.testing.capture_logs() as more_logs:
        await discover(harness, without_nhs_number(postcode="LS1 1AA"))
    rows = repr(await harness.events(transaction="ITI-55"))
    for value in ("Smith", "Jane", "19520531", "1952-05-31", "LS1 1AA", DEMO_NHS, EPIC_MRN[1]):
        assert value not in repr(logs + more_logs) and value not in rows


@pytest.mark.parametrize(("named", "expected"), [(DEMO_NHS, ("AA", "OK")), ("9434765919", ("AA", "NF"))],
                         ids=["assertion-names-the-found-patient", "assertion-names-another-patient"])
async def test_iti55_search_match_must_be_the_patient_a_verified_assertion_names(
    harness_factory, make_settings, tmp_path, data_dir, named, expected
):
    signer = new_signing_key()
    trusted = tmp_path / "saml.pem"
    trusted.write_bytes(signer.cert_pem)
    audience = "https://xhuma.example.nhs.uk"
    harness = await harness_factory(
        make_settings(saml_verify="required", saml_trusted_certs=[trusted], saml_audience=[audience]),
        pds=searching(one()),
    )
    saml = assertion(epic_statement(data_dir, resource_id=cx(named)), signer=signer, audience=audience)
    message = (await harness.answered("/SOAP/iti55", ACTION_55, without_nhs_number(),
                                      security=security_header(saml)))[2]
    assert answer_codes(message) == expected
    if expected[1] == "NF":
        assert DEMO_NHS.encode() not in etree.tostring(message)
        event = (await harness.events(transaction="ITI-55"))[0]
        assert event["reason"] == "DemographicsMismatch:ResourceIdNamesAnotherPatient"
