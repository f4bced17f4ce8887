"""Procedures (SPEC §8.4.8; issue 13): GP Connect Access Record: Structured has no procedures area.

Procedures are coded uncategorised entries without a value whose SNOMED code is in the Procedure hierarchy
(<< 71388002), as told by the terminology facts resolved before conversion (``ConversionContext.terminology``;
xhuma.ccda.placement). Each becomes a Procedure Activity Procedure (4.14), dated by the observation's effective
time. Without terminology, or with no such entry, the section is present with ``nullFlavor="NI"`` (no information
— not "no procedures") and a narrative saying where procedures recorded at the practice can be found: guessing
the hierarchy from display text would put findings into the procedure history (docs/mapping/procedures.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.context import Hierarchy
from xhuma.ccda.fhir import concept_text, readable_date
from xhuma.ccda.hl7 import cd, fhir_ts, text_reference, ts
from xhuma.ccda.narrative import NarrativeTable
from xhuma.ccda.observation import effective
from xhuma.ccda.participation import author_participation
from xhuma.ccda.placement import candidates, hierarchy, remarks_and_recorder
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import el, leaf

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["procedures"]
EXPLANATION = (
    "No information: the GP Connect structured record has no procedures list. Procedures recorded at the GP "
    "practice appear in the consultation notes and in \"Other GP record entries\"."
)
INTRO = ("Procedures the GP system returned as uncategorised data, identified by their SNOMED CT hierarchy "
         "(Procedure). Procedures recorded in consultations are also in the consultation notes.")
HEADERS = ("Date", "Procedure", "Comments", "Recorded by")


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    known = state.context.terminology.hierarchy
    procedures = [o for o in candidates(state) if hierarchy(state, o) is Hierarchy.PROCEDURE] if known else []
    if not procedures:
        section.empty_paragraph(EXPLANATION)  # no entries: nullFlavor="NI" (entries-required section)
        return
    section.use_lists(T.LIST_UNCATEGORISED)  # its warnings (data in transit, confidential items) open the section
    section.paragraph(INTRO)
    procedures.sort(key=lambda o: fhir_ts(effective(o)) or "", reverse=True)
    table = section.table(HEADERS, "Procedures from uncategorised data")
    section.convert_each(procedures, lambda o: _procedure(section, table, o))


def _procedure(section: SectionWriter, table: NarrativeTable, observation: Resource) -> None:
    row = table.row()
    row.cell(readable_date(effective(observation)) or "Unknown")
    name = row.cell(concept_text(observation.get("code"), "Unnamed procedure"), content="procedure")
    performers = remarks_and_recorder(section, row, observation)
    procedure = el(section.entry(), "procedure", {"classCode": "PROC", "moodCode": "EVN"})
    section.template(procedure, T.PROCEDURE_ACTIVITY_PROCEDURE)
    section.add_ids(procedure, observation)
    cd(procedure, "code", observation.get("code"), reference=name)
    text_reference(procedure, row.reference)
    leaf(procedure, "statusCode", {"code": "completed"})
    ts(procedure, "effectiveTime", effective(observation))
    author_participation(procedure, section.index, performers[0] if performers else None,
                         observation.get("issued") or effective(observation))
    section.mapped(observation, T.PROCEDURE_ACTIVITY_PROCEDURE)
