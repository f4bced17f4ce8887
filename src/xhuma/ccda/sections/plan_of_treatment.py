"""Plan of treatment (SPEC §8.4.9): outbound referrals (List 792931000000107) and diary entries (714311000000108).

* ReferralRequest → Planned Encounter (4.40, ``moodCode="RQO"``, statusCode active): ids (UBRN included),
  code = serviceRequested, else specialty, else reasonCode, else SNOMED 3457005 Patient referral; effectiveTime =
  authoredOn; priorityCode (routine R, urgent UR, asap A, stat EM); performer = recipient; author =
  requester.agent; Indication (4.19) from reasonCode when it is not already the code. Description, notes,
  e-RS priority and UBRN are in the narrative.
* ProcedureRequest (diary entry) → Planned Act (4.39, ``moodCode="INT"``, statusCode active): code,
  effectiveTime = occurrence[x], author = requester.agent, Indication from reasonCode, notes in the narrative.
  Planned Procedure (4.41) would need to know that the code is a procedure (SNOMED hierarchy, no terminology
  server here), so every diary entry is a Planned Act.
Patient Referral Act (4.140) is not allowed in Plan of Treatment V2 (SPEC §8.4.9).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings, concept_text, first, notes_text, readable_date, string
from xhuma.ccda.hl7 import cd, fhir_ts, ii, snomed, text_reference, ts
from xhuma.ccda.narrative import NarrativeTable, lines_of
from xhuma.ccda.participation import (
    author_label,
    author_participation,
    human_name,
    organisation_ids,
    person_name,
    practitioner_of,
    represented_organisation,
)
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import Element, el, leaf

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["plan_of_treatment"]
PATIENT_REFERRAL = ("3457005", "Patient referral")
PROBLEM_TYPE = T.FixedCode("404684003", T.SNOMED_OID, "SNOMED CT", "Clinical finding")
PRIORITY = {"routine": ("R", "Routine"), "urgent": ("UR", "Urgent"), "asap": ("A", "ASAP"), "stat": ("EM",
                                                                                                    "Emergency")}
PRIORITY_OID = "2.16.840.1.113883.5.7"
UBRN_SYSTEMS = ("https://fhir.nhs.uk/Id/ubr-number", "https://fhir.nhs.uk/Id/UBRN")
HEADERS = ("Date", "Planned", "Type", "Details", "Requested by", "Recipient / due")


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    referral_lists = section.use_lists(T.LIST_REFERRALS) + section.use_uncoded_lists(
        "ReferralRequest")
    diary_lists = section.use_lists(T.LIST_DIARY) + section.use_uncoded_lists("ProcedureRequest")
    referrals = _members(section, referral_lists, "ReferralRequest")
    diary = _members(section, diary_lists, "ProcedureRequest")
    referrals.sort(key=lambda r: fhir_ts(r.get("authoredOn")) or "", reverse=True)
    diary.sort(key=lambda r: fhir_ts(_occurrence(r)) or "", reverse=True)
    table = section.table(HEADERS)
    section.convert_each(diary, lambda r: DiaryEntry(section, table, r).build())
    section.convert_each(referrals, lambda r: Referral(section, table, r).build())


def _members(section: SectionWriter, lists: list[Resource], rtype: str) -> list[Resource]:
    out: list[Resource] = []
    seen: set[int] = set()
    for lst in lists:
        for member in section.members(lst, rtype):
            if id(member) not in seen:
                seen.add(id(member))
                out.append(member)
    return out


def _occurrence(request: Resource) -> str | None:
    if isinstance(request.get("occurrenceDateTime"), str):
        return str(request["occurrenceDateTime"])
    period = request.get("occurrencePeriod")
    if isinstance(period, JSON_OBJECT) and isinstance(period.get("start"), str):
        return str(period["start"])
    return None


def _indication(section: SectionWriter, parent: Element, resource: Resource, concept: Mapping[str, Any],
                position: int, when: object) -> None:
    """Indication (4.19): why the referral/diary entry was made (reasonCode)."""
    observation = el(el(parent, "entryRelationship", {"typeCode": "RSON"}), "observation",
                     {"classCode": "OBS", "moodCode": "EVN"})
    section.template(observation, T.INDICATION)
    section.add_ids(observation, resource, f"indication-{position}")
    leaf(observation, "code", {"code": PROBLEM_TYPE.code, "codeSystem": PROBLEM_TYPE.system,
                             "codeSystemName": PROBLEM_TYPE.system_name, "displayName": str(PROBLEM_TYPE.display)})
    leaf(observation, "statusCode", {"code": "completed"})
    ts(observation, "effectiveTime", when)
    cd(observation, "value", concept, xsi_type="CD")


def _agent(request: Resource) -> object:
    requester = request.get("requester")
    return requester.get("agent") if isinstance(requester, JSON_OBJECT) else None


class Referral:
    def __init__(self, section: SectionWriter, table: NarrativeTable, referral: Resource) -> None:
        self.section = section
        self.table = table
        self.referral = referral

    def _code(self) -> tuple[object, str]:
        for key in ("serviceRequested", "specialty", "reasonCode"):
            value = self.referral.get(key)
            concept = value[0] if isinstance(value, list) and value else value
            if isinstance(concept, JSON_OBJECT) and (codings(concept) or concept.get("text")):
                return concept, key
        return None, ""

    def build(self) -> None:
        referral = self.referral
        index = self.section.index
        concept, source_key = self._code()
        row = self.table.row()
        row.cell(readable_date(referral.get("authoredOn")))
        what = concept_text(concept, PATIENT_REFERRAL[1]) if concept is not None else PATIENT_REFERRAL[1]
        code_ref = row.cell(what, content="code")
        row.cell("Referral")
        details: list[str] = []
        if source_key != "reasonCode":
            details += [f"Reason: {concept_text(r)}" for r in as_list(referral.get("reasonCode")) if concept_text(r)]
        details += lines_of(string(referral.get("description")))
        priority = string(referral.get("priority"))
        if priority:
            details.append(f"Priority: {priority}")
        for identifier in as_list(referral.get("identifier")):
            if isinstance(identifier, JSON_OBJECT) and identifier.get("system") in UBRN_SYSTEMS:
                details.append(f"e-Referral UBRN: {identifier.get('value')}")
        details += notes_text(referral)
        if self.section.is_confidential(referral):
            details.append("Not for disclosure to the patient (NOPAT)")
        row.cell(details)
        row.cell(author_label(index, _agent(referral)))
        recipients = [recipient_label(index, r) for r in as_list(referral.get("recipient"))]
        row.cell([r for r in recipients if r])

        encounter = el(self.section.entry(), "encounter", {"classCode": "ENC", "moodCode": "RQO"})
        self.section.template(encounter, T.PLANNED_ENCOUNTER)
        self.section.add_ids(encounter, referral)
        if concept is not None:
            cd(encounter, "code", concept, reference=code_ref)
        else:
            code = snomed(encounter, "code", *PATIENT_REFERRAL)
            leaf(el(code, "originalText"), "reference", {"value": str(code_ref)})
        text_reference(encounter, row.reference)
        leaf(encounter, "statusCode", {"code": "active"})
        ts(encounter, "effectiveTime", referral.get("authoredOn"))
        if priority in PRIORITY:
            leaf(encounter, "priorityCode", {"code": PRIORITY[priority][0], "codeSystem": PRIORITY_OID,
                                           "codeSystemName": "ActPriority", "displayName": PRIORITY[priority][1]})
        for recipient in as_list(referral.get("recipient")):
            self._performer(encounter, recipient)
        author_participation(encounter, index, _agent(referral), referral.get("authoredOn"))
        if source_key != "reasonCode":
            for position, reason in enumerate(as_list(referral.get("reasonCode"))):
                if isinstance(reason, JSON_OBJECT):
                    _indication(self.section, encounter, referral, reason, position, referral.get("authoredOn"))
        self.section.mapped(referral, T.PLANNED_ENCOUNTER)

    def _performer(self, encounter: Element, reference: object) -> None:
        service = _service(self.section.index, reference)
        if service is not None:
            self._service_performer(encounter, service)
            return
        person, organisation = practitioner_of(self.section.index, reference)
        display = string(reference.get("display")) if isinstance(reference, JSON_OBJECT) else None
        if person is None and organisation is None and not display:
            return
        assigned = el(el(encounter, "performer"), "assignedEntity")
        target = person or organisation
        if target is not None:
            self.section.add_ids(assigned, target)
        else:
            ii(assigned, self.section.state.derived_id("recipient", display or ""))
        if person is not None:
            person_name(el(assigned, "assignedPerson"), human_name(person))
        elif display and organisation is None:
            leaf(el(assigned, "assignedPerson"), "name", text=display)
        if organisation is not None:
            represented_organisation(assigned, organisation)


    def _service_performer(self, encounter: Element, service: Resource) -> None:
        """A referral to a service (HealthcareService, e.g. an e-Referral Service two-week-wait clinic): the
        service is the performer's organisation, named, with the organisation that provides it (issue 13)."""
        assigned = el(el(encounter, "performer"), "assignedEntity")
        self.section.add_ids(assigned, service)
        provider = self.section.index.resolve(service.get("providedBy"))
        organisation = el(assigned, "representedOrganization")
        if provider is not None:
            organisation_ids(organisation, provider)
        leaf(organisation, "name", text=service_name(self.section.index, service))
        self.section.supporting(service, "recipient service of a referral (performer of the Planned Encounter)")


