"""'About this document': where the record came from and when, and every GP Connect warning (SPEC §8.3, §8.5).

Narrative-only section (no templateId, no code: allowed by CDA for open CCD sections). Built last so that it can
summarise the warnings every other section surfaced; the assembler places it first.
"""

from __future__ import annotations

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import readable_date, string
from xhuma.ccda.hl7 import hl7_ts
from xhuma.ccda.participation import ods_code
from xhuma.ccda.section import ConversionState, Notice

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
        for sections, message, subjects in _grouped(warnings):
            row = table.row()
            row.cell(", ".join(sections))
            count = f" ({len(subjects)} lists: {', '.join(subjects)})" if len(subjects) > 1 else f" ({subjects[0]})"
            row.cell(message + count)
        for text in disabled:
            row = table.row()
            row.cell("All")
            row.cell(text)
    else:
        section.empty_paragraph("The GP system reported no warnings for this record.")
    failed = sum(area.get("failed", 0) for area in state.report.counts.values())
    if failed:
        section.paragraph(f"{failed} record entries could not be converted to structured entries; they are shown "
                          "as text in their sections.")


def _grouped(warnings: list[tuple[str, Notice]]) -> list[tuple[list[str], str, list[str]]]:
    """Each distinct warning once (issue 13: one record repeats "data in transit" 19 times), with the sections
    that show it and the Lists that carry it, in first-seen order."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for key, notice in warnings:
        message = notice.message or notice.text
        sections, subjects = found.setdefault(message, ([], []))
        title = T.SECTION_SPECS[key].title if key in T.SECTION_SPECS else key
        if title not in sections:
            sections.append(title)
        subject = notice.subject or title
        if subject not in subjects:
            subjects.append(subject)
    return [(sections, message, subjects) for message, (sections, subjects) in found.items()]
