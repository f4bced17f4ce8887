"""ITI-55 without an NHS number, end to end: the gateway, the real PDS client and the simulator's PDS search over
real HTTP (docs/ihe.md, discovery by demographics)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from lxml import etree
from tests.ihe.schemas import schema_errors
from tests.ihe.support import ACTION_55, HL7, NHS_OID, NS, Harness, iti55_body, make_harness

from xhuma.config import Settings
from xhuma.nhs.simulator.patients import SEARCH_PATIENTS, Fault, SearchCase, fault_patient

from .conftest import Nhs

EPIC_MRN = ("1.2.840.114350.1.13.525.3.7.3.688884.100", "E777")
_GENDER = {"male": "M", "female": "F"}


@pytest.fixture
async def gateway(nhs: Nhs, make_settings: Callable[..., Settings], sqlite_database_url: str) -> AsyncIterator[Any]:
    made: list[Harness] = []

    async def factory(**settings: Any) -> Harness:
        harness = await make_harness(make_settings(**settings), database_url=sqlite_database_url, pds=nhs.pds)  # type: ignore[arg-type]
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.records.aclose()
        await harness.client.aclose()
        await harness.audit.close()


def query(family: str, given: str | None, birth: str, gender: str | None, postcode: str | None = None,
          phone: str | None = None) -> etree._Element:
    body = iti55_body([[EPIC_MRN]], family=family, given=given, birth=birth.replace("-", ""),
                      gender=_GENDER.get(gender or ""))
    parameters = body.find(".//hl7:parameterList", NS)
    if postcode:
        value = etree.SubElement(etree.SubElement(parameters, f"{{{HL7}}}patientAddress"), f"{{{HL7}}}value")
        etree.SubElement(value, f"{{{HL7}}}postalCode").text = postcode
        etree.SubElement(parameters[-1], f"{{{HL7}}}semanticsText").text = "Patient.addr"
    if phone:
        telecom = etree.SubElement(parameters, f"{{{HL7}}}patientTelecom")
        etree.SubElement(telecom, f"{{{HL7}}}value", value=f"tel:{phone}")
        etree.SubElement(telecom, f"{{{HL7}}}semanticsText").text = "Patient.telecom"
    return body


async def answer(harness: Harness, body: etree._Element) -> tuple[str, str | None, list[str]]:
    message = (await harness.answered("/SOAP/iti55", ACTION_55, body))[2]
    assert schema_errors(message) == []
    code = message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code")
    patient_id = message.find(".//hl7:subject1/hl7:patient/hl7:id", NS)
    number = patient_id.get("extension") if patient_id is not None and patient_id.get("root") == NHS_OID else None
    requested = [c.get("code") for c in message.iterfind(".//hl7:triggerFor/hl7:actOrderRequired/hl7:code", NS)]
    return code, number, requested


async def test_iti55_epic_shaped_query_without_nhs_number_is_matched_through_the_simulators_pds_search(gateway):
    harness = await gateway()
    sally = SEARCH_PATIENTS[SearchCase.UNIQUE][0]
    assert await answer(harness, query(sally.family, sally.given, sally.birth_date, sally.gender, sally.postcode)) == (
        "OK", sally.nhs_number, [])


async def test_iti55_ambiguous_pair_asks_for_more_then_matches_once_the_given_name_tells_them_apart(gateway):
    harness = await gateway()
    alex, sam = SEARCH_PATIENTS[SearchCase.PAIR]
    code, number, requested = await answer(harness, query(alex.family, None, alex.birth_date, None))
    assert (code, number) == ("NF", None)
    assert requested == ["LivingSubjectAdministrativeGenderRequested", "PatientAddressRequested",
                         "PatientTelecomRequested"]
    assert await answer(harness, query(sam.family, sam.given, sam.birth_date, sam.gender)) == ("OK", sam.nhs_number, [])


async def test_iti55_too_many_matches_asks_for_the_telephone_which_then_singles_the_patient_out(gateway):
    harness = await gateway()
    triplet = SEARCH_PATIENTS[SearchCase.TOO_MANY][1]
    demographics = (triplet.family, triplet.given, triplet.birth_date, triplet.gender, triplet.postcode)
    assert await answer(harness, query(*demographics)) == ("NF", None, ["PatientTelecomRequested"])
    assert await answer(harness, query(*demographics, phone=triplet.phone)) == ("OK", triplet.nhs_number, [])


async def test_iti55_match_by_a_previous_postcode_scores_below_the_threshold_and_is_not_a_guess(gateway):
    moved = SEARCH_PATIENTS[SearchCase.MOVED][0]
    body = query(moved.family, moved.given, moved.birth_date, moved.gender, moved.previous_postcode)
    assert await answer(await gateway(), body) == ("NF", None, ["PatientTelecomRequested"])
    assert (await answer(await gateway(pds_search_min_score=0.8), body))[:2] == ("OK", moved.nhs_number)


@pytest.mark.parametrize(("fault", "given", "birth", "gender"), [
    (Fault.RESTRICTED, "Rachel", "1980-01-01", "female"), (Fault.DECEASED, "David", "1931-02-02", "male")])
async def test_iti55_search_for_restricted_or_deceased_patients_is_plain_NF_disclosing_nothing(
    gateway, fault, given, birth, gender
):
    harness = await gateway()
    message = (await harness.answered("/SOAP/iti55", ACTION_55,
                                      query(f"XHUMA-{fault.value.upper()}", given, birth, gender)))[2]
    assert message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code") == "NF"
    assert message.find("hl7:controlActProcess/hl7:reasonOf", NS) is None
    assert fault_patient(fault).encode() not in etree.tostring(message)


async def test_iti55_pds_search_unavailable_is_AE_never_NF(gateway, nhs: Nhs):
    harness = await gateway()
    nhs.state.inject("pds", 503, 503, 503)
    sally = SEARCH_PATIENTS[SearchCase.UNIQUE][0]
    message = (await harness.answered("/SOAP/iti55", ACTION_55,
                                      query(sally.family, sally.given, sally.birth_date, sally.gender)))[2]
    assert message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AE"
    assert message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code") == "AE"
