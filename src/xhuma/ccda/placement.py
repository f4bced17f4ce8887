"""Placement of coded uncategorised entries without a value, by SNOMED hierarchy (issue 13;
docs/mapping/procedures.md, docs/mapping/past_medical_history.md).

The hierarchy comes from ``ConversionContext.terminology`` (resolved before conversion; the converter does no I/O):

* ``procedure`` (<< 71388002) → Procedures, a Procedure Activity Procedure per entry;
* ``disorder`` (<< 64572001), ``finding`` (<< 404684003) or ``past-history`` (<< 417662000 |History of clinical
  finding in subject|, the "H/O: ..." codes) whose code is not on the problem list → Past Medical History, a Problem
  Observation per entry (never the active problem list);
* ``family-history`` (<< 416471007, the "FH: ..." codes) → Family History, a Family History Organizer per entry;
* ``occupation`` (<< 14679004) → Social History, a Social History Observation per entry;
* anything else, or a code the terminology could not classify, stays in "Other GP record entries" with the reason.

The actual problem of a problem-list Condition is converted by the Problems section (its Problem Observation), so it
is no candidate here.

With no terminology available nothing is placed by hierarchy: every such entry stays in "Other GP record entries"
and the report says so (a ``terminology-unavailable`` warning and the reason on each entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda.context import Hierarchy
from xhuma.ccda.fhir import as_list, string
from xhuma.ccda.narrative import Row, lines_of
from xhuma.ccda.observation import has_value, sct_codes, uncategorised_observations
from xhuma.ccda.participation import author_label
from xhuma.ccda.section import ConversionState, SectionWriter

Resource = Mapping[str, Any]
PAST_HISTORY = frozenset({Hierarchy.DISORDER, Hierarchy.FINDING, Hierarchy.PAST_HISTORY})


def placed(state: ConversionState, wanted: Hierarchy) -> list[Resource]:
    """The candidates whose hierarchy is ``wanted`` (none without terminology facts)."""
    if not state.context.terminology.hierarchy:
        return []
    return [o for o in candidates(state) if hierarchy(state, o) is wanted]


def candidates(state: ConversionState) -> list[Resource]:
    """Uncategorised Observations with a SNOMED code and no value that no other section converted to an entry:
    not yet accounted for, or shown only as consultation text (the notes keep it; the entry is its structure)."""
    report, index = state.report, state.index
    found = []
    for observation in uncategorised_observations(state):
        if has_value(observation) or observation.get("component") or not sct_codes(observation.get("code")):
            continue
        outcome = report.outcome_of(index.key(observation))
        if outcome is None or (outcome.outcome == "narrative" and outcome.section == "notes"):
            found.append(observation)
    return found


def hierarchy(state: ConversionState, observation: Resource) -> Hierarchy | None:
    """The hierarchy of the observation's first classified SNOMED code, or None (unknown or no terminology)."""
    known = state.context.terminology.hierarchy
    for code in sct_codes(observation.get("code")):
        found = known.get(code)
        if found is not None:
            return found
    return None


def problem_list_codes(state: ConversionState) -> frozenset[str]:
    """SNOMED codes of the Conditions the practice recorded (the problem list)."""
    return frozenset(code for condition in state.index.of_type("Condition")
                     for code in sct_codes(condition.get("code")))


def on_problem_list(state: ConversionState, observation: Resource) -> bool:
    return not problem_list_codes(state).isdisjoint(sct_codes(observation.get("code")))


def why_not_placed(state: ConversionState, observation: Resource) -> str:
    """The report line of a coded entry without value that stays in "Other GP record entries"."""
    if not state.context.terminology.available:
        return "no terminology available to tell its SNOMED hierarchy (fallback: shown in Other GP record entries)"
    found = hierarchy(state, observation)
    if found is None:
        return "its SNOMED hierarchy is not known to the terminology source; shown in Other GP record entries"
    if found in PAST_HISTORY:
        return "on the problem list (shown there); its record here stays in Other GP record entries"
    return f"SNOMED hierarchy '{found.value}' has no C-CDA section; shown in Other GP record entries"


__all__ = ["PAST_HISTORY", "candidates", "hierarchy", "on_problem_list", "placed", "problem_list_codes",
           "why_not_placed"]


def remarks_and_recorder(section: SectionWriter, row: Row, observation: Resource) -> list[Any]:
    """The last two cells of a row for an entry placed from uncategorised data (procedures, past history, family
    history): its comment lines, with the confidentiality marking, and who recorded it (returned: its performers)."""
    remarks = lines_of(string(observation.get("comment")))
    if section.is_confidential(observation):
        remarks.append("Not for disclosure to the patient (NOPAT)")
    row.cell(remarks)
    performers = as_list(observation.get("performer"))
    row.cell([author_label(section.index, p) for p in performers])
    return performers
