"""GP Connect Access Record: Structured clinical areas: one home for their names (SPEC §7.3, §7.4).

An area has the name the setting XHUMA_GPC_CLINICAL_AREAS spells it with, the ``Parameters`` name that asks for it,
the part parameters that narrow it (with their ``value[x]`` type) and the primary List(s) a provider answers it
with (SNOMED CT code -> title). The consumer (gpconnect.py) and the simulator's provider read this table; the
converter (xhuma.ccda) names the same List codes in its own template registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class ClinicalArea:
    name: str  # as the setting spells it: allergies, medication, immunisations ...
    parameter: str  # the Parameters name: includeAllergies ...
    parts: Mapping[str, str]  # part parameter -> its value[x] key
    lists: Mapping[str, str]  # primary List SNOMED CT code -> the List's title


def _area(name: str, parameter: str, parts: dict[str, str], lists: dict[str, str]) -> ClinicalArea:
    return ClinicalArea(name, parameter, MappingProxyType(parts), MappingProxyType(lists))


# In the order the consumer requests them (the Parameters resource lists them in this order).
CLINICAL_AREAS: Final[tuple[ClinicalArea, ...]] = (
    _area("allergies", "includeAllergies", {"includeResolvedAllergies": "valueBoolean"},
          {"886921000000105": "Allergies and adverse reactions"}),
    _area("medication", "includeMedication",
          {"includePrescriptionIssues": "valueBoolean", "medicationSearchFromDate": "valueDate"},
          {"933361000000108": "Medications and medical devices"}),
    _area("problems", "includeProblems", {"filterStatus": "valueCode"}, {"717711000000103": "Problems"}),
    _area("immunisations", "includeImmunisations", {"includeNotGiven": "valueBoolean", "includeStatus": "valueBoolean"},
          {"1102181000000102": "Immunisations"}),
    _area("uncategorised", "includeUncategorisedData", {"uncategorisedDataSearchPeriod": "valuePeriod"},
          {"826501000000100": "Miscellaneous record"}),
    _area("investigations", "includeInvestigations", {"investigationSearchPeriod": "valuePeriod"},
          {"887191000000108": "Investigations and results"}),
    _area("referrals", "includeReferrals", {"referralSearchPeriod": "valuePeriod"},
          {"792931000000107": "Outbound referral"}),
    _area("diary", "includeDiaryEntries", {"diaryEntriesSearchDate": "valueDate"},
          {"714311000000108": "Patient recall administration"}),
    _area("consultations", "includeConsultations",
          {"consultationSearchPeriod": "valuePeriod", "includeNumberOfMostRecent": "valuePositiveInt"},
          {"1149501000000101": "List of consultations"}),
)
BY_NAME: Final[Mapping[str, ClinicalArea]] = MappingProxyType({area.name: area for area in CLINICAL_AREAS})
BY_PARAMETER: Final[Mapping[str, ClinicalArea]] = MappingProxyType(
    {area.parameter: area for area in CLINICAL_AREAS}
)

# Lists beside the primary ones: ended allergies (asked for with includeResolvedAllergies) and the structure of
# consultations (consultation, topic, heading).
RESOLVED_ALLERGIES_LIST: Final = "1103671000000101"
CONSULTATION_STRUCTURE_LISTS: Final = frozenset({"325851000000107", "25851000000105", "24781000000107"})

# Part parameters the provider refuses when consultations or problems are also requested (SPEC §7.3,
# "not-permitted combinations"; answered with 422 INVALID_PARAMETER).
FORBIDDEN_WITH_CONSULTATIONS: Final = frozenset({
    "medicationSearchFromDate", "uncategorisedDataSearchPeriod", "filterStatus", "referralSearchPeriod",
    "diaryEntriesSearchDate", "includeNotGiven", "includeStatus",
})
FORBIDDEN_WITH_PROBLEMS: Final = frozenset({
    "medicationSearchFromDate", "uncategorisedDataSearchPeriod", "referralSearchPeriod", "diaryEntriesSearchDate",
    "includeNotGiven", "includeStatus",
})


def requested_areas(names: list[str]) -> list[ClinicalArea]:
    """The configured areas (any case, spaces ignored) in request order; unknown names are left out."""
    wanted = {name.strip().lower() for name in names}
    return [area for area in CLINICAL_AREAS if area.name in wanted]


__all__ = [
    "BY_NAME",
    "BY_PARAMETER",
    "CLINICAL_AREAS",
    "CONSULTATION_STRUCTURE_LISTS",
    "FORBIDDEN_WITH_CONSULTATIONS",
    "FORBIDDEN_WITH_PROBLEMS",
    "RESOLVED_ALLERGIES_LIST",
    "ClinicalArea",
    "requested_areas",
]
