"""Procedures (SPEC §8.4.8): GP Connect Access Record: Structured has no procedures area.

Decision (SPEC §8.4.8 option a): the Procedures section is always present with ``nullFlavor="NI"`` (no
information — not "no procedures") and a narrative that says where procedures recorded at the practice can be
found. Classifying uncategorised Observations under SNOMED 71388002 |Procedure| would need the SNOMED hierarchy
(a terminology server), which the pure converter does not have; guessing from display text would put findings
into the procedure history. Coded procedures recorded in consultations are in the consultation notes, and
uncategorised ones in "Other GP record entries", so nothing is lost.
"""

from __future__ import annotations

from xhuma.ccda import templates as T
from xhuma.ccda.section import ConversionState

SPEC = T.SECTION_SPECS["procedures"]
EXPLANATION = (
    "No information: the GP Connect structured record has no procedures list. Procedures recorded at the GP "
    "practice appear in the consultation notes and in \"Other GP record entries\"."
)


def build(state: ConversionState) -> None:
    section = state.section(SPEC)  # no entries: rendered with nullFlavor="NI" (entries-required section)
    section.paragraph(EXPLANATION)
