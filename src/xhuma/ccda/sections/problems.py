"""Problems (SPEC §8.4.3): List 717711000000103 → Problem Concern Act → Problem Observation per ProblemHeader.

Concern status comes from the concern, not by copying FHIR clinicalStatus into the observation (LESSONS 22):
the concern act is active/completed; the observation status is always completed (CONF:1198-19112). Onset is
``onsetDateTime`` — never ``assertedDate`` (LESSONS 22); assertedDate is when the concern was recorded.

The problem's actual problem (``Extension-CareConnect-ActualProblem-1``) is the coded entry the practice made a
problem of. When it is an Observation (uncategorised data), the Problem Observation is that entry in C-CDA: it
carries the Observation's identifier beside the problem header's, and the Observation is reported as converted
here (an entry), so "Other GP record entries" does not repeat it (docs/mapping/problems.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, concept_text, extension, mapping, readable_date, string, sub_extension
from xhuma.ccda.hl7 import coded, fixed_code_attrs, ivl_ts_markup, reference_markup, template_markup
from xhuma.ccda.narrative import Row
from xhuma.ccda.participation import author_label, author_markup
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import fragment, leaf_markup, start_tag

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["problems"]
HEADERS = ("Problem", "Significance", "Status", "Onset", "Ended", "Recorded", "Related", "Notes")
SIGNIFICANCE = {"major": "Major", "minor": "Minor"}
RELATED_TYPE = {"parent": "Parent of", "child": "Child of", "sibling": "Sibling of"}


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    lists = section.use_lists(T.LIST_PROBLEMS) + section.use_secondary_lists("problems")
    lists += section.use_uncoded_lists("Condition")
    seen: set[int] = set()
    problems: list[Resource] = []
    for lst in lists:
        for condition in section.members(lst, "Condition"):
            if id(condition) not in seen:
                seen.add(id(condition))
                problems.append(condition)
    # Unlisted Conditions that are problem headers (other Conditions belong to consultations).
    problems += [c for c in section.unlisted("Condition") if _is_problem_header(c)]
    # Active before inactive; major before minor; most recent onset first.
    problems.sort(key=lambda c: str(c.get("onsetDateTime") or c.get("assertedDate") or ""), reverse=True)
    problems.sort(key=lambda c: _significance(c) != "major")
    problems.sort(key=lambda c: _is_inactive(c))
    table = section.table(HEADERS)
    section.convert_each(problems, lambda c: ProblemConcernAct(section, table.row(), c).build())


def _is_problem_header(condition: Resource) -> bool:
    """ProblemHeader profile, or a problem-list-item category (SPEC §7.4)."""
    profiles = as_list(mapping(condition.get("meta")).get("profile"))
    if any(isinstance(p, str) and "ProblemHeader" in p for p in profiles):
        return True
    return any(c.get("code") == "problem-list-item" for cat in as_list(condition.get("category"))
               for c in as_list(mapping(cat).get("coding")) if isinstance(c, JSON_OBJECT))


def _identifier_values(resource: Resource) -> set[str]:
    return {str(i["value"]).lower() for i in as_list(resource.get("identifier"))
            if isinstance(i, JSON_OBJECT) and i.get("value")}


def _same_identifiers(actual: Resource, condition: Resource) -> bool:
    """The actual problem has identifiers and all are the problem header's (some suppliers send one GUID for both):
    its ids would repeat the header's."""
    own = _identifier_values(actual)
    return bool(own) and own <= _identifier_values(condition)


def _is_inactive(condition: Resource) -> bool:
    return condition.get("clinicalStatus") in ("inactive", "resolved", "remission")


def _significance(condition: Resource) -> str | None:
    found = extension(condition, "ProblemSignificance-1")
    value = found.get("valueCode") if found else None
    return value if isinstance(value, str) else None


# The fixed parts of the concern act and its observation, written as markup around the parts that vary.
_CONCERN_HEAD: Final = start_tag("act", {"classCode": "ACT", "moodCode": "EVN"}) + template_markup(
    T.PROBLEM_CONCERN_ACT)
_CONCERN_CODE: Final = leaf_markup("code", fixed_code_attrs(T.CONCERN))
_ACTIVE: Final = leaf_markup("statusCode", {"code": "active"})
_COMPLETED: Final = leaf_markup("statusCode", {"code": "completed"})
_OBSERVATION_HEAD: Final = (start_tag("entryRelationship", {"typeCode": "SUBJ"})
                            + start_tag("observation", {"classCode": "OBS", "moodCode": "EVN"})
                            + template_markup(T.PROBLEM_OBSERVATION))
# A Problem Type SNOMED code SHALL carry its LOINC translation (CONF:1198-32950).
_PROBLEM_CODE: Final = (start_tag("code", fixed_code_attrs(T.PROBLEM))
                        + leaf_markup("translation", fixed_code_attrs(T.PROBLEM_LOINC)) + "</code>")


