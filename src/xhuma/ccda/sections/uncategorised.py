"""Other GP record entries (SPEC §8.4.12): uncategorised data not converted elsewhere, documents, questionnaires.

A narrative-only section (no templateId; CDA allows a section without code), the last of the document, so a
clinician finds every remaining item in one place:

* Observations of the uncategorised-data List (826501000000100) that vital_signs.py / social_history.py did not
  convert (those are not repeated), plus any Observation of the bundle that no section accounted for (not listed
  in any GP Connect List) — never pushed into Results, which are laboratory/diagnostic results (SPEC §8.4.12);
* DocumentReferences (metadata only: the documents themselves are the Access Document capability);
* QuestionnaireResponses, question by question.

Every row is reported as ``narrative`` with its reason; the section carries the List warnings of uncategorised data.
Consultation content lives in the consultation notes (notes.py) and is not repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings, concept_text, readable_date, string
from xhuma.ccda.hl7 import fhir_ts
from xhuma.ccda.narrative import NarrativeTable, lines_of
from xhuma.ccda.observation import effective, has_value, range_text, value_text
from xhuma.ccda.participation import author_label
from xhuma.ccda.placement import candidates, hierarchy, why_not_placed
from xhuma.ccda.section import ConversionState, SectionWriter

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["uncategorised"]
CONVERTED_ELSEWHERE = frozenset({"problems", "vital_signs", "social_history", "results", "procedures",
                                  "past_medical_history", "family_history"})
INTRO = ("Entries the GP system returned as uncategorised data that are not vital signs or social history, "
         "documents held at the practice and questionnaire responses. They have no C-CDA entry template and are "
         "shown as text only.")
OBSERVATION_HEADERS = ("Date", "Entry", "Value", "Comments", "Recorded by")
DOCUMENT_HEADERS = ("Date", "Document", "Description", "Author / custodian", "Status")
QUESTIONNAIRE_HEADERS = ("Date", "Questionnaire", "Answers", "Author")


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    lists = section.use_lists(T.LIST_UNCATEGORISED) + section.use_uncoded_lists("Observation")
    section.use_secondary_lists("uncategorised-data")  # linkage to problems/consultations: rendered there
    observations: list[tuple[Resource, str]] = []
    seen: set[int] = set()
    for lst in lists:
        for observation in section.members(lst, "Observation"):
            if id(observation) not in seen:
                seen.add(id(observation))
                if not _converted_elsewhere(state, observation):
                    observations.append((observation, ""))
    for observation in state.index.of_type("Observation"):
        if id(observation) not in seen and state.report.outcome_of(state.index.key(observation)) is None:
            seen.add(id(observation))
            observations.append((observation, "Not converted by any other section of this document."))
            section.warn("unlisted-observation", "observation not converted by any other section; shown in Other "
                         "GP record entries", observation)
    documents = list(state.index.of_type("DocumentReference"))
    questionnaires = list(state.index.of_type("QuestionnaireResponse"))
    if observations or documents or questionnaires:
        section.paragraph(INTRO)

    observations.sort(key=lambda item: fhir_ts(effective(item[0])) or "", reverse=True)
    table = section.table(OBSERVATION_HEADERS, "Uncategorised entries")
    notes = {id(o): note for o, note in observations}
    # Coded entries without a value that no hierarchy placed (xhuma.ccda.placement): the report says why.
    pending = candidates(state)
    unplaced = {id(o): why_not_placed(state, o) for o in pending}
    _fallback_warnings(state, section, pending)
    section.convert_each([o for o, _ in observations],
                         lambda o: _observation_row(section, table, o, notes[id(o)], unplaced.get(id(o))))

    documents.sort(key=lambda d: fhir_ts(d.get("created") or d.get("indexed")) or "", reverse=True)
    document_table = section.table(DOCUMENT_HEADERS, "Documents held at the GP practice")
    section.convert_each(documents, lambda d: _document_row(section, document_table, d))

    questionnaires.sort(key=lambda q: fhir_ts(q.get("authored")) or "", reverse=True)
    questionnaire_table = section.table(QUESTIONNAIRE_HEADERS, "Questionnaire responses")
    section.convert_each(questionnaires, lambda q: _questionnaire_row(section, questionnaire_table, q))


def _fallback_warnings(state: ConversionState, section: SectionWriter, pending: list[Resource]) -> None:
    """One warning per fallback rule that applied (each entry's report line names it): no terminology at all, or
    codes the terminology source does not classify (docs/clinical-safety/hazard-log.md, H11)."""
    if not pending:
        return
    if not state.context.terminology.available:
        section.warn("terminology-unavailable", f"{len(pending)} coded entries without a value could not be "
                     "placed by SNOMED hierarchy (no terminology); shown in Other GP record entries")
        return
    unknown = sum(1 for o in pending if hierarchy(state, o) is None)
    if unknown:
        section.warn("terminology-code-unknown", f"{unknown} coded entries without a value have SNOMED codes the "
                     "terminology source does not classify; shown in Other GP record entries (each entry's report "
                     "line says so)")


def _converted_elsewhere(state: ConversionState, observation: Resource) -> bool:
    """Already shown by the vital signs or social history section (as an entry or a text row there)."""
    outcome = state.report.outcome_of(state.index.key(observation))
    if outcome is not None and outcome.section == "notes":
        return outcome.outcome == "entry"  # a comment in its own Note Activity (or its consultation's)
    return outcome is not None and outcome.section in CONVERTED_ELSEWHERE and outcome.outcome in ("entry",
                                                                                                  "narrative")


def _observation_row(section: SectionWriter, table: NarrativeTable, observation: Resource, note: str,
                     unplaced: str | None = None) -> None:
    row = table.row()
    row.cell(readable_date(effective(observation)))
    row.cell(concept_text(observation.get("code"), "Unnamed entry"))
    value = value_text(observation)
    for component in as_list(observation.get("component")):
        if isinstance(component, JSON_OBJECT):
            part = f"{concept_text(component.get('code'))}: {value_text(component)}".strip(": ")
            value = f"{value}; {part}" if value else part
    row.cell(value)
    remarks = lines_of(string(observation.get("comment")))
    remarks += [f"Reference range: {r}" for r in range_text(observation)]
    interpretation = concept_text(observation.get("interpretation"), "")
    if interpretation:
        remarks.append(f"Interpretation: {interpretation}")
    if note:
        remarks.append(note)
    if section.is_confidential(observation):
        remarks.append("Not for disclosure to the patient (NOPAT)")
    row.cell(remarks)
    row.cell([author_label(section.index, p) for p in as_list(observation.get("performer"))])
    section.narrative_only(observation, unplaced or _why_text_only(observation))


def _why_text_only(observation: Resource) -> str:
    """The report line of an uncategorised Observation shown as text only (coded ones without a value are
    explained by ``placement.why_not_placed``)."""
    if not codings(observation.get("code")) and not has_value(observation) and not observation.get("component"):
        return ("no code and no value: nothing a C-CDA entry could state (an entry would be all nullFlavors); "
                "shown in Other GP record entries")
    return "uncategorised data without a C-CDA entry template; shown in Other GP record entries"


def _document_row(section: SectionWriter, table: NarrativeTable, document: Resource) -> None:
    row = table.row()
    row.cell(readable_date(document.get("created") or document.get("indexed")))
    row.cell(concept_text(document.get("type"), "Document"))
    description = lines_of(string(document.get("description")))
    for content in as_list(document.get("content")):
        attachment = content.get("attachment") if isinstance(content, JSON_OBJECT) else None
        if isinstance(attachment, JSON_OBJECT):
            kind = string(attachment.get("contentType")) or "unknown type"
            size = attachment.get("size")
            description.append(f"Attachment: {string(attachment.get('title')) or kind}"
                               + (f", {size} bytes" if isinstance(size, int) else ""))
    description.append("The document itself is available from the practice (GP Connect Access Document).")
    row.cell(description)
    people = [author_label(section.index, a) for a in as_list(document.get("author"))]
    custodian = author_label(section.index, document.get("custodian"))
    row.cell([p for p in people if p] + ([f"Held by {custodian}"] if custodian else []))
    status = [string(document.get("status")) or ""]
    if section.is_confidential(document):
        status.append("Not for disclosure to the patient (NOPAT)")
    row.cell(status)
    section.narrative_only(document, "document metadata (the document is an Access Document resource); shown in "
                           "Other GP record entries")


def _answers(items: object, depth: int = 0) -> list[str]:
    out: list[str] = []
    for item in as_list(items):
        if not isinstance(item, JSON_OBJECT):
            continue
        question = string(item.get("text")) or string(item.get("linkId")) or "Question"
        answers = []
        for answer in as_list(item.get("answer")):
            if not isinstance(answer, JSON_OBJECT):
                continue
            for key, value in answer.items():
                if not key.startswith("value"):
                    continue
                if isinstance(value, JSON_OBJECT):
                    text = concept_text(value) if "coding" in value or "text" in value else string(value.get(
                        "display")) or string(value.get("value")) or ""
                    if not text and "value" in value:
                        text = f"{value.get('value')} {value.get('unit') or ''}".strip()
                else:
                    text = str(value)
                answers.append(text)
            out += _answers(answer.get("item"), depth + 1)
        out.append(f"{'  ' * depth}{question}: {', '.join(a for a in answers if a) or '—'}")
        out += _answers(item.get("item"), depth + 1)
    return out


def _questionnaire_row(section: SectionWriter, table: NarrativeTable, response: Resource) -> None:
    row = table.row()
    row.cell(readable_date(response.get("authored")))
    questionnaire = response.get("questionnaire")
    name = (string(questionnaire.get("display")) or string(questionnaire.get("reference"))
            if isinstance(questionnaire, JSON_OBJECT) else None)
    row.cell(name or "Questionnaire")
    answers = _answers(response.get("item"))
    if section.is_confidential(response):
        answers.append("Not for disclosure to the patient (NOPAT)")
    row.cell(answers)
    row.cell(author_label(section.index, response.get("author")))
    section.narrative_only(response, "questionnaire response without a C-CDA entry template; shown in Other GP "
                           "record entries")
