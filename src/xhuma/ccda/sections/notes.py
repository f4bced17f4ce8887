"""Consultation notes (SPEC §8.4.10): one Note Activity per consultation, so the clinician reads the consultation.

Notes Section ``2.16.840.1.113883.10.20.22.2.65:2016-11-01`` (titled "Consultation notes"); per consultation one
narrative row holding the whole consultation as the GP wrote it — topics (with their problem), headings (History,
Examination, Plan …) and every record entry under them: free-text ``37331000000100`` comments, coded
observations with values, and the medications, referrals, problems, allergies … recorded in the consultation
(those are converted as entries by their own sections; here they are named in context). The Note Activity
(4.202: code 34109-9 Note + translation 11506-3 Progress note, ``text/reference`` to the row, effectiveTime =
consultation start, Author Participation, ``entryRelationship COMP inversionInd`` → the Encounter Activity's id).
Investigation filing comments stay with their report in the Results section (not repeated here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, concept_text, readable_date, string
from xhuma.ccda.hl7 import fhir_ts, fixed_code, text_reference, ts
from xhuma.ccda.narrative import NarrativeTable, lines_of
from xhuma.ccda.observation import effective, has_value, sct_codes, uncategorised_observations, value_text
from xhuma.ccda.participation import author_label, author_participation
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.sections.encounters import Consultation, Topic, consultations, performer_reference, structure_lists
from xhuma.ccda.sections.results import COMMENT_NOTE
from xhuma.ccda.xmlwriter import el, leaf, null

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["notes"]
NOTE = T.FixedCode("34109-9", T.LOINC_OID, "LOINC", "Note")
PROGRESS_NOTE = T.FixedCode("11506-3", T.LOINC_OID, "LOINC", "Progress note")
HEADERS = ("Date", "Consultation", "Clinician", "Notes")
COMMENT_HEADERS = ("Date", "Recorded by", "Comment")
ITEM_LABEL = {
    "Condition": "Problem", "AllergyIntolerance": "Allergy", "MedicationRequest": "Medication",
    "MedicationStatement": "Medication", "Immunization": "Immunisation", "ReferralRequest": "Referral",
    "ProcedureRequest": "Request", "DiagnosticReport": "Investigation", "DocumentReference": "Document",
    "Encounter": "Encounter", "QuestionnaireResponse": "Questionnaire",
}


def item_lines(state: ConversionState, item: Resource | str) -> list[str]:
    """How one consultation record entry reads in the note."""
    if isinstance(item, str):
        return [f"(Item not supplied by the GP system: {item})"]
    rtype = str(item.get("resourceType"))
    if rtype == "Observation":
        return _observation_lines(item)
    label = ITEM_LABEL.get(rtype, rtype)
    concept = _item_concept(state, item, rtype)
    text = concept_text(concept, "") or string(item.get("description")) or ""
    extra = [f"  {line}" for line in lines_of(string(item.get("description")))] if concept is not None else []
    return [f"{label}: {text}".rstrip(": "), *extra]


def _observation_lines(item: Resource) -> list[str]:
    comment = lines_of(string(item.get("comment")))
    if COMMENT_NOTE in sct_codes(item.get("code")) and not any(k.startswith("value") for k in item):
        return comment or ["(empty comment)"]
    head = concept_text(item.get("code"), "Observation")
    value = value_text(item)
    for component in as_list(item.get("component")):
        if isinstance(component, JSON_OBJECT):
            value = ", ".join(v for v in (value, f"{concept_text(component.get('code'))} "
                                          f"{value_text(component)}".strip()) if v)
    first = f"{head}: {value}" if value else head
    return [first + (f" — {comment[0]}" if comment else ""), *comment[1:]]


def _item_concept(state: ConversionState, item: Resource, rtype: str) -> object:
    """The concept that names a non-observation entry (its medication's code for a medication)."""
    concept: object = None
    for key in ("code", "vaccineCode", "medicationCodeableConcept", "type", "serviceRequested", "reasonCode"):
        candidate = item.get(key)
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if isinstance(candidate, JSON_OBJECT):
            concept = candidate
            break
    if rtype in ("MedicationRequest", "MedicationStatement"):
        medication = state.index.resolve(item.get("medicationReference"))
        if medication is not None:
            concept = medication.get("code")
    return concept


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    section.title = "Consultation notes"
    primary = section.use_lists(T.LIST_CONSULTATIONS)
    found = [c for c in consultations(state, primary) if c.topics]
    table = section.table(HEADERS)
    by_source = {id(c.source): c for c in found}
    section.convert_each([c.source for c in found],
                         lambda source: NoteActivity(section, table, by_source[id(source)]).build())
    comments = standalone_comments(state)
    if comments:
        comment_table = section.table(COMMENT_HEADERS, "Comments recorded outside a consultation")
        comments.sort(key=lambda o: fhir_ts(effective(o)) or "", reverse=True)
        section.convert_each(comments, lambda o: _comment_note(section, comment_table, o))


def _is_comment(item: object) -> bool:
    return isinstance(item, Mapping) and item.get("resourceType") == "Observation" and not has_value(item) \
        and COMMENT_NOTE in sct_codes(item.get("code"))


def standalone_comments(state: ConversionState) -> list[Resource]:
    """Free-text comments (``37331000000100`` without a value) of uncategorised data that no other section took
    (a consultation's are in its note, an investigation's filing comments with its report)."""
    return [o for o in uncategorised_observations(state)
            if _is_comment(o) and state.report.outcome_of(state.index.key(o)) is None]


def _comment_note(section: SectionWriter, table: NarrativeTable, observation: Resource) -> None:
    """One free-text comment as its own Note Activity (4.202; issue 13: a comment is a note, not text-only)."""
    state = section.state
    performers = as_list(observation.get("performer"))
    performer = performers[0] if performers else None
    row = table.row()
    row.cell(readable_date(effective(observation)))
    row.cell(author_label(state.index, performer))
    text = lines_of(string(observation.get("comment"))) or [concept_text(observation.get("code"), "Comment")]
    if section.is_confidential(observation):
        text.append("Not for disclosure to the patient (NOPAT)")
    row.cell(text)
    act = el(section.entry(), "act", {"classCode": "ACT", "moodCode": "EVN"})
    section.template(act, T.NOTE_ACTIVITY)
    section.add_ids(act, observation, "note")
    code = fixed_code(act, "code", NOTE)
    fixed_code(code, "translation", T.ANNOTATION_COMMENT)
    text_reference(act, row.reference)
    leaf(act, "statusCode", {"code": "completed"})
    ts(act, "effectiveTime", effective(observation))
    if author_participation(act, state.index, performer, effective(observation)) is None:
        author = el(act, "author")  # Note Activity SHALL have an author (4.202): nobody named → unknown
        ts(author, "time", effective(observation))
        null(el(author, "assignedAuthor"), "id", "UNK")
    section.mapped(observation, T.NOTE_ACTIVITY)


class NoteActivity:
    def __init__(self, section: SectionWriter, table: NarrativeTable, consultation: Consultation) -> None:
        self.section = section
        self.table = table
        self.consultation = consultation

    def build(self) -> None:
        state = self.section.state
        consultation = self.consultation
        encounter = consultation.encounter
        row = self.table.row()
        row.cell(readable_date(consultation.start))
        row.cell(consultation.title)
        performer = performer_reference(encounter) if encounter is not None else None
        row.cell(author_label(state.index, performer))
        lines: list[str] = []
        shown: list[Resource] = []
        for topic in consultation.topics:
            self._topic_lines(topic, lines, shown)
        if encounter is not None and self.section.is_confidential(encounter):
            lines.append("Not for disclosure to the patient (NOPAT)")
        row.cell(lines)

        act = el(self.section.entry(), "act", {"classCode": "ACT", "moodCode": "EVN"})
        self.section.template(act, T.NOTE_ACTIVITY)
        self.section.add_ids(act, consultation.source, "note")
        code = fixed_code(act, "code", NOTE)
        fixed_code(code, "translation", PROGRESS_NOTE)
        text_reference(act, row.reference)
        leaf(act, "statusCode", {"code": "completed"})
        ts(act, "effectiveTime", consultation.start)
        if author_participation(act, state.index, performer, consultation.start) is None:
            author = el(act, "author")  # Note Activity SHALL have an author (4.202): nobody named → unknown
            ts(author, "time", consultation.start)
            null(el(author, "assignedAuthor"), "id", "UNK")
        if encounter is not None:
            linked = el(el(act, "entryRelationship", {"typeCode": "COMP", "inversionInd": "true"}), "encounter",
                        {"classCode": "ENC", "moodCode": "EVN"})
            self.section.add_ids(linked, encounter)  # the Encounter Activity's own id (SPEC §8.4.10)
        self.section.mapped(consultation.source, T.NOTE_ACTIVITY)
        if consultation.consultation_list is not None:
            self.section.mapped(consultation.consultation_list, T.NOTE_ACTIVITY)
        for lst in structure_lists(consultation, state.index)[1:]:
            self.section.supporting(lst, "consultation topic/heading list, rendered in the consultation note")
        for item in shown:
            if _is_comment(item):  # a free-text comment is the note's own content: the Note Activity is its entry
                self.section.mapped(item, T.NOTE_ACTIVITY)
            else:
                self.section.narrative_only(item, "recorded in a consultation; shown in the consultation note")

    def _topic_lines(self, topic: Topic, lines: list[str], shown: list[Resource]) -> None:
        """One topic of the consultation: its heading line, then its entries (added to ``shown``)."""
        state = self.section.state
        if topic.title or topic.problem is not None:
            problem = concept_text(topic.problem.get("code"), "") if topic.problem is not None else ""
            heading = topic.title or problem
            if problem and problem != topic.title:
                heading += f" (problem: {problem})"
            lines.append(f"[{heading}]")
        for title, items in topic.headings:
            prefix = f"{title}: " if title else ""
            for item in items:
                item_text = item_lines(state, item)
                if item_text:
                    lines.append(prefix + item_text[0])
                    lines += item_text[1:]
                if not isinstance(item, str):
                    shown.append(item)
                else:
                    self.section.warn("unresolved-reference", "a consultation entry is not in the bundle",
                                      self.consultation.consultation_list)
