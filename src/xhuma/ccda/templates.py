"""One registry for every templateId, section code, fixed code, OID and FHIR system URI the converter emits.

Builders never spell an OID or a templateId inline: they name an entry of this module. Adding a template means
adding one constant here (and, for a section, one ``SectionSpec`` in ``SECTION_SPECS``).
Sources: C-CDA R2.1 (HL7 CDAR2_IG_IHE_CONSOL_R2.1, errata 2025), SPEC §0, §8.2, §8.3.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, NamedTuple

from xhuma.nhs.nhs_number import NHS_NUMBER_OID, NHS_NUMBER_SYSTEM


class TemplateId(NamedTuple):
    """``r11``: the template had a C-CDA R1.1 version, so an R2.1 document SHALL also carry the root without
    extension (CONF:1198-32934 … 32946, schematron pattern hasCompatibleR1.1TemplateId)."""

    root: str
    extension: str | None = None
    r11: bool = True


class FixedCode(NamedTuple):
    """A code the templates fix (never nulled, SPEC §8.3 nullFlavor rule 2)."""

    code: str
    system: str
    system_name: str
    display: str | None = None


class CodeSystem(NamedTuple):
    oid: str
    name: str


# --- code systems (OIDs) ----------------------------------------------------------------------------------------
SNOMED_OID: Final = "2.16.840.1.113883.6.96"
SNOMED_UK_OID: Final = "2.16.840.1.113883.2.1.3.2.4.15"
LOINC_OID: Final = "2.16.840.1.113883.6.1"
ACT_CLASS_OID: Final = "2.16.840.1.113883.5.6"
ACT_CODE_OID: Final = "2.16.840.1.113883.5.4"
CONFIDENTIALITY_OID: Final = "2.16.840.1.113883.5.25"
ADMIN_GENDER_OID: Final = "2.16.840.1.113883.5.1"
CRITICALITY_OID: Final = "2.16.840.1.113883.5.1063"
ACT_REASON_OID: Final = "2.16.840.1.113883.5.8"
ROUTE_OF_ADMIN_OID: Final = "2.16.840.1.113883.5.112"
NULL_FLAVOR_OID: Final = "2.16.840.1.113883.5.1008"
ROLE_CODE_OID: Final = "2.16.840.1.113883.5.111"  # HL7 RoleCode (Family Member Value set 2.16.840.1.113883.1.11.19579)

# --- identifier roots --------------------------------------------------------------------------------------------
ODS_OID: Final = "2.16.840.1.113883.2.1.3.2.4.19.1"
SDS_USER_OID: Final = "1.2.826.0.1285.0.2.0.65"
SDS_ROLE_PROFILE_OID: Final = "1.2.826.0.1285.0.2.0.67"
CDA_TYPE_ID: Final = TemplateId("2.16.840.1.113883.1.3", "POCD_HD000040")

# uuid5 namespace of every id this converter derives (document, entries). Never change it: it would change the
# ids of every entry of every document ever produced, and receivers reconcile on them.
XHUMA_ID_NAMESPACE: Final = uuid.UUID("6f1d9c3e-5d7a-5b0e-9a57-6c4b2f0e8a11")

# --- FHIR system URI -> CDA code system (SPEC §8.3 codes table) ---------------------------------------------------
SNOMED_URI: Final = "http://snomed.info/sct"
CODE_SYSTEMS: Final[dict[str, CodeSystem]] = {
    SNOMED_URI: CodeSystem(SNOMED_OID, "SNOMED CT"),
    "http://loinc.org": CodeSystem(LOINC_OID, "LOINC"),
    "http://read.info/readv2": CodeSystem("2.16.840.1.113883.2.1.6.2", "Read Codes v2"),
    "http://read.info/ctv3": CodeSystem("2.16.840.1.113883.2.1.3.2.4.14", "CTV3"),
    "http://unitsofmeasure.org": CodeSystem("2.16.840.1.113883.6.8", "UCUM"),
    "http://hl7.org/fhir/sid/icd-10": CodeSystem("2.16.840.1.113883.6.3", "ICD-10"),
    # Supplier drug dictionaries (SPEC §0, "verify"): only ever used as translations.
    "https://fhir.hl7.org.uk/Id/emis-drug-codes": CodeSystem("2.16.840.1.113883.2.1.6.9", "EMIS drug codes"),
    "https://fhir.hl7.org.uk/Id/multilex-drug-codes": CodeSystem("2.16.840.1.113883.2.1.6.4", "Multilex"),
    "https://fhir.hl7.org.uk/Id/resipuk-gemscript-drug-codes": CodeSystem("2.16.840.1.113883.2.1.6.15", "Gemscript"),
}
# Systems accepted as the primary code of a CD (others become translations).
PRIMARY_SYSTEMS: Final = frozenset({SNOMED_URI, "http://loinc.org"})

# --- FHIR identifier system -> II root (SPEC §8.3 identifiers) ----------------------------------------------------
IDENTIFIER_SYSTEMS: Final[dict[str, str]] = {
    NHS_NUMBER_SYSTEM: NHS_NUMBER_OID,
    "https://fhir.nhs.uk/Id/ods-organization-code": ODS_OID,
    "https://fhir.nhs.uk/Id/ods-site-code": ODS_OID,
    "https://fhir.nhs.uk/Id/sds-user-id": SDS_USER_OID,
    "https://fhir.nhs.uk/Id/sds-role-profile-id": SDS_ROLE_PROFILE_OID,
}
ODS_SYSTEMS: Final = frozenset({"https://fhir.nhs.uk/Id/ods-organization-code", "https://fhir.nhs.uk/Id/ods-site-code"})

# --- GP Connect List codes (SPEC §7.4) -------------------------------------------------------------------------------
LIST_ALLERGIES: Final = "886921000000105"
LIST_ENDED_ALLERGIES: Final = "1103671000000101"
LIST_MEDICATIONS: Final = "933361000000108"
LIST_PROBLEMS: Final = "717711000000103"
LIST_IMMUNISATIONS: Final = "1102181000000102"
LIST_CONSULTATIONS: Final = "1149501000000101"
LIST_UNCATEGORISED: Final = "826501000000100"
LIST_INVESTIGATIONS: Final = "887191000000108"
LIST_REFERRALS: Final = "792931000000107"
LIST_DIARY: Final = "714311000000108"
LIST_CONSULTATION: Final = "325851000000107"
LIST_TOPIC: Final = "25851000000105"
LIST_HEADING: Final = "24781000000107"
KNOWN_LIST_CODES: Final = frozenset(
    {
        LIST_ALLERGIES, LIST_ENDED_ALLERGIES, LIST_MEDICATIONS, LIST_PROBLEMS, LIST_IMMUNISATIONS, LIST_CONSULTATIONS,
        LIST_UNCATEGORISED, LIST_INVESTIGATIONS, LIST_REFERRALS, LIST_DIARY, LIST_CONSULTATION, LIST_TOPIC,
        LIST_HEADING,
    }
)
SECONDARY_LIST_SYSTEM: Final = "https://fhir.hl7.org.uk/STU3/CodeSystem/GPConnect-SecondaryListValues-1"

# --- GP Connect extension URLs ---------------------------------------------------------------------------------------
EXT_LIST_WARNING: Final = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-ListWarningCode-1"
EXT_SCT_DESCRIPTION: Final = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-coding-sctdescid"
LIST_WARNING_TEXT: Final[dict[str, str]] = {
    "confidential-items": "Confidential items: some items have been excluded because of confidentiality or "
    "patient preference.",
    "data-in-transit": "Data in transit: the record is being transferred from a previous practice (GP2GP) and "
    "may be incomplete.",
    "data-awaiting-filing": "Data awaiting filing: some items have been received electronically but not yet "
    "filed in the record.",
}

# --- document level (SPEC §8.1) --------------------------------------------------------------------------------------
US_REALM_HEADER: Final = TemplateId("2.16.840.1.113883.10.20.22.1.1", "2015-08-01")
CCD_DOCUMENT: Final = TemplateId("2.16.840.1.113883.10.20.22.1.2", "2015-08-01")
CCD_CODE: Final = FixedCode("34133-9", LOINC_OID, "LOINC", "Summarization of Episode Note")
DEFAULT_TITLE: Final = "GP Connect record summary"

# --- entry templates (SPEC §8.2) -------------------------------------------------------------------------------------
AUTHOR_PARTICIPATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.119")
ALLERGY_CONCERN_ACT: Final = TemplateId("2.16.840.1.113883.10.20.22.4.30", "2015-08-01")
ALLERGY_INTOLERANCE_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.7", "2014-06-09")
REACTION_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.9", "2014-06-09")
SEVERITY_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.8", "2014-06-09")
CRITICALITY_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.145")
MEDICATION_ACTIVITY: Final = TemplateId("2.16.840.1.113883.10.20.22.4.16", "2014-06-09")
MEDICATION_INFORMATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.23", "2014-06-09")
MEDICATION_FREE_TEXT_SIG: Final = TemplateId("2.16.840.1.113883.10.20.22.4.147")
INSTRUCTION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.20", "2014-06-09")
MEDICATION_SUPPLY_ORDER: Final = TemplateId("2.16.840.1.113883.10.20.22.4.17", "2014-06-09")
PRECONDITION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.25", "2014-06-09")
INDICATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.19", "2014-06-09")
PROBLEM_CONCERN_ACT: Final = TemplateId("2.16.840.1.113883.10.20.22.4.3", "2015-08-01")
PROBLEM_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.4", "2015-08-01")
IMMUNIZATION_ACTIVITY: Final = TemplateId("2.16.840.1.113883.10.20.22.4.52", "2015-08-01")
IMMUNIZATION_MEDICATION_INFORMATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.54", "2014-06-09")
IMMUNIZATION_REFUSAL_REASON: Final = TemplateId("2.16.840.1.113883.10.20.22.4.53")
COMMENT_ACTIVITY: Final = TemplateId("2.16.840.1.113883.10.20.22.4.64")
ENTRY_REFERENCE: Final = TemplateId("2.16.840.1.113883.10.20.22.4.122")
RESULT_ORGANIZER: Final = TemplateId("2.16.840.1.113883.10.20.22.4.1", "2015-08-01")
RESULT_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.2", "2015-08-01")
VITAL_SIGNS_ORGANIZER: Final = TemplateId("2.16.840.1.113883.10.20.22.4.26", "2015-08-01")
VITAL_SIGN_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.27", "2014-06-09")
SMOKING_STATUS: Final = TemplateId("2.16.840.1.113883.10.20.22.4.78", "2014-06-09")
TOBACCO_USE: Final = TemplateId("2.16.840.1.113883.10.20.22.4.85", "2014-06-09")
SOCIAL_HISTORY_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.38", "2015-08-01")
PROCEDURE_ACTIVITY_PROCEDURE: Final = TemplateId("2.16.840.1.113883.10.20.22.4.14", "2014-06-09")
PLANNED_ENCOUNTER: Final = TemplateId("2.16.840.1.113883.10.20.22.4.40", "2014-06-09")
PLANNED_ACT: Final = TemplateId("2.16.840.1.113883.10.20.22.4.39", "2014-06-09")
PLANNED_PROCEDURE: Final = TemplateId("2.16.840.1.113883.10.20.22.4.41", "2014-06-09")
PLANNED_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.44", "2014-06-09")
ENCOUNTER_ACTIVITY: Final = TemplateId("2.16.840.1.113883.10.20.22.4.49", "2015-08-01")
ENCOUNTER_DIAGNOSIS: Final = TemplateId("2.16.840.1.113883.10.20.22.4.80", "2015-08-01")
SERVICE_DELIVERY_LOCATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.32")
NOTE_ACTIVITY: Final = TemplateId("2.16.840.1.113883.10.20.22.4.202", "2016-11-01", r11=False)
FAMILY_HISTORY_ORGANIZER: Final = TemplateId("2.16.840.1.113883.10.20.22.4.45", "2015-08-01")
FAMILY_HISTORY_OBSERVATION: Final = TemplateId("2.16.840.1.113883.10.20.22.4.46", "2015-08-01")

# --- fixed codes -----------------------------------------------------------------------------------------------------
CONCERN: Final = FixedCode("CONC", ACT_CLASS_OID, "HL7ActClass", "Concern")
ASSERTION: Final = FixedCode("ASSERTION", ACT_CODE_OID, "ActCode", "Assertion")
SEVERITY: Final = FixedCode("SEV", ACT_CODE_OID, "ActCode", "Severity Observation")
CRITICALITY: Final = FixedCode("82606-5", LOINC_OID, "LOINC", "Allergy or intolerance criticality")
PROBLEM: Final = FixedCode("55607006", SNOMED_OID, "SNOMED CT", "Problem")
PROBLEM_LOINC: Final = FixedCode("75326-9", LOINC_OID, "LOINC", "Problem")
FREE_TEXT_SIG: Final = FixedCode("76662-6", LOINC_OID, "LOINC", "Instructions Medication")
MEDICATION_INSTRUCTION: Final = FixedCode(
    "422037009", SNOMED_OID, "SNOMED CT", "Provider medication administration instructions"
)
ANNOTATION_COMMENT: Final = FixedCode("48767-8", LOINC_OID, "LOINC", "Annotation comment")
DRUG_OR_MEDICAMENT: Final = FixedCode("410942007", SNOMED_OID, "SNOMED CT", "Drug or medicament")


# --- sections (SPEC §8.2) --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SectionSpec:
    """How one CCD section is identified and what the CCD requires of it.

    ``required``: the CCD SHALL contain it (a placeholder is assembled when no module produced it).
    ``entries_required``: the template demands ≥1 entry unless the section carries nullFlavor="NI".
    ``id_prefix``: prefix of narrative IDs of this section (must be unique in the document, an NCName).
    """

    key: str
    title: str
    id_prefix: str
    template: TemplateId | None = None
    code: FixedCode | None = None
    required: bool = False
    entries_required: bool = False
    placeholder: bool = True


def _loinc(code: str, display: str) -> FixedCode:
    return FixedCode(code, LOINC_OID, "LOINC", display)


SECTION_SPECS: Final[dict[str, SectionSpec]] = {
    spec.key: spec
    for spec in (
        SectionSpec(
            "provenance", "About this document", "src", placeholder=False,
        ),
        SectionSpec(
            "allergies", "Allergies and adverse reactions", "alg",
            TemplateId("2.16.840.1.113883.10.20.22.2.6.1", "2015-08-01"),
            _loinc("48765-2", "Allergies and adverse reactions Document"), required=True, entries_required=True,
        ),
        SectionSpec(
            "medications", "Medications", "med",
            TemplateId("2.16.840.1.113883.10.20.22.2.1.1", "2014-06-09"),
            _loinc("10160-0", "History of Medication use Narrative"), required=True, entries_required=True,
        ),
        SectionSpec(
            "problems", "Problems", "prb",
            TemplateId("2.16.840.1.113883.10.20.22.2.5.1", "2015-08-01"),
            _loinc("11450-4", "Problem list - Reported"), required=True, entries_required=True,
        ),
        SectionSpec(
            "immunizations", "Immunisations", "imm",
            TemplateId("2.16.840.1.113883.10.20.22.2.2.1", "2015-08-01"),
            _loinc("11369-6", "History of Immunization Narrative"), entries_required=True,
        ),
        SectionSpec(
            "results", "Results", "res",
            TemplateId("2.16.840.1.113883.10.20.22.2.3.1", "2015-08-01"),
            _loinc("30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
            required=True, entries_required=True,
        ),
        SectionSpec(
            "vital_signs", "Vital signs", "vit",
            TemplateId("2.16.840.1.113883.10.20.22.2.4.1", "2015-08-01"),
            _loinc("8716-3", "Vital signs"), required=True, entries_required=True,
        ),
        SectionSpec(
            "social_history", "Social history", "soc",
            TemplateId("2.16.840.1.113883.10.20.22.2.17", "2015-08-01"),
            _loinc("29762-2", "Social history Narrative"), required=True,
        ),
        SectionSpec(
            "encounters", "Encounters", "enc",
            TemplateId("2.16.840.1.113883.10.20.22.2.22", "2015-08-01"),
            _loinc("46240-8", "History of Hospitalizations+Outpatient visits Narrative"),
        ),
        SectionSpec(
            "procedures", "Procedures", "prc",
            TemplateId("2.16.840.1.113883.10.20.22.2.7.1", "2014-06-09"),
            _loinc("47519-4", "History of Procedures Document"), entries_required=True,
        ),
        SectionSpec(
            "family_history", "Family history", "fhx",
            TemplateId("2.16.840.1.113883.10.20.22.2.15", "2015-08-01"),
            _loinc("10157-6", "History of family member diseases Narrative"), placeholder=False,
        ),
        SectionSpec(
            "plan_of_treatment", "Plan of treatment", "pln",
            TemplateId("2.16.840.1.113883.10.20.22.2.10", "2014-06-09"),
            _loinc("18776-5", "Plan of care note"),
        ),
        SectionSpec(
            "notes", "Notes", "nte",
            TemplateId("2.16.840.1.113883.10.20.22.2.65", "2016-11-01", r11=False),
            _loinc("34109-9", "Note"), placeholder=False,
        ),
        SectionSpec("uncategorised", "Other GP record entries", "oth", placeholder=False),
    )
}