class ProblemConcernAct:
    """Problem Concern Act (4.3) wrapping one Problem Observation (4.4) for one ProblemHeader Condition."""

    def __init__(self, section: SectionWriter, row: Row, condition: Resource) -> None:
        self.section = section
        self.row = row
        self.condition = condition
        self.inactive = _is_inactive(condition)
        abatement = condition.get("abatementDateTime")
        self.abatement = abatement if isinstance(abatement, str) else None
        # The problem's CD and text, looked up once for the observation's value and the row.
        self.problem = coded("value", condition.get("code"), xsi_type="CD")

    def build(self) -> None:
        """The concern act and its Problem Observation, joined at once from markup (nothing is added to them
        afterwards)."""
        condition = self.condition
        section = self.section
        state = section.state
        problem_ref = self._narrative()
        # The asserter at the asserted date: the concern act's author and the observation's.
        author = author_markup(section.index, condition.get("asserter"), condition.get("assertedDate")) or ""
        concern_ids = state.ids_markup(condition, "problem-concern")
        observation_ids = state.ids_markup(condition)
        actual = self._actual_observation()
        if actual is not None and not _same_identifiers(actual, condition):
            observation_ids += state.ids_markup(actual)
        fragment(section.entry(), "".join((
            _CONCERN_HEAD, concern_ids, _CONCERN_CODE, _COMPLETED if self.inactive else _ACTIVE,
            ivl_ts_markup("effectiveTime", condition.get("assertedDate"), self.abatement if self.inactive else None,
                          high_required=self.inactive),
            author,
            _OBSERVATION_HEAD, observation_ids, _PROBLEM_CODE, reference_markup(self.row.reference), _COMPLETED,
            ivl_ts_markup("effectiveTime", condition.get("onsetDateTime"), self.abatement,
                          high_required=self.inactive),
            self.problem.markup(problem_ref),
            author,
            "</observation></entryRelationship></act>")))
        section.mapped(condition, T.PROBLEM_CONCERN_ACT)
        if actual is not None:
            section.mapped(actual, T.PROBLEM_OBSERVATION)

    def _actual_observation(self) -> Resource | None:
        """The Observation this problem was made of (its actual problem), if it is one and resolves."""
        found = extension(self.condition, "ActualProblem-1")
        target = self.section.index.resolve(found.get("valueReference")) if found else None
        return target if target is not None and target.get("resourceType") == "Observation" else None

    def _narrative(self) -> str | None:
        condition = self.condition
        row = self.row
        problem_ref = row.cell(self.problem.text("Problem not recorded"), content="problem")
        row.cell(SIGNIFICANCE.get(_significance(condition) or "", ""))
        row.cell("Inactive" if self.inactive else "Active")
        row.cell(readable_date(condition.get("onsetDateTime")) or "Unknown")
        row.cell(readable_date(self.abatement) if self.inactive else "")
        row.cell([readable_date(condition.get("assertedDate")),
                  author_label(self.section.index, condition.get("asserter"))])
        row.cell(self._related())
        notes = [str(n["text"]) for n in as_list(condition.get("note"))
                 if isinstance(n, JSON_OBJECT) and isinstance(n.get("text"), str)]
        if self.section.is_confidential(condition):
            notes.append("Not for disclosure to the patient (NOPAT)")
        row.cell(notes)
        return problem_ref

    def _related(self) -> list[str]:
        """Related problems and linked clinical items, as text ("related to" list, SPEC §8.4.3)."""
        index = self.section.index
        lines: list[str] = []
        linked: list[str] = []
        for item in as_list(self.condition.get("extension")):
            if not isinstance(item, JSON_OBJECT) or not isinstance(item.get("url"), str):
                continue
            url = item["url"]
            if url.endswith("RelatedProblemHeader-1"):
                kind = string(mapping(sub_extension(item, "type")).get("valueCode")) or ""
                target = index.resolve(mapping(sub_extension(item, "target")).get("valueReference"))
                label = concept_text(target.get("code")) if target is not None else ""
                if label:
                    lines.append(f"{RELATED_TYPE.get(kind, 'Related to')} problem: {label}")
            elif url.endswith("RelatedClinicalContent-1") or url.endswith("ActualProblem-1"):
                reference = item.get("valueReference")
                target = index.resolve(reference)
                if target is None:
                    display = string(mapping(reference).get("display"))
                    if display:
                        lines.append(display)
                    continue
                label = _label(index, target)
                if label and url.endswith("ActualProblem-1"):
                    lines.append(f"Recorded as: {label}")
                elif label:
                    linked.append(label)
        return lines + linked_line(linked)


LINKED_SHOWN = 6  # distinct linked items named in a problem's row; the rest are counted (issue 13: long lists)


def linked_line(labels: list[str]) -> list[str]:
    """One "Linked:" line: each distinct item once (with its count when repeated), the first ``LINKED_SHOWN``
    named and the others counted; every item stays in the record's other sections."""
    if not labels:
        return []
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    named = [f"{label} (×{n})" if n > 1 else label for label, n in list(counts.items())[:LINKED_SHOWN]]
    rest = len(counts) - LINKED_SHOWN
    more = f" and {rest} more" if rest > 0 else ""
    total = f" ({len(labels)} linked items)" if len(labels) > 1 else ""
    return [f"Linked: {'; '.join(named)}{more}{total}"]


def _label(index: Any, target: Resource) -> str:
    rtype = target.get("resourceType")
    if rtype in ("MedicationStatement", "MedicationRequest"):
        medication = index.resolve(target.get("medicationReference"))
        return f"medication {concept_text(mapping(medication).get('code'))}".strip()
    for key in ("code", "vaccineCode", "type"):
        concept = target.get(key)
        if isinstance(concept, JSON_OBJECT):
            return concept_text(concept)
        if isinstance(concept, list) and concept:
            return concept_text(concept[0])
    return str(rtype or "")
