"""US Realm Header + CCD document header (SPEC §8.1; LESSONS 26).

Every SHALL header element is written, with a nullFlavor where the bundle has no data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from xhuma import __version__
from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, fhir_datetime, string
from xhuma.ccda.hl7 import fhir_ts, fixed_code, hl7_ts, identifier_ii, ii, template_id
from xhuma.ccda.memo import memo
from xhuma.ccda.participation import (
    address,
    human_name,
    ods_code,
    person_name,
    represented_organisation,
    telecoms,
)
from xhuma.ccda.section import ConversionState
from xhuma.ccda.xmlwriter import Element, el, element, leaf, null

Resource = Mapping[str, Any]

_GENDER = {"male": ("M", "Male"), "female": ("F", "Female")}
# Resources whose dates (``_clinical_dates``) make the service event range (XDS serviceStart/Stop).
_CLINICAL_TYPES = frozenset({"AllergyIntolerance", "MedicationStatement", "Condition", "Immunization", "Observation",
                             "DiagnosticReport", "Encounter", "ReferralRequest", "ProcedureRequest"})


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    document_id: str
    nhs_number: str | None
    practice_ods: str | None
    practice_name: str | None
    service_start: datetime | None
    service_stop: datetime | None
    effective_time: str  # the document's effectiveTime (``hl7_ts`` of the conversion's now)


def nhs_number(patient: Resource | None) -> str | None:
    if patient is None:
        return None
    for identifier in as_list(patient.get("identifier")):
        if isinstance(identifier, JSON_OBJECT) and identifier.get("system") == T.NHS_NUMBER_SYSTEM:
            return string(identifier.get("value"))
    return None


@memo(maxsize=4096)  # a record repeats its dates (a report and its results, an issue and its request)
def _local_stamp(value: str) -> str | None:
    """The HL7 form of a FHIR date without its zone, for ordering (see ``clinical_range``)."""
    stamp = fhir_ts(value)
    return None if stamp is None else stamp[:14].split("+")[0].split("-")[0]


def _clinical_dates(resources: Iterable[tuple[str, Resource]]) -> list[Any]:
    """The clinical date values of the resources of a clinical type among ``resources`` (index entries: key,
    resource), in order: resource by resource, each resource's elements in the order below. Not yet checked to be
    strings; absent values included (None)."""
    values: list[Any] = []
    for _, resource in resources:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or rtype not in _CLINICAL_TYPES:
            continue
        # The elements that carry clinical time on GP Connect resources, in this order (the first of equal dates
        # wins), each read by name and added at once: cheaper than a loop over the names, or than a list per
        # resource (a few hundred resources per record).
        values += (resource.get("assertedDate"), resource.get("onsetDateTime"), resource.get("effectiveDateTime"),
                   resource.get("date"), resource.get("authoredOn"), resource.get("issued"),
                   resource.get("dateAsserted"), resource.get("abatementDateTime"))
        for period in (resource.get("effectivePeriod"), resource.get("period")):
            if period is not None and isinstance(period, JSON_OBJECT):  # mostly absent: no Mapping ABC check
                values += (period.get("start"), period.get("end"))
    return values


def clinical_range(state: ConversionState) -> tuple[tuple[datetime, str] | None, tuple[datetime, str] | None]:
    """Earliest and latest clinical dates of the record (parsed, and as the FHIR string).

    Candidates are compared on their HL7 form without the zone (cheap: regex only); only the two winners are
    parsed. A zone offset can therefore misorder two values less than a day apart, which does not matter for
    a service-event range. Of equal candidates the first in bundle order wins.
    """
    earliest: tuple[str, str] | None = None
    latest: tuple[str, str] | None = None
    # Absent (and other falsy) values left out first, in C.
    dates = [value for value in filter(None, _clinical_dates((*state.index.resources, *state.index.contained)))
             if isinstance(value, str)]
    for value in dict.fromkeys(dates):  # each distinct date once (a record repeats its dates), first seen first
        local = _local_stamp(value)
        if local is None:
            continue
        if earliest is None or local < earliest[0]:
            earliest = (local, value)
        if latest is None or local > latest[0]:
            latest = (local, value)
    first = fhir_datetime(earliest[1]) if earliest else None
    last = fhir_datetime(latest[1]) if latest else None
    return ((first, earliest[1]) if first and earliest else None, (last, latest[1]) if last and latest else None)


def build_header(state: ConversionState) -> tuple[Element, HeaderFacts]:
    context = state.context
    index = state.index
    patient = index.patient
    practice = index.practice
    nhs = nhs_number(patient)
    effective_time = hl7_ts(state.now)  # written four times in the header
    seed = "|".join(
        [
            "document",
            str(index.bundle.get("id") or ""),
            nhs or "",
            effective_time,
            context.document_seed or "",
            str(len(index.resources)),
        ]
    )
    document_id = state.derived_id(seed)

    root = element("ClinicalDocument")  # declares NSMAP when serialised
    # SPEC §10.1 / docs/ccda.md: realmCode US is what the US Realm Header requires (CONF:1198-16791).
    leaf(root, "realmCode", {"code": context.realm})
    leaf(root, "typeId", {"root": T.CDA_TYPE_ID.root, "extension": str(T.CDA_TYPE_ID.extension)})
    template_id(root, T.US_REALM_HEADER)
    template_id(root, T.CCD_DOCUMENT)
    ii(root, document_id)
    fixed_code(root, "code", T.CCD_CODE)
    leaf(root, "title", text=context.title)
    leaf(root, "effectiveTime", {"value": effective_time})
    leaf(root, "confidentialityCode", {"code": context.confidentiality_code, "codeSystem": T.CONFIDENTIALITY_OID,
                                     "codeSystemName": "Confidentiality"})
    leaf(root, "languageCode", {"code": context.language_code})
    ii(root, context.set_id or document_id, name="setId")
    leaf(root, "versionNumber", {"value": str(context.version_number)})

    _record_target(root, state, patient, practice)
    _author(root, state, practice, effective_time)
    _custodian(root, state)
    earliest, latest = clinical_range(state)
    _documentation_of(root, state, patient, practice, earliest, effective_time)

    if patient is None:
        state.report.warn("no-patient", "the bundle has no Patient; the record target is filled with nullFlavors")
    else:
        state.report.record(index.key(patient), "Patient", "supporting", reason="document recordTarget")
    if practice is None:
        state.report.warn("no-practice",
                          "no registered practice (Patient.managingOrganization) could be resolved")
    else:
        state.report.record(index.key(practice), "Organization", "supporting",
                            reason="registered practice (recordTarget providerOrganization, author)")
    facts = HeaderFacts(
        document_id=document_id,
        nhs_number=nhs,
        practice_ods=ods_code(practice),
        practice_name=string(practice.get("name")) if practice is not None else None,
        service_start=earliest[0] if earliest else None,
        service_stop=latest[0] if latest else None,
        effective_time=effective_time,
    )
    return root, facts


def _record_target(root: Element, state: ConversionState, patient: Resource | None, practice: Resource | None) -> None:
    role = el(el(root, "recordTarget"), "patientRole")
    written = 0
    for identifier in as_list(patient.get("identifier")) if patient else []:
        if isinstance(identifier, JSON_OBJECT) and identifier.get("system") == T.NHS_NUMBER_SYSTEM:
            value = string(identifier.get("value"))
            if value:
                ii(role, T.NHS_NUMBER_OID, value)
                written += 1
    if written == 0:
        null(role, "id", "UNK")
    address(role, patient.get("address") if patient else None)
    telecoms(role, patient.get("telecom") if patient else None)
    person = el(role, "patient")
    person_name(person, human_name(patient), fielded=True)
    gender = _GENDER.get(str(patient.get("gender"))) if patient else None
    if gender is not None:
        leaf(person, "administrativeGenderCode", {"code": gender[0], "codeSystem": T.ADMIN_GENDER_OID,
                                                "displayName": gender[1], "codeSystemName": "AdministrativeGender"})
    elif patient is not None and patient.get("gender") in ("other", "unknown"):
        leaf(person, "administrativeGenderCode", {"code": "UN", "codeSystem": T.ADMIN_GENDER_OID,
                                                "displayName": "Undifferentiated",
                                                "codeSystemName": "AdministrativeGender"})
    else:
        null(person, "administrativeGenderCode", "UNK")
    birth = fhir_ts(patient.get("birthDate")) if patient else None
    if birth is not None:
        leaf(person, "birthTime", {"value": birth[:8]})
    else:
        null(person, "birthTime", "UNK")
    # No UK source for the US race/ethnicity value sets (SPEC §8.1): SHALL elements sent as UNK.
    null(person, "raceCode", "UNK")
    null(person, "ethnicGroupCode", "UNK")
    if practice is not None:
        represented_organisation(role, practice, "providerOrganization", full=True)


def _author(root: Element, state: ConversionState, practice: Resource | None, effective_time: str) -> None:
    author = el(root, "author")
    leaf(author, "time", {"value": effective_time})
    assigned = el(author, "assignedAuthor")
    # A device author has no NPI; the gateway organisation id stands in (SPEC §8.1 author row).
    ii(assigned, state.context.custodian_id_root, state.context.custodian_id_extension)
    address(assigned, practice.get("address") if practice else None)
    telecoms(assigned, practice.get("telecom") if practice else None)
    device = el(assigned, "assignedAuthoringDevice")
    leaf(device, "manufacturerModelName", text=state.context.custodian_name)
    leaf(device, "softwareName", text=f"{state.context.author_software} {__version__}")
    if practice is not None:
        represented_organisation(assigned, practice)
    else:
        # A device author SHALL have a representedOrganization (CONF:1198-8456): the gateway operator.
        organisation = el(assigned, "representedOrganization")
        ii(organisation, state.context.custodian_id_root, state.context.custodian_id_extension)
        leaf(organisation, "name", text=state.context.custodian_name)


def _custodian(root: Element, state: ConversionState) -> None:
    """Custodian = the gateway operator: it created and holds this document (SPEC §10.3, docs/ccda.md)."""
    organisation = el(el(el(root, "custodian"), "assignedCustodian"), "representedCustodianOrganization")
    ii(organisation, state.context.custodian_id_root, state.context.custodian_id_extension)
    leaf(organisation, "name", text=state.context.custodian_name)
    null(organisation, "telecom", "UNK")
    null(organisation, "addr", "UNK")


def _documentation_of(
    root: Element, state: ConversionState, patient: Resource | None, practice: Resource | None,
    earliest: tuple[datetime, str] | None, effective_time: str,
) -> None:
    event = el(el(root, "documentationOf"), "serviceEvent", {"classCode": "PCPR"})
    period = el(event, "effectiveTime")
    low = fhir_ts(earliest[1]) if earliest else None
    if low is None and patient is not None:
        low = fhir_ts(patient.get("birthDate"))
    if low is not None:
        leaf(period, "low", {"value": low})
    else:
        null(period, "low", "UNK")
    leaf(period, "high", {"value": effective_time})
    gp = state.index.usual_gp
    if gp is not None:
        performer = el(event, "performer", {"typeCode": "PRF"})
        entity = el(performer, "assignedEntity")
        written = 0
        for identifier in as_list(gp.get("identifier")):
            if isinstance(identifier, JSON_OBJECT) and identifier_ii(entity, identifier) is not None:
                written += 1
        if written == 0:
            null(entity, "id", "UNK")
        person_name(el(entity, "assignedPerson"), human_name(gp))
        if practice is not None:
            represented_organisation(entity, practice)
        state.report.record(state.index.key(gp), "Practitioner", "supporting",
                            reason="usual GP (serviceEvent performer)")
