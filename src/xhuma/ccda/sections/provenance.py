"""'About this document': where the record came from and when, and every GP Connect warning (SPEC §8.3, §8.5).

Narrative-only section (no templateId, no code: allowed by CDA for open CCD sections). Built last so that it can
summarise the warnings every other section surfaced; the assembler places it first.
"""

from __future__ import annotations

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import readable_date, string
from xhuma.ccda.hl7 import hl7_ts
from xhuma.ccda.participation import ods_code
from xhuma.ccda.section import ConversionState

SPEC = T.SECTION_SPECS["provenance"]


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    practice = state.index.practice
    name = string(practice.get("name")) if practice is not None else None
    ods = ods_code(practice)
    source = f"{name} (ODS {ods})" if name and ods else (name or (f"ODS {ods}" if ods else "an unidentified practice"))
    stamp = hl7_ts(state.now)
    retrieved = readable_date(f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}")
    section.paragraph(f"Source: the GP record held by {source}, retrieved {retrieved} (UTC{stamp[14:]}) via "
                      "GP Connect Access Record: Structured, and converted to C-CDA by "
                      f"{state.context.custodian_name}.")
    warnings = state.list_notices
    disabled = sorted({text for texts in state.disabled_areas.values() for text in texts})
    if warnings or disabled:
        table = section.table(("Section", "Warning"), caption="Warnings from the GP system")
        for key, notice in warnings:
            row = table.row()
            row.cell(T.SECTION_SPECS[key].title if key in T.SECTION_SPECS else key)
            row.cell(notice.text)
        for text in disabled:
            row = table.row()
            row.cell("All")
            row.cell(text)
    else:
        section.paragraph("The GP system reported no warnings for this record.")
    failed = sum(area.get("failed", 0) for area in state.report.counts.values())
    if failed:
        section.paragraph(f"{failed} record entries could not be converted to structured entries; they are shown "
                          "as text in their sections.")
