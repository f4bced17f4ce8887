"""Social history (SPEC §8.4.11; mandatory CCD section): smoking and alcohol from uncategorised data.

Source: Observations of the uncategorised-data List and of consultation topic/heading Lists whose SNOMED code is
in the curated lists below (verify against the terminology server):

* the US "Smoking Status" value set (2.16.840.1.113883.11.20.9.38) → Smoking Status – Meaningful Use (4.78,
  code 72166-2, value = the GP code);
* other codes of the "Tobacco Use" value set (2.16.840.1.113883.11.20.9.41) → Tobacco Use (4.85, code 11367-0);
* further UK tobacco codes and alcohol codes → Social History Observation (4.38): findings as
  ``code`` = category (229819007 Tobacco use and exposure / 160573003 Alcohol intake) + ``value`` = the GP code;
  quantities (units per week, cigarettes per day) as ``code`` = the GP code + ``value`` PQ. 4.38 needs a LOINC
  translation of a non-LOINC code (CONF:1198-32951): 11367-0 History of tobacco use / 11331-6 History of alcohol use.

Occupations (issue 13): coded uncategorised entries without a value whose SNOMED code is in the Occupation
hierarchy (<< 14679004), as told by the terminology facts resolved before conversion (xhuma.ccda.placement) →
Social History Observation (4.38) with ``code`` = 364703007 Employment detail (Social History Type value set) +
LOINC 11341-5 History of Occupation, ``value`` = the GP's occupation code. Without terminology they stay in
"Other GP record entries" (the fallback, docs/mapping/social_history.md).

Nothing found → the section is still present with "No information available from the GP record." (no entries).
These observations are not repeated in "Other GP record entries".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from xhuma.ccda import templates as T
from xhuma.ccda.context import Hierarchy
from xhuma.ccda.fhir import JSON_OBJECT, as_list, concept_text, readable_date, string
from xhuma.ccda.hl7 import cd, fhir_ts, fixed_code, fixed_code_attrs, format_number, pq, text_reference, ts
from xhuma.ccda.narrative import NarrativeTable, lines_of
from xhuma.ccda.observation import effective, sct_codes, uncategorised_observations, value_text, write_value
from xhuma.ccda.participation import author_label, author_participation
from xhuma.ccda.placement import placed
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import Element, el, leaf, leaf_markup

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["social_history"]

# Smoking Status value set 2.16.840.1.113883.11.20.9.38 (C-CDA R2.1 voc.xml).
SMOKING_STATUS_CODES = frozenset({
    "266919005", "266927001", "428041000124106", "428061000124105", "428071000124103", "449868002", "77176002",
    "8517006",
})
# Tobacco Use value set 2.16.840.1.113883.11.20.9.41 (C-CDA R2.1 voc.xml), without the smoking-status codes.
TOBACCO_USE_CODES = frozenset({
    "10761391000119102", "110483000", "134406006", "160603005", "160604004", "160605003", "160606002",
    "160612007", "160613002", "160614008", "160616005", "160619003", "169940006", "228494002", "228499007",
    "228504007", "228509002", "228514003", "228515002", "228516001", "228517005", "228518000", "228523000",
    "228524006", "228525007", "230059006", "230060001", "230062009", "230063004", "230064005", "230065006",
    "266920004", "266929003", "308438006", "365981007", "365982000", "365983005", "394871007", "394872000",
    "394873005", "427189007", "43381005", "446172000", "449345000", "449867007", "449869005",
    "450811000124104", "450821000124107", "451881000124101", "451891000124103", "56578002", "56771006",
    "59978006", "65568007", "713914004", "81703003", "82302008",
}) - SMOKING_STATUS_CODES
# UK tobacco codes outside both US value sets (non-smoker, stopped smoking, consumption observables).
OTHER_TOBACCO_CODES = frozenset({
    "8392000", "160617001", "160625004", "230056004", "266918002", "401201003", "229819007", "365980008",
})
ALCOHOL_CODES = frozenset({
    "1082641000000106",  # Alcohol units consumed per week
    "160592001",  # Alcohol units per week
    "160573003",  # Alcohol intake
    "228273003",  # Finding relating to alcohol drinking behaviour
    "105542008",  # Non-drinker
    "228274009",  # Lifetime non-drinker of alcohol
    "219006",  # Current drinker of alcohol
    "82581004",  # Ex-drinker
    "28127009",  # Social drinker
    "266917007",  # Trivial drinker
    "43783005",  # Moderate drinker
    "86933000",  # Heavy drinker
    "897148007",  # Alcoholic beverage intake
})


class Category(NamedTuple):
    label: str
    finding_code: T.FixedCode  # code of a 4.38 observation whose value is the GP finding
    loinc: T.FixedCode  # LOINC translation (CONF:1198-32951)


TOBACCO = Category("Tobacco", T.FixedCode("229819007", T.SNOMED_OID, "SNOMED CT", "Tobacco use and exposure"),
                   T.FixedCode("11367-0", T.LOINC_OID, "LOINC", "History of tobacco use"))
ALCOHOL = Category("Alcohol", T.FixedCode("160573003", T.SNOMED_OID, "SNOMED CT", "Alcohol intake"),
                   T.FixedCode("11331-6", T.LOINC_OID, "LOINC", "History of alcohol use"))
OCCUPATION = Category("Occupation", T.FixedCode("364703007", T.SNOMED_OID, "SNOMED CT", "Employment detail"),
                      T.FixedCode("11341-5", T.LOINC_OID, "LOINC", "History of Occupation"))
SMOKING_STATUS_CODE = T.FixedCode("72166-2", T.LOINC_OID, "LOINC", "Tobacco smoking status")
# UK alcohol units per week are not UCUM; an annotated UCUM unit keeps the value machine-readable.
ALCOHOL_UNITS = {"units/week": "{units}/wk", "units per week": "{units}/wk", "u/week": "{units}/wk",
                 "units/wk": "{units}/wk", "units/day": "{units}/d", "units per day": "{units}/d"}
HEADERS = ("Date", "Category", "Finding", "Value", "Comments", "Recorded by")


def classify(observation: Resource) -> tuple[str, Category] | None:
    """("smoking-status" | "tobacco-use" | "social", category) for a social-history observation, else None."""
    for code in sct_codes(observation.get("code")):
        if code in SMOKING_STATUS_CODES:
            return "smoking-status", TOBACCO
        if code in TOBACCO_USE_CODES:
            return "tobacco-use", TOBACCO
        if code in OTHER_TOBACCO_CODES:
            return "social", TOBACCO
        if code in ALCOHOL_CODES:
            return "social", ALCOHOL
    return None


def is_social_history(observation: Resource) -> bool:
    return classify(observation) is not None


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    section.use_lists(T.LIST_UNCATEGORISED)
    found: list[tuple[Resource, tuple[str, Category]]] = []
    for observation in uncategorised_observations(state):
        kind = classify(observation)
        if kind is not None:
            found.append((observation, kind))
    found += [(o, ("social", OCCUPATION)) for o in placed(state, Hierarchy.OCCUPATION)]
    found.sort(key=lambda item: fhir_ts(effective(item[0])) or "", reverse=True)
    kinds = {id(o): kind for o, kind in found}
    table = section.table(HEADERS)
    section.convert_each([o for o, _ in found], lambda o: SocialHistoryEntry(section, table, o, kinds[id(o)]).build())


class SocialHistoryEntry:
    def __init__(self, section: SectionWriter, table: NarrativeTable, observation: Resource,
                 kind: tuple[str, Category]) -> None:
        self.section = section
        self.table = table
        self.observation = observation
        self.kind, self.category = kind

    def build(self) -> None:
        observation = self.observation
        row = self.table.row()
        row.cell(readable_date(effective(observation)))
        row.cell(self.category.label)
        finding_ref = row.cell(concept_text(observation.get("code"), "Unnamed entry"), content="finding")
        row.cell(value_text(observation))
        remarks = lines_of(string(observation.get("comment")))
        if self.section.is_confidential(observation):
            remarks.append("Not for disclosure to the patient (NOPAT)")
        row.cell(remarks)
        row.cell([author_label(self.section.index, p) for p in as_list(observation.get("performer"))])

        entry = el(self.section.entry(), "observation", {"classCode": "OBS", "moodCode": "EVN"})
        if self.kind == "smoking-status":
            template = T.SMOKING_STATUS
            self.section.template(entry, template)
            self.section.add_ids(entry, observation)
            fixed_code(entry, "code", SMOKING_STATUS_CODE)
            text_reference(entry, row.reference)
            leaf(entry, "statusCode", {"code": "completed"})
            ts(entry, "effectiveTime", effective(observation))  # a point in time: no low/high (CONF:1098-32894)
            cd(entry, "value", observation.get("code"), reference=finding_ref, xsi_type="CD")
        elif self.kind == "tobacco-use":
            template = T.TOBACCO_USE
            self.section.template(entry, template)
            self.section.add_ids(entry, observation)
            fixed_code(entry, "code", TOBACCO.loinc)
            text_reference(entry, row.reference)
            leaf(entry, "statusCode", {"code": "completed"})
            interval = el(entry, "effectiveTime")
            ts(interval, "low", effective(observation))
            cd(entry, "value", observation.get("code"), reference=finding_ref, xsi_type="CD")
        else:
            template = T.SOCIAL_HISTORY_OBSERVATION
            self.section.template(entry, template)
            self.section.add_ids(entry, observation)
            has_value = any(key.startswith("value") for key in observation)
            loinc = self.category.loinc
            if has_value:
                translation = leaf_markup("translation", fixed_code_attrs(loinc))
                cd(entry, "code", observation.get("code"), reference=finding_ref, extra=translation)
            else:
                code = fixed_code(entry, "code", self.category.finding_code)
                fixed_code(code, "translation", loinc)
            text_reference(entry, row.reference)
            leaf(entry, "statusCode", {"code": "completed"})
            ts(entry, "effectiveTime", effective(observation))
            if has_value:
                self._value(entry)
            else:
                cd(entry, "value", observation.get("code"), reference=finding_ref, xsi_type="CD")
        author_participation(entry, self.section.index, first_performer(observation),
                             observation.get("issued") or effective(observation))
        self.section.mapped(observation, template)

    def _value(self, entry: Element) -> None:
        quantity = self.observation.get("valueQuantity")
        if isinstance(quantity, JSON_OBJECT) and format_number(quantity.get("value")) is not None:
            unit = string(quantity.get("unit")) or ""
            annotated = ALCOHOL_UNITS.get(unit.lower())
            if annotated and quantity.get("system") != "http://unitsofmeasure.org":
                quantity = {**quantity, "system": "http://unitsofmeasure.org", "code": annotated}
            pq(entry, "value", quantity, xsi_type="PQ")
            return
        write_value(entry, self.observation)


def first_performer(observation: Resource) -> object:
    performers = as_list(observation.get("performer"))
    return performers[0] if performers else None
