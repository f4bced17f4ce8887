"""ITI-38 Cross Gateway Query: AdhocQueryRequest in, AdhocQueryResponse out (SPEC §2).

FindDocuments and GetDocuments are answered; the other registry stored queries give an empty Success and an
unknown query id is ``XDSUnknownStoredQuery``. Each DocumentEntry carries the full metadata of SPEC §2.3
(LESSONS 8). Query problems raise ``XdsQueryError`` (an ``InvalidRequest`` with its XDS error code).

The whole transaction: its descriptor (``ITI_38``, listed in ``xhuma.ihe.transactions``), its handler
(``CrossGatewayQuery``), and its messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from lxml import etree

from xhuma import errors as xhuma_errors
from xhuma.config import EntryType, Settings
from xhuma.errors import InvalidRequest
from xhuma.ihe import faults
from xhuma.ihe.descriptor import QUERY, AtnaEvent, ErrorForm, Transaction
from xhuma.ihe.exchange import Exchange, GatewayServices, SoapResponse, log_unexpected
from xhuma.ihe.faults import RegistryErrorInfo
from xhuma.ihe.soap import sender_fault
from xhuma.nhs.nhs_number import NHS_NUMBER_OID, is_valid_nhs_number
from xhuma.ports import CallerIdentity, StoredDocument

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
Q = f"{{{QUERY}}}"
R = f"{{{RIM}}}"

ACTION_REQUEST = "urn:ihe:iti:2007:CrossGatewayQuery"
ACTION_RESPONSE = "urn:ihe:iti:2007:CrossGatewayQueryResponse"
REQUEST_ELEMENT = f"{Q}AdhocQueryRequest"

STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
# Registry stored queries about submission sets, folders and associations: we hold none (empty Success).
EMPTY_QUERIES = frozenset(
    {
        "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9",  # FindSubmissionSets
        "urn:uuid:958f3006-baad-4929-a4de-ff1114824431",  # FindFolders
        "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3",  # GetAll
        "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4",  # GetFolders
        "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155",  # GetAssociations
        "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a",  # GetDocumentsAndAssociations
        "urn:uuid:51224314-5390-4169-9b91-b1980040715a",  # GetSubmissionSets
        "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83",  # GetSubmissionSetAndContents
        "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7",  # GetFolderAndContents
        "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578",  # GetFoldersForDocument
        "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6",  # GetRelatedDocuments
        "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492",  # FindDocumentsByReferenceId
    }
)

STABLE_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND_ENTRY = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
OBJECT_TYPE_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OBJECT_TYPE_EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"

SCHEME_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
SCHEME_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
SCHEME_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
SCHEME_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
SCHEME_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
SCHEME_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
SCHEME_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
SCHEME_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SCHEME_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"

ODS_OID = "2.16.840.1.113883.2.1.3.2.4.19.1"
CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"
_UUID_NAMESPACE = uuid.UUID("0b7f3a86-3d2e-5f55-8a0c-5c1c0d6f9e41")


class XdsQueryError(InvalidRequest):
    """The stored query cannot be answered as asked (answered with its own XDS error code)."""

    code = "XdsQueryError"

    def __init__(self, xds_code: str, message: str) -> None:
        super().__init__(message)
        self.xds_code = xds_code


def query_error_info(error: XdsQueryError) -> RegistryErrorInfo:
    return RegistryErrorInfo(error.xds_code, error.message, reason=error.xds_code)


# --- request ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StoredQuery:
    query_id: str
    return_type: str  # LeafClass | ObjectRef
    home: str | None
    slots: dict[str, list[str]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        """All values of a slot, with the ('a','b') list syntax and the quotes removed."""
        found: list[str] = []
        for raw in self.slots.get(name, []):
            found.extend(split_list(raw))
        return found

    def single(self, name: str, *, required: bool = False) -> str | None:
        values = self.values(name)
        if not values:
            if required:
                raise XdsQueryError("XDSStoredQueryMissingParam", f"The stored query needs {name}")
            return None
        if len(values) > 1:
            raise XdsQueryError("XDSStoredQueryParamNumber", f"{name} must have a single value")
        return values[0]


def split_list(raw: str) -> list[str]:
    """``('a','b')``, ``'a'``, ``a`` → ['a', 'b'] / ['a'] (ITI TF-2 3.18.4.1.2.3.5 value syntax).

    An unterminated quote or a parenthesis outside quotes (other than the pair around a list) is malformed:
    ``XDSRegistryError`` rather than a guess at what was meant.
    """
    text = raw.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'":
            if quoted and index + 1 < len(text) and text[index + 1] == "'":
                current.append("'")  # '' is an escaped quote inside a quoted value
                index += 2
                continue
            quoted = not quoted
        elif char == "," and not quoted:
            values.append("".join(current).strip())
            current = []
        elif char in "()" and not quoted:
            raise XdsQueryError("XDSRegistryError", "A stored query parameter value has unbalanced parentheses")
        else:
            current.append(char)
        index += 1
    if quoted:
        raise XdsQueryError("XDSRegistryError", "A stored query parameter value has an unterminated quote")
    values.append("".join(current).strip())
    return [value for value in values if value]


def parse_request(body: etree._Element) -> StoredQuery:
    if body.tag != REQUEST_ELEMENT:
        raise sender_fault("The ITI-38 body must be an AdhocQueryRequest")
    option = body.find(f"{Q}ResponseOption")
    return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
    if return_type not in ("LeafClass", "ObjectRef"):
        raise XdsQueryError("XDSRegistryError", "Only the LeafClass and ObjectRef return types are supported")
    query = body.find(f"{R}AdhocQuery")
    if query is None:
        raise sender_fault("The AdhocQueryRequest has no AdhocQuery")
    slots: dict[str, list[str]] = {}
    for slot in query.iterfind(f"{R}Slot"):
        name = (slot.get("name") or "").strip()
        slots.setdefault(name, []).extend(
            (value.text or "").strip() for value in slot.iterfind(f"{R}ValueList/{R}Value")
        )
    return StoredQuery(
        query_id=(query.get("id") or "").strip(),
        return_type=return_type,
        home=(query.get("home") or "").strip() or None,
        slots=slots,
    )


@dataclass(frozen=True, slots=True)
class PatientCx:
    nhs_number: str
    assigning_authority: str

    @property
    def cx(self) -> str:
        return f"{self.nhs_number}^^^&{self.assigning_authority}&ISO"


def parse_patient_cx(value: str) -> PatientCx:
    """``ID^^^&OID&ISO`` → the NHS number; any other assigning authority is XDSUnknownPatientId."""
    components = value.strip().split("^")
    if len(components) < 4:
        raise XdsQueryError("XDSUnknownPatientId", "The patient id is not a CX with an assigning authority")
    authority = components[3].split("&")
    oid = authority[1] if len(authority) > 1 else authority[0]
    number = components[0].strip()
    if oid.strip() != NHS_NUMBER_OID or not number:
        raise XdsQueryError("XDSUnknownPatientId", "Only NHS numbers (2.16.840.1.113883.2.1.4.1) are known here")
    return PatientCx(number, NHS_NUMBER_OID)


def same_community(value: str | None, home_community_id: str) -> bool:
    if value is None:
        return False
    bare = value.strip()
    if bare.lower().startswith("urn:oid:"):
        bare = bare[8:]
    return bare == home_community_id


def check_home(query: StoredQuery, home_community_id: str) -> None:
    """homeCommunityId rules (ITI TF-2 3.38.4.1.2.1): ours or absent; id-based queries must name it."""
    home = query.home or query.single("$homeCommunityId")
    if home is not None and not same_community(home, home_community_id):
        raise XdsQueryError("XDSUnknownCommunity", "The homeCommunityId is not this community")
    if home is None and query.query_id == GET_DOCUMENTS:
        raise XdsQueryError("XDSMissingHomeCommunityId", "GetDocuments needs the homeCommunityId")


# --- codes from settings ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Code:
    code: str
    display: str
    scheme: str

    @classmethod
    def parse(cls, text: str) -> Code:
        code, display, scheme = [*text.split("^", 2), "", ""][:3]
        return cls(code.strip(), display.strip(), scheme.strip())

    def matches(self, wanted: str) -> bool:
        """A query code ``code^^scheme`` (scheme optional) against this code."""
        parts = wanted.split("^")
        if parts[0].strip() != self.code:
            return False
        scheme = parts[2].strip() if len(parts) > 2 else ""
        return not scheme or scheme == self.scheme


@dataclass(frozen=True, slots=True)
class EntryCodes:
    class_code: Code
    type_code: Code
    format_code: Code
    facility_type: Code
    practice_setting: Code

    @classmethod
    def from_settings(cls, settings: Settings) -> EntryCodes:
        return cls(
            Code.parse(settings.xds_class_code),
            Code.parse(settings.xds_type_code),
            Code.parse(settings.xds_format_code),
            Code.parse(settings.xds_healthcare_facility_type_code),
            Code.parse(settings.xds_practice_setting_code),
        )


# --- filters ---------------------------------------------------------------------------------------------------
def entry_type_uuid(settings: Settings) -> str:
    return ON_DEMAND_ENTRY if settings.entry_type is EntryType.ON_DEMAND else STABLE_ENTRY


def static_filters_pass(query: StoredQuery, settings: Settings, codes: EntryCodes) -> bool:
    """Filters that do not need the document: status, entry type and the coded attributes from settings.

    When they exclude our entry, the GP record is not fetched at all.
    """
    statuses = query.values("$XDSDocumentEntryStatus")
    if query.query_id == FIND_DOCUMENTS and APPROVED not in statuses:
        return False
    # No $XDSDocumentEntryType means stable entries only (ITI TF-2 3.18.4.1.2.3.6.2).
    entry_types = query.values("$XDSDocumentEntryType") or [STABLE_ENTRY]
    if entry_type_uuid(settings) not in entry_types:
        return False
    coded = {
        "$XDSDocumentEntryClassCode": codes.class_code,
        "$XDSDocumentEntryTypeCode": codes.type_code,
        "$XDSDocumentEntryFormatCode": codes.format_code,
        "$XDSDocumentEntryHealthcareFacilityTypeCode": codes.facility_type,
        "$XDSDocumentEntryPracticeSettingCode": codes.practice_setting,
    }
    for slot, code in coded.items():
        wanted = query.values(slot)
        if wanted and not any(code.matches(value) for value in wanted):
            return False
    # We never assign event codes or author persons: a filter on them matches nothing.
    return not (query.values("$XDSDocumentEntryEventCodeList") or query.values("$XDSDocumentEntryAuthorPerson"))


def dtm(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _in_range(value: datetime | None, low: str | None, high: str | None) -> bool:
    if low is None and high is None:
        return True
    if value is None:
        return False
    text = dtm(value)
    # From is inclusive, To exclusive (ITI TF-2 3.18.4.1.2.3.7.1), on the precision of the bound.
    if low is not None and text[: len(low)] < low:
        return False
    return not (high is not None and text[: len(high)] >= high)


def document_filters_pass(query: StoredQuery, document: StoredDocument) -> bool:
    confidentiality = query.values("$XDSDocumentEntryConfidentialityCode")
    if confidentiality:
        ours = Code(str(document.metadata.get("confidentiality_code") or "N"), "", CONFIDENTIALITY_SCHEME)
        if not any(ours.matches(value) for value in confidentiality):
            return False
    ranges = (
        (document.creation_time, "$XDSDocumentEntryCreationTimeFrom", "$XDSDocumentEntryCreationTimeTo"),
        (document.service_start, "$XDSDocumentEntryServiceStartTimeFrom", "$XDSDocumentEntryServiceStartTimeTo"),
        (document.service_stop, "$XDSDocumentEntryServiceStopTimeFrom", "$XDSDocumentEntryServiceStopTimeTo"),
    )
    for value, low_slot, high_slot in ranges:
        if not _in_range(value, _time_bound(query, low_slot), _time_bound(query, high_slot)):
            return False
    return True


def _time_bound(query: StoredQuery, slot: str) -> str | None:
    value = query.single(slot)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) < 4 or len(value) > 14:
        raise XdsQueryError("XDSRegistryError", f"{slot} is not a DTM time")
    return value


# --- response --------------------------------------------------------------------------------------------------
def _sub(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, tag, attributes)


def _slot(parent: etree._Element, name: str, values: Iterable[str]) -> None:
    slot = _sub(parent, f"{R}Slot", name=name)
    value_list = _sub(slot, f"{R}ValueList")
    for value in values:
        _sub(value_list, f"{R}Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    name = _sub(parent, f"{R}Name")
    _sub(name, f"{R}LocalizedString", value=text)


def _child_id(entry_uuid: str, label: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, entry_uuid + '/' + label)}"


def _classification(parent: etree._Element, entry_uuid: str, scheme: str, code: Code, label: str) -> None:
    classification = _sub(
        parent,
        f"{R}Classification",
        classificationScheme=scheme,
        classifiedObject=entry_uuid,
        id=_child_id(entry_uuid, label),
        nodeRepresentation=code.code,
        objectType=OBJECT_TYPE_CLASSIFICATION,
    )
    _slot(classification, "codingScheme", [code.scheme])
    _name(classification, code.display or code.code)


def _external_identifier(parent: etree._Element, entry_uuid: str, scheme: str, value: str, label: str) -> None:
    identifier = _sub(
        parent,
        f"{R}ExternalIdentifier",
        identificationScheme=scheme,
        value=value,
        id=_child_id(entry_uuid, label),
        registryObject=entry_uuid,
        objectType=OBJECT_TYPE_EXTERNAL_ID,
    )
    _name(identifier, label)


def _pid5(document: StoredDocument) -> str | None:
    patient = document.patient
    if patient is None or not (patient.family or patient.given):
        return None
    return f"PID-5|{(patient.family or '').upper()}^{(patient.given[0] if patient.given else '').upper()}^^^"


_PID8 = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


def document_entry(
    parent: etree._Element, document: StoredDocument, settings: Settings, codes: EntryCodes
) -> etree._Element:
    """One ExtrinsicObject with the metadata of SPEC §2.3 (LESSONS 8)."""
    on_demand = settings.entry_type is EntryType.ON_DEMAND
    entry_uuid = document.entry_uuid
    patient_cx = PatientCx(document.nhs_number, NHS_NUMBER_OID).cx
    extrinsic = _sub(
        parent,
        f"{R}ExtrinsicObject",
        id=entry_uuid,
        home=settings.home_community_urn,
        mimeType=document.mime_type,
        objectType=ON_DEMAND_ENTRY if on_demand else STABLE_ENTRY,
        status=APPROVED,
    )
    if not on_demand:  # stable entries describe fixed bytes; on-demand entries must not carry these
        _slot(extrinsic, "creationTime", [dtm(document.creation_time)])
        _slot(extrinsic, "hash", [document.hash_sha1])
        _slot(extrinsic, "size", [str(document.size)])
    _slot(extrinsic, "languageCode", [str(document.metadata.get("language_code") or "en-GB")])
    _slot(extrinsic, "repositoryUniqueId", [settings.repository_unique_id])
    if document.service_start is not None:
        _slot(extrinsic, "serviceStartTime", [dtm(document.service_start)])
    if document.service_stop is not None:
        _slot(extrinsic, "serviceStopTime", [dtm(document.service_stop)])
    _slot(extrinsic, "sourcePatientId", [patient_cx])
    info = [f"PID-3|{patient_cx}"]
    pid5 = _pid5(document)
    if pid5:
        info.append(pid5)
    if document.patient is not None and document.patient.birth_date:
        info.append(f"PID-7|{document.patient.birth_date.replace('-', '')}")
    if document.patient is not None and document.patient.gender:
        info.append(f"PID-8|{_PID8.get(document.patient.gender.lower(), 'U')}")
    _slot(extrinsic, "sourcePatientInfo", info)
    _name(extrinsic, document.title)

    practice = str(document.metadata.get("practice_name") or settings.organisation_name)
    author = _sub(
        extrinsic,
        f"{R}Classification",
        classificationScheme=SCHEME_AUTHOR,
        classifiedObject=entry_uuid,
        id=_child_id(entry_uuid, "author"),
        nodeRepresentation="",
        objectType=OBJECT_TYPE_CLASSIFICATION,
    )
    # XON: name^^^^^&assigning authority&ISO^^^^identifier (the GP practice by its ODS code)
    _slot(author, "authorInstitution", [f"{practice}^^^^^&{ODS_OID}&ISO^^^^{document.source_ods}"])
    _classification(extrinsic, entry_uuid, SCHEME_CLASS, codes.class_code, "classCode")
    confidentiality = str(document.metadata.get("confidentiality_code") or "N")
    _classification(
        extrinsic, entry_uuid, SCHEME_CONFIDENTIALITY,
        Code(confidentiality, {"N": "normal", "R": "restricted", "V": "very restricted"}.get(confidentiality,
             confidentiality), CONFIDENTIALITY_SCHEME),
        "confidentialityCode",
    )
    _classification(extrinsic, entry_uuid, SCHEME_FORMAT, codes.format_code, "formatCode")
    _classification(extrinsic, entry_uuid, SCHEME_FACILITY, codes.facility_type, "healthcareFacilityTypeCode")
    _classification(extrinsic, entry_uuid, SCHEME_PRACTICE, codes.practice_setting, "practiceSettingCode")
    _classification(extrinsic, entry_uuid, SCHEME_TYPE, codes.type_code, "typeCode")
    _external_identifier(extrinsic, entry_uuid, SCHEME_PATIENT_ID, patient_cx, "XDSDocumentEntry.patientId")
    _external_identifier(extrinsic, entry_uuid, SCHEME_UNIQUE_ID, document.unique_id, "XDSDocumentEntry.uniqueId")
    return extrinsic


def highest_severity(errors: Sequence[RegistryErrorInfo]) -> str:
    return next((error.severity for error in errors if not error.is_warning), errors[0].severity)


def registry_error_list(parent: etree._Element, errors: Sequence[RegistryErrorInfo], location: str) -> None:
    if not errors:
        return
    error_list = etree.SubElement(parent, f"{{{RS}}}RegistryErrorList", highestSeverity=highest_severity(errors))
    for error in errors:
        etree.SubElement(
            error_list,
            f"{{{RS}}}RegistryError",
            errorCode=error.error_code,
            codeContext=error.code_context,
            location=location,
            severity=error.severity,
        )


def response_status(has_results: bool, errors: Sequence[RegistryErrorInfo]) -> str:
    """Warnings may accompany a Success; errors with results → PartialSuccess; errors alone → Failure."""
    if not any(not error.is_warning for error in errors):
        return STATUS_SUCCESS
    return STATUS_PARTIAL if has_results else STATUS_FAILURE


def build_response(
    documents: Sequence[StoredDocument],
    settings: Settings,
    *,
    return_type: str = "LeafClass",
    errors: Sequence[RegistryErrorInfo] = (),
    codes: EntryCodes | None = None,
) -> etree._Element:
    codes = codes or EntryCodes.from_settings(settings)
    response = etree.Element(
        f"{Q}AdhocQueryResponse",
        status=response_status(bool(documents), errors),
        nsmap={"query": QUERY, "rim": RIM, "rs": RS},
    )
    registry_error_list(response, errors, settings.home_community_urn)
    object_list = _sub(response, f"{R}RegistryObjectList")
    for document in documents:
        if return_type == "ObjectRef":
            _sub(object_list, f"{R}ObjectRef", id=document.entry_uuid, home=settings.home_community_urn)
        else:
            document_entry(object_list, document, settings, codes)
    return response


# --- the handler ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _QueryAnswer:
    """What an ITI-38 stored query has established so far (the caller narrows once the patient is known)."""

    caller: CallerIdentity
    nhs_number: str | None = None
    documents: list[StoredDocument] = field(default_factory=list)
    warnings: list[RegistryErrorInfo] = field(default_factory=list)
    spine: Mapping[str, str | None] = field(default_factory=dict)


class CrossGatewayQuery:
    """ITI-38 over the gateway's services: the patient's documents, or the RegistryError saying why not."""

    def __init__(self, services: GatewayServices) -> None:
        self.settings = services.settings
        self.records = services.records
        self.verifier = services.verifier
        self.codes = EntryCodes.from_settings(services.settings)

    async def __call__(self, exchange: Exchange) -> SoapResponse:
        try:
            stored_query = parse_request(exchange.request.body)
        except XdsQueryError as error:
            return await self._failed(exchange, error, None)
        except Exception as error:
            return await exchange.fault(error)

        found = _QueryAnswer(exchange.caller)
        try:
            await self._run_stored_query(stored_query, found)
        except xhuma_errors.SecurityError as error:
            exchange.caller = found.caller
            return await exchange.fault(error)
        except Exception as error:
            exchange.caller = found.caller
            return await self._failed(exchange, error, found.nhs_number)

        documents, warnings = found.documents, found.warnings
        unique_id = documents[0].unique_id if len(documents) == 1 else None
        outcome = "success" if documents else "no-match"
        exchange.caller = found.caller
        if not await exchange.audit(
            outcome, nhs_number=found.nhs_number, caller=found.caller,
            message_id=exchange.message_id, reason=warnings[0].reason if warnings else None,
            document_unique_id=unique_id, duration_ms=exchange.elapsed_ms(), spine=found.spine,
            details={"documents": len(documents), "query": stored_query.query_id},
        ) and documents:
            return await self._failed(exchange, xhuma_errors.AuditUnavailable(), None, audit=False)
        # "No documents" is a plain Success with an empty list: the withheld reason is in the audit only, since
        # initiators (Metriport's parser, for one) take any RegistryError without documents for a failure.
        response = build_response(
            documents, self.settings, return_type=stored_query.return_type,
            errors=[error for error in warnings if not error.is_warning], codes=self.codes,
        )
        return exchange.reply(response)

    async def _run_stored_query(self, stored_query: StoredQuery, found: _QueryAnswer) -> None:
        """Fill ``found`` as the stored query runs: what it holds when an error escapes is what gets audited."""
        check_home(stored_query, self.settings.home_community_id)
        if stored_query.query_id == FIND_DOCUMENTS:
            await self._find_documents(stored_query, found)
        elif stored_query.query_id == GET_DOCUMENTS:
            found.documents = await self._get_documents(stored_query)
            if found.documents:
                found.nhs_number = found.documents[0].nhs_number
                found.caller = self.verifier.check_patient(found.caller, found.nhs_number)
        elif stored_query.query_id not in EMPTY_QUERIES:
            raise XdsQueryError("XDSUnknownStoredQuery", "The stored query id is not supported")

    async def _find_documents(self, stored_query: StoredQuery, found: _QueryAnswer) -> None:
        patient_id = stored_query.single("$XDSDocumentEntryPatientId", required=True)
        if not stored_query.values("$XDSDocumentEntryStatus"):
            raise XdsQueryError("XDSStoredQueryMissingParam", "The stored query needs $XDSDocumentEntryStatus")
        assert patient_id is not None
        nhs_number = found.nhs_number = parse_patient_cx(patient_id).nhs_number
        if not is_valid_nhs_number(nhs_number):
            raise xhuma_errors.InvalidNhsNumber()
        found.caller = self.verifier.check_patient(found.caller, nhs_number)
        if not static_filters_pass(stored_query, self.settings, self.codes):
            return
        try:
            result = await self.records.query_documents(nhs_number, found.caller)
        except (xhuma_errors.PatientOutcome, xhuma_errors.NoEndpoint, xhuma_errors.AmbiguousEndpoint,
                xhuma_errors.ConsentRefused, xhuma_errors.AccessDenied) as withheld:
            found.warnings.append(faults.registry_error(withheld, transaction=ITI_38))
        else:
            found.spine = result.spine
            found.documents = [d for d in result.documents if document_filters_pass(stored_query, d)]

    async def _get_documents(self, stored_query: StoredQuery) -> list[StoredDocument]:
        unique_ids = stored_query.values("$XDSDocumentEntryUniqueId")
        entry_uuids = stored_query.values("$XDSDocumentEntryEntryUUID")
        if bool(unique_ids) == bool(entry_uuids):
            raise XdsQueryError(
                "XDSStoredQueryParamNumber",
                "GetDocuments needs either $XDSDocumentEntryUniqueId or $XDSDocumentEntryEntryUUID",
            )
        if entry_uuids:
            unique_ids = [uid for uid in [await self.records.unique_id_for_entry(e) for e in entry_uuids] if uid]
        documents: list[StoredDocument] = []
        for unique_id in unique_ids:
            try:
                documents.append(await self.records.retrieve_document(unique_id))
            except xhuma_errors.DocumentNotFound:
                continue
        if len({document.nhs_number for document in documents}) > 1:
            raise XdsQueryError("XDSResultNotSinglePatient", "The documents are about several patients")
        return documents

    async def _failed(
        self, exchange: Exchange, error: BaseException, nhs_number: str | None, *, audit: bool = True
    ) -> SoapResponse:
        """The RegistryError answer (audited unless ``audit`` is False: the audit trail already failed)."""
        if isinstance(error, XdsQueryError):
            info = query_error_info(error)
        else:
            info = faults.registry_error(error, transaction=ITI_38)
            log_unexpected(ITI_38, error)
        if audit:
            outcome = "no-match" if isinstance(error, xhuma_errors.InvalidNhsNumber) else "error"
            await exchange.audit(
                outcome, nhs_number=nhs_number, caller=exchange.caller, error_code=info.error_code,
                reason=info.reason or None, message_id=exchange.message_id, duration_ms=exchange.elapsed_ms(),
            )
        return exchange.reply(build_response([], self.settings, errors=[info], codes=self.codes))


# --- the descriptor (its line in the registry: xhuma.ihe.transactions) -------------------------------------------
XDS_SCHEMA = "xds/IHE/IHEXDSB.xsd"

ITI_38: Final = Transaction(
    id="ITI-38",
    name="Cross Gateway Query",
    path="/SOAP/iti38",
    request_action=ACTION_REQUEST,
    response_action=ACTION_RESPONSE,
    request_element=REQUEST_ELEMENT,
    response_element=f"{Q}AdhocQueryResponse",
    request_schema=XDS_SCHEMA,
    response_schema=XDS_SCHEMA,
    atna=AtnaEvent("110112", "Query", "E", "Cross Gateway Query"),
    error_form=ErrorForm.REGISTRY_ERROR,
    handler=CrossGatewayQuery,
    generic_error="XDSRegistryError",
    busy_error="XDSRegistryBusy",
)