def _service(index: Any, reference: object) -> Resource | None:
    target = index.resolve(reference)
    return target if target is not None and target.get("resourceType") == "HealthcareService" else None


def service_name(index: Any, service: Resource) -> str:
    """"Two week wait clinic (Provider Trust)": the service's name (or type) and who provides it."""
    name = string(service.get("name")) or concept_text(first(service.get("type")), "") or "Unnamed service"
    provider = index.resolve(service.get("providedBy"))
    provider_name = string(provider.get("name")) if provider is not None else None
    return f"{name} ({provider_name})" if provider_name else name


def recipient_label(index: Any, reference: object) -> str:
    """A referral recipient as the narrative names it: person, organisation or service, else its display."""
    service = _service(index, reference)
    return service_name(index, service) if service is not None else author_label(index, reference)


class DiaryEntry:
    def __init__(self, section: SectionWriter, table: NarrativeTable, request: Resource) -> None:
        self.section = section
        self.table = table
        self.request = request

    def build(self) -> None:
        request = self.request
        index = self.section.index
        due = _occurrence(request)
        row = self.table.row()
        row.cell(readable_date(request.get("authoredOn")))
        code_ref = row.cell(concept_text(request.get("code"), "Diary entry"), content="code")
        row.cell("Diary entry (recall)")
        details = [f"Reason: {concept_text(r)}" for r in as_list(request.get("reasonCode")) if concept_text(r)]
        details += notes_text(request)
        status = string(request.get("status"))
        if status and status != "active":
            details.append(f"Status: {status}")
        if self.section.is_confidential(request):
            details.append("Not for disclosure to the patient (NOPAT)")
        row.cell(details)
        row.cell(author_label(index, _agent(request)))
        row.cell(f"Due {readable_date(due)}" if due else "")

        act = el(self.section.entry(), "act", {"classCode": "ACT", "moodCode": "INT"})
        self.section.template(act, T.PLANNED_ACT)
        self.section.add_ids(act, request)
        cd(act, "code", request.get("code"), reference=code_ref)
        text_reference(act, row.reference)
        leaf(act, "statusCode", {"code": "active"})
        period = request.get("occurrencePeriod")
        if isinstance(period, JSON_OBJECT) and period.get("end"):
            interval = el(act, "effectiveTime")
            ts(interval, "low", period.get("start"))
            ts(interval, "high", period.get("end"))
        else:
            ts(act, "effectiveTime", due)
        author_participation(act, index, _agent(request), request.get("authoredOn"))
        for position, reason in enumerate(as_list(request.get("reasonCode"))):
            if isinstance(reason, JSON_OBJECT):
                _indication(self.section, act, request, reason, position, request.get("authoredOn"))
        self.section.mapped(request, T.PLANNED_ACT)
