"""ITI-55 Cross Gateway Patient Discovery: PRPA_IN201305UV02 in, PRPA_IN201306UV02 out (SPEC §1).

The whole transaction: its descriptor (``ITI_55``, listed in ``xhuma.ihe.transactions``), its handler
(``PatientDiscovery``), and its messages. The response is built as an lxml tree in schema order (valid against the
HL7 V3 NE2008 schema: LESSONS 5).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from xhuma import errors
from xhuma.ihe import faults
from xhuma.ihe.descriptor import HL7, AtnaEvent, ErrorForm, Transaction
from xhuma.ihe.exchange import Exchange, GatewayServices, SoapResponse, log_unexpected
from xhuma.ihe.faults import ACK_INTERNAL_ERROR, XcpdAnswer
from xhuma.ihe.saml import resource_nhs_number
from xhuma.ihe.soap import hl7_timestamp, sender_fault
from xhuma.nhs.nhs_number import NHS_NUMBER_OID, normalise
from xhuma.ports import CallerIdentity, PdsPatient
from xhuma.records import DemographicQuery

XSI = "http://www.w3.org/2001/XMLSchema-instance"
H = f"{{{HL7}}}"

ACTION_REQUEST = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
ACTION_RESPONSE = "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery"
REQUEST_ELEMENT = f"{H}PRPA_IN201305UV02"

ODS_OID = "2.16.840.1.113883.2.1.3.2.4.19.1"
INTERACTION_ROOT = "2.16.840.1.113883.1.6"
XCPD_ERROR_CODES = "1.3.6.1.4.1.19376.1.2.27.3"
HEALTH_DATA_LOCATOR_CODES = "1.3.6.1.4.1.19376.1.2.27.2"
DETECTED_ISSUE_CODES = "2.16.840.1.113883.5.4"
ACK_DETAIL_CODES = "2.16.840.1.113883.5.1100"
MORE_ATTRIBUTES_REQUESTED_CODES = "1.3.6.1.4.1.19376.1.2.27.1"

# FHIR administrative gender -> HL7 AdministrativeGender; unknown (or none) is nullFlavor UNK, not UN, which HL7
# defines as "undifferentiated" and partners' parsers reject for an unknown gender.
_GENDER_CODES = {"male": "M", "female": "F", "other": "UN"}


@dataclass(slots=True)
class PatientDiscoveryRequest:
    message_id: etree._Element | None  # <id root extension> of the request
    processing_code: str
    sender_device_id: etree._Element | None
    sender_community_id: etree._Element | None
    receiver_device_id: etree._Element | None
    query_by_parameter: etree._Element
    query_id: etree._Element | None
    response_priority: str | None
    nhs_numbers: list[str] = field(default_factory=list)
    demographics: DemographicQuery = field(default_factory=DemographicQuery)
    other_ids: list[tuple[str, str]] = field(default_factory=list)  # (root, extension): the initiator's own ids
    nhs_number_sent: bool = False  # an id under the NHS number OID, even an empty one (then not searched for)


def _find(element: etree._Element, path: str) -> etree._Element | None:
    return element.find(path.replace("hl7:", H))


@dataclass(slots=True)
class _Identifiers:
    nhs_numbers: list[str] = field(default_factory=list)
    others: list[tuple[str, str]] = field(default_factory=list)
    nhs_number_sent: bool = False


def _identifiers(parameters: etree._Element) -> _Identifiers:
    """Every livingSubjectId/value: one or many elements, one or many values each (LESSONS 1)."""
    found = _Identifiers()
    for value in parameters.iterfind(f"{H}livingSubjectId/{H}value"):
        root, extension = (value.get("root") or "").strip(), (value.get("extension") or "").strip()
        if root == NHS_NUMBER_OID:
            found.nhs_number_sent = True
            number = normalise(extension)  # any whitespace or hyphens, as validation does
            if extension and number not in found.nhs_numbers:
                found.nhs_numbers.append(number)
        elif root and extension and (root, extension) not in found.others:
            found.others.append((root, extension))
    return found


def _text(element: etree._Element | None) -> str | None:
    return (element.text or "").strip() or None if element is not None else None


def _attribute(element: etree._Element | None, name: str) -> str | None:
    return (element.get(name) or "").strip() or None if element is not None else None


def _demographics(parameters: etree._Element) -> DemographicQuery:
    name = _find(parameters, "hl7:livingSubjectName/hl7:value")
    families = [text for text in (_text(f) for f in name.iterfind(f"{H}family")) if text] if name is not None else []
    given = tuple(text for text in (_text(g) for g in name.iterfind(f"{H}given")) if text) if name is not None else ()
    family = families[0] if families else None
    birth_date = _attribute(_find(parameters, "hl7:livingSubjectBirthTime/hl7:value"), "value")
    gender = _attribute(_find(parameters, "hl7:livingSubjectAdministrativeGender/hl7:value"), "code")
    telecom = tuple(value for value in (_attribute(v, "value") for v in parameters.iterfind(
        f"{H}patientTelecom/{H}value")) if value)
    return DemographicQuery(
        family=family, given=given, birth_date=birth_date[:8] if birth_date else None,
        gender=gender.upper() if gender else None,
        postcode=_text(_find(parameters, "hl7:patientAddress/hl7:value/hl7:postalCode")), telecom=telecom,
    )


def parse_request(body: etree._Element) -> PatientDiscoveryRequest:
    if body.tag != REQUEST_ELEMENT:
        raise sender_fault("The ITI-55 body must be a PRPA_IN201305UV02 message")
    query = _find(body, "hl7:controlActProcess/hl7:queryByParameter")
    if query is None:
        raise sender_fault("The ITI-55 message has no queryByParameter")
    parameters = _find(query, "hl7:parameterList")
    identifiers = _identifiers(parameters) if parameters is not None else _Identifiers()
    priority = _find(query, "hl7:responsePriorityCode")
    processing = _find(body, "hl7:processingCode")
    return PatientDiscoveryRequest(
        message_id=_find(body, "hl7:id"),
        processing_code=(processing.get("code") if processing is not None else None) or "P",
        sender_device_id=_find(body, "hl7:sender/hl7:device/hl7:id"),
        sender_community_id=_find(body, "hl7:sender/hl7:device/hl7:asAgent/hl7:representedOrganization/hl7:id"),
        receiver_device_id=_find(body, "hl7:receiver/hl7:device/hl7:id"),
        query_by_parameter=query,
        query_id=_find(query, "hl7:queryId"),
        response_priority=priority.get("code") if priority is not None else None,
        nhs_numbers=identifiers.nhs_numbers,
        demographics=_demographics(parameters) if parameters is not None else DemographicQuery(),
        other_ids=identifiers.others,
        nhs_number_sent=identifiers.nhs_number_sent,
    )


# --- response --------------------------------------------------------------------------------------------------
def _sub(parent: etree._Element, local: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{H}{local}", attributes)


def _copy_ii(parent: etree._Element, local: str, source: etree._Element | None) -> etree._Element:
    element = _sub(parent, local)
    if source is not None and (source.get("root") or source.get("nullFlavor")):
        for attribute in ("root", "extension", "nullFlavor"):
            if source.get(attribute):
                element.set(attribute, source.get(attribute, ""))
    else:
        element.set("nullFlavor", "UNK")
    return element


@dataclass(frozen=True, slots=True)
class ResponderIdentity:
    device_oid: str
    home_community_id: str  # plain OID (no urn:oid:)
    organisation_name: str
    match_code_system: str = ""  # queryMatchObservation/code/@codeSystem (XHUMA_XCPD_MATCH_CODE_SYSTEM)


def build_response(
    request: PatientDiscoveryRequest,
    responder: ResponderIdentity,
    *,
    patient: PdsPatient | None = None,
    practice_name: str | None = None,
    error: XcpdAnswer | None = None,
) -> etree._Element:
    """PRPA_IN201306UV02 for a match (patient), a no match (neither) or an error (``error`` with AE)."""
    is_error = error is not None and not error.no_match
    message = etree.Element(f"{H}PRPA_IN201306UV02", {"ITSVersion": "XML_1.0"}, nsmap={None: HL7, "xsi": XSI})
    _sub(message, "id", root=str(uuid.uuid4()))
    _sub(message, "creationTime", value=hl7_timestamp())
    _sub(message, "interactionId", root=INTERACTION_ROOT, extension="PRPA_IN201306UV02")
    _sub(message, "processingCode", code=request.processing_code if request.processing_code in "PTD" else "P")
    _sub(message, "processingModeCode", code="T")
    _sub(message, "acceptAckCode", code="NE")
    receiver = _sub(message, "receiver", typeCode="RCV")
    receiver_device = _sub(receiver, "device", classCode="DEV", determinerCode="INSTANCE")
    _copy_ii(receiver_device, "id", request.sender_device_id)
    if request.sender_community_id is not None:
        agent = _sub(receiver_device, "asAgent", classCode="AGNT")
        organisation = _sub(agent, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
        _copy_ii(organisation, "id", request.sender_community_id)
    sender = _sub(message, "sender", typeCode="SND")
    sender_device = _sub(sender, "device", classCode="DEV", determinerCode="INSTANCE")
    _sub(sender_device, "id", root=responder.device_oid)
    sender_agent = _sub(sender_device, "asAgent", classCode="AGNT")
    sender_org = _sub(sender_agent, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
    _sub(sender_org, "id", root=responder.home_community_id)

    acknowledgement = _sub(message, "acknowledgement")
    _sub(acknowledgement, "typeCode", code="AE" if is_error else "AA")
    target = _sub(acknowledgement, "targetMessage")
    _copy_ii(target, "id", request.message_id)
    if is_error and error is not None:
        detail = _sub(acknowledgement, "acknowledgementDetail", typeCode="E")
        _sub(detail, "code", code=error.ack_detail or ACK_INTERNAL_ERROR, codeSystem=ACK_DETAIL_CODES)
        _sub(detail, "text").text = error.text or "Internal error"

    control = _sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    _sub(control, "code", code="PRPA_TE201306UV02", codeSystem=INTERACTION_ROOT)
    if patient is not None and not is_error:
        _registration_event(control, patient, responder, practice_name, request.other_ids)
    if error is not None:
        _reason_of(control, error)
    query_ack = _sub(control, "queryAck")
    _copy_ii(query_ack, "queryId", request.query_id)
    _sub(query_ack, "statusCode", code="aborted" if is_error else "deliveredResponse")
    response_code = "AE" if is_error else ("OK" if patient is not None else "NF")
    _sub(query_ack, "queryResponseCode", code=response_code)
    control.append(copy.deepcopy(request.query_by_parameter))  # the echoed queryByParameter
    return message


def _reason_of(control: etree._Element, error: XcpdAnswer) -> None:
    if not error.no_match and error.xcpd_code:
        # ITI TF-2 3.55.4.2.2.7: the XCPD error code in reasonOf/detectedIssueEvent/mitigatedBy.
        issue = _detected_issue(control)
        mitigated = _sub(issue, "mitigatedBy", typeCode="MITGT")
        management = _sub(mitigated, "detectedIssueManagement", classCode="ACT", moodCode="EVN")
        _sub(management, "code", code=error.xcpd_code, codeSystem=XCPD_ERROR_CODES)
    elif error.no_match and error.requested:
        # ITI TF-2 3.55.4.2.2.6: the attributes that would single the patient out, each in
        # reasonOf/detectedIssueEvent/triggerFor/actOrderRequired/code.
        issue = _detected_issue(control)
        for attribute in error.requested:
            trigger = _sub(issue, "triggerFor", typeCode="TRIG")
            order = _sub(trigger, "actOrderRequired", classCode="ACT", moodCode="RQO")
            _sub(order, "code", code=attribute, codeSystem=MORE_ATTRIBUTES_REQUESTED_CODES)


def _detected_issue(control: etree._Element) -> etree._Element:
    reason = _sub(control, "reasonOf", typeCode="RSON")
    issue = _sub(reason, "detectedIssueEvent", classCode="ALRT", moodCode="EVN")
    _sub(issue, "code", code="ActAdministrativeDetectedIssueCode", codeSystem=DETECTED_ISSUE_CODES)
    return issue


def _registration_event(
    control: etree._Element, patient: PdsPatient, responder: ResponderIdentity, practice_name: str | None,
    other_ids: list[tuple[str, str]],
) -> None:
    subject = _sub(control, "subject", typeCode="SUBJ")
    event = _sub(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    _sub(event, "id", nullFlavor="NA")
    _sub(event, "statusCode", code="active")
    subject1 = _sub(event, "subject1", typeCode="SBJ")
    patient_element = _sub(subject1, "patient", classCode="PAT")
    _sub(patient_element, "id", root=NHS_NUMBER_OID, extension=patient.nhs_number)
    _sub(patient_element, "statusCode", code="active")
    person = _sub(patient_element, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    name = _sub(person, "name")
    for prefix in patient.prefix:
        _sub(name, "prefix").text = prefix
    for given in patient.given:
        _sub(name, "given").text = given
    if patient.family:
        _sub(name, "family").text = patient.family
    if not patient.restricted:
        for system, value in patient.telecom:
            scheme = {"phone": "tel:", "email": "mailto:"}.get(system)
            if scheme:
                _sub(person, "telecom", value=scheme + value.replace(" ", ""))
    gender = _GENDER_CODES.get((patient.gender or "").lower())
    if gender:
        _sub(person, "administrativeGenderCode", code=gender)
    else:
        _sub(person, "administrativeGenderCode", nullFlavor="UNK")
    if patient.birth_date:
        _sub(person, "birthTime", value=patient.birth_date.replace("-", ""))
    if not patient.restricted:
        for address in patient.addresses[:1]:
            addr = _sub(person, "addr", use="H")
            for line in address.lines:
                _sub(addr, "streetAddressLine").text = line
            if address.city:
                _sub(addr, "city").text = address.city
            if address.postcode:
                _sub(addr, "postalCode").text = address.postcode
    for root, extension in other_ids:
        # The initiator's own id for the patient, echoed so that it can correlate; patient/id stays the NHS number,
        # which it must use in ITI-38 (the IPF ITI-55 schematron: one patient/id, other ids in asOtherIDs).
        other = _sub(person, "asOtherIDs", classCode="PAT")
        _sub(other, "id", root=root, extension=extension)
        scoping = _sub(other, "scopingOrganization", classCode="ORG", determinerCode="INSTANCE")
        _sub(scoping, "id", root=root)
    if patient.gp_ods_code:
        provider = _sub(patient_element, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
        _sub(provider, "id", root=ODS_OID, extension=patient.gp_ods_code)
        # The practice's name as ITI-38 gives it (its GP Connect record), the ODS code when no record has been seen.
        _sub(provider, "name").text = practice_name or patient.gp_ods_code
        # COCT_MT150003UV03 requires a contactParty; we hold no contact details for the practice.
        _sub(provider, "contactParty", classCode="CON", nullFlavor="UNK")
    subject_of = _sub(patient_element, "subjectOf1")
    observation = _sub(subject_of, "queryMatchObservation", classCode="COND", moodCode="EVN")
    if responder.match_code_system:
        _sub(observation, "code", code="IHE_PDQ", codeSystem=responder.match_code_system)
    else:
        _sub(observation, "code", code="IHE_PDQ")
    value = _sub(observation, "value", value="100")
    value.set(f"{{{XSI}}}type", "INT")
    custodian = _sub(event, "custodian", typeCode="CST")
    entity = _sub(custodian, "assignedEntity", classCode="ASSIGNED")
    _sub(entity, "id", root=responder.home_community_id)
    # We do not implement ITI-56, so NotHealthDataLocator (SPEC §1.7).
    _sub(entity, "code", code="NotHealthDataLocator", codeSystem=HEALTH_DATA_LOCATOR_CODES)


# --- the handler ------------------------------------------------------------------------------------------------
class PatientDiscovery:
    """ITI-55 over the gateway's services: the patient the query names, or the acknowledgement saying why not."""

    def __init__(self, services: GatewayServices) -> None:
        settings = services.settings
        self.settings = settings
        self.records = services.records
        self.verifier = services.verifier
        self.responder = ResponderIdentity(
            device_oid=settings.device_oid,
            home_community_id=settings.home_community_id,
            organisation_name=settings.organisation_name,
            match_code_system=settings.xcpd_match_code_system,
        )

    async def __call__(self, exchange: Exchange) -> SoapResponse:
        try:
            query = parse_request(exchange.request.body)
            nhs_number = query.nhs_numbers[0] if len(query.nhs_numbers) == 1 else None
            caller = exchange.caller = self.verifier.check_patient(exchange.caller, nhs_number)
        except Exception as error:
            return await exchange.fault(error)

        message_id = exchange.message_id
        patient: PdsPatient | None = None
        answer: XcpdAnswer | None = None
        practice_name: str | None = None
        try:
            # Assigned only once every check has passed: an error must never leave a patient to disclose.
            patient, practice_name = await self._discover(query, caller)
        except Exception as error:
            answer = faults.xcpd_answer(error)
            log_unexpected(ITI_55, error)
            detail = getattr(error, "detail", None)
            reason = f"{answer.reason}:{detail}" if detail else answer.reason
            await exchange.audit(
                "no-match" if answer.no_match else "error", nhs_number=nhs_number, caller=caller,
                error_code=answer.xcpd_code or answer.reason, reason=reason, message_id=message_id,
                duration_ms=exchange.elapsed_ms(),
            )
        else:
            # A match discloses demographics: no disclosure without a committed audit event.
            if not await exchange.audit(
                "success", nhs_number=patient.nhs_number, caller=caller, message_id=message_id,
                duration_ms=exchange.elapsed_ms(),
                details={"discovery": "nhs-number" if query.nhs_numbers else "demographics"},
            ):
                patient, answer = None, faults.xcpd_answer(errors.AuditUnavailable())
            elif self.settings.prefetch_on_match:
                self.records.prefetch(patient.nhs_number, caller)
        return exchange.reply(
            build_response(query, self.responder, patient=patient, practice_name=practice_name, error=answer)
        )

    async def _discover(
        self, query: PatientDiscoveryRequest, caller: CallerIdentity
    ) -> tuple[PdsPatient, str | None]:
        """The patient an ITI-55 query names and its practice's name, or the error that answers it."""
        if query.response_priority == "D":
            raise errors.UnsupportedProcessingMode()
        if len(query.nhs_numbers) > 1:
            raise errors.DemographicsMismatch(detail="SeveralNhsNumbers")
        if query.nhs_numbers:
            patient = await self.records.discover_patient(query.nhs_numbers[0], query.demographics)
        elif query.nhs_number_sent:  # an empty NHS number: invalid, never replaced by a search's answer
            raise errors.InvalidNhsNumber()
        else:  # no NHS number (a partner's own MRN, or none): a PDS demographic search (docs/ihe.md)
            patient = await self.records.discover_by_demographics(query.demographics)
            named = resource_nhs_number(caller.resource_id) if caller.verified else None
            if named is not None and normalise(named) != patient.nhs_number:
                # The assertion is about another patient than the one the demographics found: disclose nothing.
                raise errors.DemographicsMismatch(detail="ResourceIdNamesAnotherPatient")
        practice = await self.records.practice_name(patient.gp_ods_code) if patient.gp_ods_code else None
        return patient, practice


# --- the descriptor (its line in the registry: xhuma.ihe.transactions) -------------------------------------------
_SCHEMAS = "hl7v3/HL7V3/NE2008/multicacheschemas"

ITI_55: Final = Transaction(
    id="ITI-55",
    name="Cross Gateway Patient Discovery",
    path="/SOAP/iti55",
    request_action=ACTION_REQUEST,
    response_action=ACTION_RESPONSE,
    request_element=REQUEST_ELEMENT,
    response_element=f"{H}PRPA_IN201306UV02",
    request_schema=f"{_SCHEMAS}/PRPA_IN201305UV02.xsd",
    response_schema=f"{_SCHEMAS}/PRPA_IN201306UV02.xsd",
    atna=AtnaEvent("110112", "Query", "E", "Cross Gateway Patient Discovery"),
    error_form=ErrorForm.XCPD_ACKNOWLEDGEMENT,
    handler=PatientDiscovery,
)
