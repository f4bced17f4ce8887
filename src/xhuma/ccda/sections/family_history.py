"""Family history (C-CDA 2.16.840.1.113883.10.20.22.2.15, LOINC 10157-6; issue 13).

GP Connect has no family history area: a practice records it as coded uncategorised entries ("FH: ..." codes,
SNOMED CT << 416471007 |Family history of clinical finding|), as told by the terminology facts resolved before
conversion (xhuma.ccda.placement). Each becomes a Family History Organizer (4.45) holding one Family History
Observation (4.46) whose value is the GP's code.

The relative (``relatedSubject/code``, HL7 RoleCode) is read from the "Family member : <relative>" qualifier the GP
system writes into the entry's comment, when it names a relative of the table below; otherwise the relative is
``FAMMEMB`` (family member), which is what an "FH:" code says. The comment itself is shown in full in the row.
No age, date of onset or death is invented: the date in the row is when the practice recorded the entry (the
author time), not an onset date. Without terminology the section is not produced and the entries stay in
"Other GP record entries" (docs/mapping/family_history.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.context import Hierarchy
from xhuma.ccda.fhir import concept_text, readable_date, string
from xhuma.ccda.hl7 import cd, fhir_ts, fixed_code, text_reference
from xhuma.ccda.narrative import NarrativeTable
from xhuma.ccda.observation import effective
from xhuma.ccda.participation import author_participation
from xhuma.ccda.placement import placed, remarks_and_recorder
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import el, leaf

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["family_history"]
INTRO = ("Family history the GP system returned as uncategorised data, identified by its SNOMED CT hierarchy "
         "(Family history of clinical finding). The relative is the one the GP recorded, where named.")
HEADERS = ("Recorded", "Relative", "Family history", "Comments", "Recorded by")

# HL7 RoleCode of the Family Member Value set (2.16.840.1.113883.1.11.19579) for the relatives a GP system names.
RELATIVES: dict[str, tuple[str, str]] = {
    "mother": ("MTH", "mother"), "father": ("FTH", "father"), "parent": ("PRN", "parent"),
    "brother": ("BRO", "brother"), "sister": ("SIS", "sister"), "sibling": ("SIB", "sibling"),
    "half-brother": ("HBRO", "half-brother"), "half-sister": ("HSIS", "half-sister"),
    "son": ("SON", "natural son"), "daughter": ("DAU", "natural daughter"), "child": ("CHILD", "child"),
    "uncle": ("UNCLE", "uncle"), "aunt": ("AUNT", "aunt"), "cousin": ("COUSN", "cousin"),
    "nephew": ("NEPHEW", "nephew"), "niece": ("NIECE", "niece"),
    "grandmother": ("GRMTH", "grandmother"), "grandfather": ("GRFTH", "grandfather"),
    "grandparent": ("GRPRN", "grandparent"), "grandson": ("GRNDSON", "grandson"),
    "granddaughter": ("GRNDDAU", "granddaughter"), "grandchild": ("GRNDCHILD", "grandchild"),
    "maternal grandmother": ("MGRMTH", "maternal grandmother"),
    "maternal grandfather": ("MGRFTH", "maternal grandfather"),
    "paternal grandmother": ("PGRMTH", "paternal grandmother"),
    "paternal grandfather": ("PGRFTH", "paternal grandfather"),
    "maternal aunt": ("MAUNT", "maternal aunt"), "maternal uncle": ("MUNCLE", "maternal uncle"),
    "paternal aunt": ("PAUNT", "paternal aunt"), "paternal uncle": ("PUNCLE", "paternal uncle"),
}
FAMILY_MEMBER = ("FAMMEMB", "family member")
# The qualifier as GP systems flatten it into the comment: "Family member : Uncle" (parts joined by " - ").
_QUALIFIER = re.compile(r"(?:^|\s-\s)family member\s*:\s*([a-z][a-z -]*?)\s*(?=\s-\s|$)", re.IGNORECASE)


def relative(observation: Resource) -> tuple[str, str] | None:
    """(RoleCode, display) of the relative the comment's "Family member" qualifier names, or None."""
    found = _QUALIFIER.search(string(observation.get("comment")) or "")
    return RELATIVES.get(found.group(1).strip().lower()) if found else None


def build(state: ConversionState) -> None:
    history = placed(state, Hierarchy.FAMILY_HISTORY)
    if not history:
        return  # no family history, or no terminology to tell it (the fallbacks: xhuma.ccda.placement)
    section = state.section(SPEC)
    section.use_lists(T.LIST_UNCATEGORISED)  # its warnings (data in transit, confidential items) open the section
    section.paragraph(INTRO)
    history.sort(key=lambda o: fhir_ts(effective(o)) or "", reverse=True)
    table = section.table(HEADERS, "Family history from uncategorised data")
    section.convert_each(history, lambda o: _family_history(section, table, o))


def _family_history(section: SectionWriter, table: NarrativeTable, observation: Resource) -> None:
    named = relative(observation)
    role = named or FAMILY_MEMBER
    row = table.row()
    row.cell(readable_date(effective(observation)) or "Unknown")
    row.cell(role[1].capitalize() if named else "Not stated")
    name = row.cell(concept_text(observation.get("code"), "Unnamed entry"), content="finding")
    performers = remarks_and_recorder(section, row, observation)

    organizer = el(section.entry(), "organizer", {"classCode": "CLUSTER", "moodCode": "EVN"})
    section.template(organizer, T.FAMILY_HISTORY_ORGANIZER)
    section.add_ids(organizer, observation, "family-history-organizer")
    leaf(organizer, "statusCode", {"code": "completed"})
    related = el(el(organizer, "subject"), "relatedSubject", {"classCode": "PRS"})
    fixed_code(related, "code", T.FixedCode(role[0], T.ROLE_CODE_OID, "HL7RoleCode", role[1]))
    entry = el(el(organizer, "component"), "observation", {"classCode": "OBS", "moodCode": "EVN"})
    section.template(entry, T.FAMILY_HISTORY_OBSERVATION)
    section.add_ids(entry, observation)
    code = fixed_code(entry, "code", T.PROBLEM)
    fixed_code(code, "translation", T.PROBLEM_LOINC)  # CONF:1198-32847
    text_reference(entry, row.reference)
    leaf(entry, "statusCode", {"code": "completed"})
    cd(entry, "value", observation.get("code"), reference=name, xsi_type="CD")
    author_participation(entry, section.index, performers[0] if performers else None,
                         observation.get("issued") or effective(observation))
    section.mapped(observation, T.FAMILY_HISTORY_ORGANIZER)
