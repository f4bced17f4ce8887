"""Past Medical History (C-CDA 2.16.840.1.113883.10.20.22.2.20, LOINC 11348-0; issue 13).

Coded uncategorised entries without a value whose SNOMED code is a disorder (<< 64572001), a clinical finding
(<< 404684003) or a history-of situation ("H/O: ...", << 417662000), as told by the terminology facts resolved
before conversion, and that are not on the problem list (a problem's actual problem is that problem's entry):
one Problem Observation (4.4) each, dated by the observation's effective time. Never the active problem list: the
practice did not make them problems (docs/mapping/past_medical_history.md). Without terminology the section is
not produced and the entries stay in "Other GP record entries" (xhuma.ccda.placement).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import concept_text, readable_date
from xhuma.ccda.hl7 import cd, fhir_ts, fixed_code, ivl_ts, text_reference
from xhuma.ccda.narrative import NarrativeTable
from xhuma.ccda.observation import effective, sct_codes
from xhuma.ccda.participation import author_participation
from xhuma.ccda.placement import PAST_HISTORY, candidates, hierarchy, problem_list_codes, remarks_and_recorder
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import el, leaf

Resource = Mapping[str, Any]
SPEC = T.SectionSpec(
    "past_medical_history", "Past medical history", "pmh",
    T.TemplateId("2.16.840.1.113883.10.20.22.2.20", "2015-08-01"),
    T.FixedCode("11348-0", T.LOINC_OID, "LOINC", "History of Past illness Narrative"), placeholder=False,
)
T.SECTION_SPECS.setdefault(SPEC.key, SPEC)  # registered by its module, like the cached frames (SECTIONS.md)
INTRO = ("Conditions and findings the GP system returned as uncategorised data that are not on the problem list, "
         "identified by their SNOMED CT hierarchy (Disorder, Clinical finding). They are history, not active "
         "problems.")
HEADERS = ("Date", "Condition or finding", "Comments", "Recorded by")


def build(state: ConversionState) -> None:
    if not state.context.terminology.hierarchy:
        return  # nothing can be placed by hierarchy (the fallbacks: xhuma.ccda.placement)
    problems = problem_list_codes(state)
    history = [o for o in candidates(state) if hierarchy(state, o) in PAST_HISTORY
               and problems.isdisjoint(sct_codes(o.get("code")))]
    if not history:
        return
    section = state.section(SPEC)
    section.use_lists(T.LIST_UNCATEGORISED)  # its warnings (data in transit, confidential items) open the section
    section.paragraph(INTRO)
    history.sort(key=lambda o: fhir_ts(effective(o)) or "", reverse=True)
    table = section.table(HEADERS, "Past conditions and findings from uncategorised data")
    section.convert_each(history, lambda o: _history(section, table, o))


def _history(section: SectionWriter, table: NarrativeTable, observation: Resource) -> None:
    row = table.row()
    row.cell(readable_date(effective(observation)) or "Unknown")
    name = row.cell(concept_text(observation.get("code"), "Unnamed entry"), content="problem")
    performers = remarks_and_recorder(section, row, observation)
    problem = el(section.entry(), "observation", {"classCode": "OBS", "moodCode": "EVN"})
    section.template(problem, T.PROBLEM_OBSERVATION)
    section.add_ids(problem, observation)
    code = fixed_code(problem, "code", T.PROBLEM)
    fixed_code(code, "translation", T.PROBLEM_LOINC)  # CONF:1198-32950
    text_reference(problem, row.reference)
    leaf(problem, "statusCode", {"code": "completed"})
    ivl_ts(problem, "effectiveTime", effective(observation))
    cd(problem, "value", observation.get("code"), reference=name, xsi_type="CD")
    author_participation(problem, section.index, performers[0] if performers else None,
                         observation.get("issued") or effective(observation))
    section.mapped(observation, T.PROBLEM_OBSERVATION)
