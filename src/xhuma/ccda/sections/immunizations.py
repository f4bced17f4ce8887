"""Immunisations (SPEC §8.4.4): List 1102181000000102 → Immunization Activity per Immunization (given and not
given, negationInd), plus immunisation-status Observations of the list as narrative rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.context import ProductCoding
from xhuma.ccda.fhir import (
    JSON_OBJECT,
    as_list,
    codings,
    concept_text,
    extension,
    first,
    mapping,
    readable_date,
    string,
)
from xhuma.ccda.hl7 import cd, format_number, identifier_ii, text_reference, ts
from xhuma.ccda.narrative import Row
from xhuma.ccda.participation import author_label, author_participation, human_name, person_name, practitioner_of
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.ucum import dose_unit
from xhuma.ccda.xmlwriter import Element, el, leaf, null

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["immunizations"]
HEADERS = ("Vaccine", "Given", "Date", "Dose", "Route and site", "Batch", "Reason", "Notes")
NULL_FLAVOR_SYSTEM = "http://hl7.org/fhir/v3/NullFlavor"


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    lists = section.use_lists(T.LIST_IMMUNISATIONS) + section.use_secondary_lists("immunisations")
    lists += section.use_uncoded_lists("Immunization")
    seen: set[int] = set()
    immunizations: list[Resource] = []
    statuses: list[Resource] = []
    for lst in lists:
        for member in section.members(lst, "Immunization", "Observation"):
            if id(member) in seen:
                continue
            seen.add(id(member))
            (immunizations if member.get("resourceType") == "Immunization" else statuses).append(member)
    immunizations += section.unlisted("Immunization")
    immunizations.sort(key=lambda i: str(i.get("date") or ""), reverse=True)
    table = section.table(HEADERS)
    section.convert_each(immunizations, lambda i: ImmunizationActivity(section, table.row(), i).build())
    if statuses:
        status_table = section.table(("Immunisation status", "Date", "Comment"), caption="Immunisation status")
        section.convert_each(statuses, lambda o: _status_row(section, status_table.row(), o))


def _status_row(section: SectionWriter, row: Row, observation: Resource) -> None:
    """Immunisation status Observations (e.g. no consent): no C-CDA entry, a narrative row (SPEC §8.4.4)."""
    row.cell(concept_text(observation.get("code"), "Immunisation status"))
    row.cell(readable_date(observation.get("effectiveDateTime") or observation.get("issued")))
    row.cell(string(observation.get("comment")) or "")
    section.narrative_only(observation, "immunisation status (e.g. consent or dissent for immunisations), not one "
                           "vaccine's administration or refusal: C-CDA R2.1 has no entry for it (an Immunization "
                           "Activity names one vaccine); shown in the Immunisations section as text")


def _is_null_flavor(concept: object) -> bool:
    return any(isinstance(c.get("system"), str) and c["system"].strip() == NULL_FLAVOR_SYSTEM
               for c in codings(concept))


class ImmunizationActivity:
    """Immunization Activity (4.52) with Immunization Medication Information (4.54)."""

    def __init__(self, section: SectionWriter, row: Row, immunization: Resource) -> None:
        self.section = section
        self.index = section.index
        self.row = row
        self.immunization = immunization
        self.not_given = immunization.get("notGiven") is True
        explanation = mapping(immunization.get("explanation"))
        # STU3 names it reasonNotGiven; GP Connect examples show notGivenReason — read both (SPEC §7.4).
        self.reasons_not_given = as_list(explanation.get("reasonNotGiven")) + as_list(
            explanation.get("notGivenReason"))
        self.reasons = as_list(explanation.get("reason"))

    def build(self) -> None:
        immunization = self.immunization
        vaccine_ref = self._narrative()
        activity = el(self.section.entry(), "substanceAdministration",
                      {"classCode": "SBADM", "moodCode": "EVN", "negationInd": "true" if self.not_given else "false"})
        self.section.template(activity, T.IMMUNIZATION_ACTIVITY)
        self.section.add_ids(activity, immunization)
        procedure = extension(immunization, "VaccinationProcedure-1")
        if procedure is not None and isinstance(procedure.get("valueCodeableConcept"), JSON_OBJECT):
            cd(activity, "code", procedure["valueCodeableConcept"])
        text_reference(activity, self.row.reference)
        leaf(activity, "statusCode", {"code": "completed"})
        ts(activity, "effectiveTime", immunization.get("date"))
        protocol = mapping(first(immunization.get("vaccinationProtocol")))
        sequence = protocol.get("doseSequence")
        if isinstance(sequence, int) and not isinstance(sequence, bool) and sequence >= 0:
            leaf(activity, "repeatNumber", {"value": str(sequence)})
        if isinstance(immunization.get("route"), JSON_OBJECT):
            cd(activity, "routeCode", immunization["route"])
        if isinstance(immunization.get("site"), JSON_OBJECT):
            cd(activity, "approachSiteCode", immunization["site"])
        self._dose(activity)
        self._product(activity, vaccine_ref)
        self._performers(activity)
        for reason in self.reasons_not_given[:1] if self.not_given else []:
            self._refusal(activity, reason)
        self.section.mapped(immunization, T.IMMUNIZATION_ACTIVITY)

    def _dose(self, activity: Element) -> None:
        dose = mapping(self.immunization.get("doseQuantity"))
        number = format_number(dose.get("value"))
        if number is None:
            return
        attrib = {"value": number}
        unit = dose_unit(dose)
        if unit is not None:
            attrib["unit"] = unit
        leaf(activity, "doseQuantity", attrib)

    def _product(self, activity: Element, vaccine_ref: str | None) -> None:
        product = el(el(activity, "consumable"), "manufacturedProduct", {"classCode": "MANU"})
        self.section.template(product, T.IMMUNIZATION_MEDICATION_INFORMATION)
        material = el(product, "manufacturedMaterial")
        vaccine = self.immunization.get("vaccineCode")
        procedure = mapping(extension(self.immunization, "VaccinationProcedure-1")).get("valueCodeableConcept")
        if (_is_null_flavor(vaccine) or not codings(vaccine)) and codings(procedure):
            # No product code (UNK in GP Connect): the vaccination procedure (e.g. "Second pneumococcal
            # vaccination") identifies the vaccine where consumers read it, manufacturedMaterial/code (issue 13).
            cd(material, "code", procedure, reference=vaccine_ref)
        elif _is_null_flavor(vaccine) or not codings(vaccine):
            # Unknown product and no procedure: nullFlavor with the GP's text (SPEC §8.4.4).
            code = null(material, "code", "UNK")
            text = concept_text(vaccine) if isinstance(vaccine, JSON_OBJECT) else ""
            if vaccine_ref:
                leaf(el(code, "originalText"), "reference", {"value": vaccine_ref})
            elif text:
                leaf(code, "originalText", text=text)
        else:
            # CVX is the US value set; SNOMED/dm+d primary or as translation per context (SPEC §10.1).
            primary = () if self.section.context.product_coding is ProductCoding.TRANSLATION else T.PRIMARY_SYSTEMS
            cd(material, "code", vaccine, reference=vaccine_ref, primary_systems=primary)
        lot = string(self.immunization.get("lotNumber"))
        if lot:
            leaf(material, "lotNumberText", text=lot)
        manufacturer = self.index.resolve(self.immunization.get("manufacturer"))
        name = string(mapping(manufacturer).get("name"))
        if name:
            leaf(el(product, "manufacturerOrganization"), "name", text=name)

    def _performers(self, activity: Element) -> None:
        """practitioner role AP → performer; EP (entering) → author (SPEC §8.4.4)."""
        authors = []
        for practitioner in as_list(self.immunization.get("practitioner")):
            if not isinstance(practitioner, JSON_OBJECT):
                continue
            role = next((str(c.get("code")) for c in codings(practitioner.get("role"))), "AP")
            if role == "EP":
                authors.append(practitioner.get("actor"))
                continue
            person, organisation = practitioner_of(self.index, practitioner.get("actor"))
            if person is None and organisation is None:
                continue
            entity = el(el(activity, "performer"), "assignedEntity")
            written = sum(1 for i in as_list((person or organisation or {}).get("identifier"))
                          if isinstance(i, JSON_OBJECT) and identifier_ii(entity, i) is not None)
            if written == 0:
                null(entity, "id", "UNK")
            if person is not None:
                person_name(el(entity, "assignedPerson"), human_name(person))
        recorded = extension(self.immunization, "DateRecorded-1")
        for reference in authors:
            author_participation(activity, self.index, reference, mapping(recorded).get("valueDateTime"))

    def _refusal(self, activity: Element, reason: object) -> None:
        """Immunization Refusal Reason (4.53). The SNOMED reason is kept as a translation: it is not an
        HL7 ActReason code (SPEC §8.4.4)."""
        observation = el(el(activity, "entryRelationship", {"typeCode": "RSON"}), "observation",
                         {"classCode": "OBS", "moodCode": "EVN"})
        self.section.template(observation, T.IMMUNIZATION_REFUSAL_REASON)
        self.section.add_ids(observation, self.immunization, "refusal-reason")
        cd(observation, "code", reason, primary_systems=())
        leaf(observation, "statusCode", {"code": "completed"})

    def _narrative(self) -> str | None:
        immunization = self.immunization
        row = self.row
        vaccine_ref = row.cell(self._vaccine_label(), content="vaccine")
        row.cell("Not given" if self.not_given else "Given")
        row.cell(readable_date(immunization.get("date")))
        row.cell(self._dose_lines())
        row.cell([concept_text(immunization.get("route")), concept_text(immunization.get("site"))])
        expiry = readable_date(immunization.get("expirationDate"))
        row.cell([string(immunization.get("lotNumber")) or "", f"Expires {expiry}" if expiry else ""])
        reasons = self.reasons_not_given if self.not_given else self.reasons
        row.cell([concept_text(r) for r in reasons if isinstance(r, JSON_OBJECT)])
        row.cell(self._note_lines())
        return vaccine_ref

    def _vaccine_label(self) -> str:
        immunization = self.immunization
        vaccine = concept_text(immunization.get("vaccineCode"))
        procedure = extension(immunization, "VaccinationProcedure-1")
        procedure_text = concept_text(mapping(procedure).get("valueCodeableConcept"))
        if not vaccine or vaccine.lower() == "unknown" or _is_null_flavor(immunization.get("vaccineCode")):
            vaccine = procedure_text or vaccine or "Vaccine not recorded"
        return vaccine

    def _dose_lines(self) -> list[str]:
        immunization = self.immunization
        protocol = mapping(first(immunization.get("vaccinationProtocol")))
        dose_lines = []
        if protocol.get("doseSequence") is not None:
            series = protocol.get("seriesDoses")
            dose_lines.append(f"Dose {protocol['doseSequence']}" + (f" of {series}" if series else ""))
        dose = mapping(immunization.get("doseQuantity"))
        if format_number(dose.get("value")):
            dose_lines.append(f"{format_number(dose.get('value'))} {dose.get('unit') or dose.get('code') or ''}")
        return dose_lines

    def _note_lines(self) -> list[str]:
        immunization = self.immunization
        notes = [str(n["text"]) for n in as_list(immunization.get("note"))
                 if isinstance(n, JSON_OBJECT) and isinstance(n.get("text"), str)]
        if immunization.get("primarySource") is False:
            notes.append("Reported by another source")
        location = self.index.resolve(immunization.get("location"))
        if string(mapping(location).get("name")):
            notes.append(f"Location: {mapping(location)['name']}")
        performers = [author_label(self.index, p.get("actor")) for p in as_list(immunization.get("practitioner"))
                      if isinstance(p, JSON_OBJECT)]
        notes += [f"By {p}" for p in performers if p]
        if self.section.is_confidential(immunization):
            notes.append("Not for disclosure to the patient (NOPAT)")
        return notes
