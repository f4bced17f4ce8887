"""Results / investigations (SPEC §8.4.5): List 887191000000108 → DiagnosticReports.

One DiagnosticReport → one Result Organizer per test group (``BATTERY``, code = group header code) plus one
``CLUSTER`` organizer for the results filed directly under the report. Each test result → Result Observation
(value PQ/IVL_PQ/ST/CD, interpretation, reference range). Comments on results, the report's filing-comment
Observations (``37331000000100``), ``conclusion`` and ``codedDiagnosis`` → Comment Activities, and every one of
them is also readable in the narrative, together with the specimen and the original request (ProcedureRequest
``note``). A report without any test result has no C-CDA slot (Result Organizer SHALL have ≥1 Result Observation)
and is shown as a narrative row.

The value helpers (``value_markup``, ``value_text``, ``range_text``) and the UCUM rule live in ``observation.py``,
shared by every observation-based section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, coding_view, concept_text, notes_text, readable_date, string
from xhuma.ccda.hl7 import (
    Coded,
    cd,
    cd_markup,
    coded,
    fhir_ts,
    fixed_code,
    reference_markup,
    snomed_code,
    template_id,
    template_markup,
    ts_markup,
    uid_ii,
    uid_markup,
)
from xhuma.ccda.memo import memo
from xhuma.ccda.narrative import Row, lines_of
from xhuma.ccda.observation import (
    INTERPRETATION_OID,
    effective,
    has_value,
    interpretation_text,
    interpretations,
    range_text,
    reference_ranges_markup,
    uncategorised_observations,
    value_text,
    value_text_and_markup,
)
from xhuma.ccda.participation import author_label
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.sections.social_history import is_social_history
from xhuma.ccda.sections.vital_signs import is_vital_sign
from xhuma.ccda.xmlwriter import SLOT, Element, el, element, fragment, frame, leaf, leaf_markup, start_tag

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["results"]

COMMENT_NOTE = "37331000000100"  # SNOMED Comment note: free text / filing comments (SPEC §7.4)
# FHIR DiagnosticReport/Observation status → Result Status value set 2.16.840.1.113883.11.20.9.39 (SPEC §8.4.5).
RESULT_STATUS = {
    "final": "completed", "amended": "completed", "corrected": "completed", "appended": "completed",
    "preliminary": "active", "registered": "active", "partial": "active",
    "cancelled": "cancelled", "entered-in-error": "cancelled",
}
V2_0074_OID = "2.16.840.1.113883.12.74"
HEADERS = ("Investigation", "Result", "Reference range", "Interpretation", "Date", "Comments")
UNFILED_LABEL = "Filed outside a laboratory report"
UNFILED_NOTE = ("Recorded by the practice as uncategorised data, not as part of an investigation report: no "
                "laboratory, specimen or request is known for these results.")
# Result Organizer code (CONF:1198-7128) for a day of unrelated results: SNOMED 386053000 Evaluation procedure.
UNFILED_CODE = T.FixedCode("386053000", T.SNOMED_OID, "SNOMED CT", "Evaluation procedure")
BOLD = "Bold"


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    lists = section.use_lists(T.LIST_INVESTIGATIONS) + section.use_uncoded_lists("DiagnosticReport")
    reports: list[Resource] = []
    seen: set[int] = set()
    for lst in lists:
        for report in section.members(lst, "DiagnosticReport"):
            if id(report) not in seen:
                seen.add(id(report))
                reports.append(report)
    reports.sort(key=lambda r: _text(r.get("issued")), reverse=True)  # most recent first
    table = section.table(HEADERS)
    ids = UniqueIds(section)
    days = unfiled_results(state)
    if days:  # results from uncategorised data: that List's warnings (confidential items withheld…) apply here too
        section.use_lists(T.LIST_UNCATEGORISED)
    # One list, the newest first: the reports as sorted above, each day of unfiled results before the first
    # report issued on an earlier day. A day is represented by its first result (for convert_each's reporting).
    builders: dict[int, Callable[[], None]] = {}
    items: list[Resource] = []
    pending = sorted(days.items(), reverse=True)
    for report in reports:
        issued_day = (fhir_ts(report.get("issued")) or "")[:8]
        while pending and pending[0][0] > issued_day:
            items.append(_unfiled_item(section, table, ids, *pending.pop(0), builders))
        items.append(report)
        builders[id(report)] = ReportEntries(section, table, ids, report).build
    items += [_unfiled_item(section, table, ids, day, members, builders) for day, members in pending]
    section.convert_each(items, lambda item: builders[id(item)]())


def unfiled_results(state: ConversionState) -> dict[str, list[Resource]]:
    """Valued observations of uncategorised data that are neither vital signs nor social history: results the
    practice filed outside a laboratory report (issue 13), by day of their effective time ("" when unknown)."""
    days: dict[str, list[Resource]] = {}
    for observation in uncategorised_observations(state):
        if not has_value(observation) or is_vital_sign(observation) or is_social_history(observation):
            continue
        outcome = state.report.outcome_of(state.index.key(observation))
        if outcome is not None and outcome.outcome == "entry":
            continue
        days.setdefault((fhir_ts(effective(observation)) or "")[:8], []).append(observation)
    return days


def _unfiled_item(section: SectionWriter, table: Any, ids: UniqueIds, day: str, members: list[Resource],
                  builders: dict[int, Callable[[], None]]) -> Resource:
    builders[id(members[0])] = UnfiledResults(section, table, ids, day, members).build
    return members[0]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""




class UniqueIds:
    """Entry ids from business identifiers, but never the same id twice in one section: some suppliers repeat
    one identifier on every Observation of a report (GP Connect pathology examples)."""

    def __init__(self, section: SectionWriter) -> None:
        self.section = section
        self.used: set[tuple[str, str]] = set()  # (role, resource_seed)

    def write(self, parent: Element, resource: Resource, role: str = "") -> None:
        fragment(parent, self.markup(resource, role))

    def markup(self, resource: Resource, role: str = "") -> str:
        """The ids ``write`` writes, without writing them."""
        state = self.section.state
        if role:
            seed, ids = state.resource_seed(resource), None
        else:  # the resource's own ids, found with its seed in one pass over its identifiers
            seed, ids = state.seed_and_ids(resource)
        if (role, seed) in self.used:
            return uid_markup(state.derived_id(role or "resource", state.index.key(resource)))
        self.used.add((role, seed))
        return state.ids_markup(resource, role) if ids is None else ids


def comment_activity(section: SectionWriter, parent: Element, reference: str, *, component: bool = False) -> None:
    """Comment Activity (4.64): ``entryRelationship SUBJ inversionInd`` under an observation, or a ``component``
    of an organizer (an organizer has no entryRelationship). text/reference → the narrative row (SHALL)."""
    fragment(parent, comment_activity_markup(reference, component=component))


def comment_activity_markup(reference: str, *, component: bool = False) -> str:
    """The markup ``comment_activity`` writes. Everything but the reference is fixed, and most results carry a
    comment: the act is built once with the builders (``_comment_frame``) and written around the reference."""
    head, tail = _comment_frame(component)
    return head + reference_markup(reference) + tail


@memo()
def _comment_frame(component: bool) -> tuple[str, str]:
    if component:
        holder = element("component")
    else:
        holder = element("entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"})
    act = el(holder, "act", {"classCode": "ACT", "moodCode": "EVN"})
    template_id(act, T.COMMENT_ACTIVITY)
    fixed_code(act, "code", T.ANNOTATION_COMMENT)
    fragment(act, SLOT)
    return frame(holder)


def result_status(resource: Resource, has_result_value: bool | Callable[[], bool] = True) -> str:
    """``has_result_value`` may be a callable: it is asked only when the status does not decide (rarely)."""
    status = resource.get("status")
    if isinstance(status, str) and status in RESULT_STATUS:  # (no other JSON value's str() is a status)
        return RESULT_STATUS[status]
    if callable(has_result_value):
        has_result_value = has_result_value()
    return "completed" if has_result_value else "active"  # unknown: completed only if a value exists


# --- one DiagnosticReport ----------------------------------------------------------------------------------------
class ReportEntries:
    """The organizers, observations and narrative rows of one DiagnosticReport."""

    def __init__(self, section: SectionWriter, table: Any, ids: UniqueIds, report: Resource) -> None:
        self.section = section
        self.index = section.index
        self.table = table
        self.ids = ids
        self.report = report
        self.specimens: list[Resource] = []
        for reference in as_list(report.get("specimen")):  # (a loop: comprehensions cost calls of their own)
            specimen = self.index.resolve(reference)
            if specimen is not None and specimen.get("resourceType") == "Specimen":
                self.specimens.append(specimen)
        # Per report, not per result: the fallbacks of every result's time (``_observation_time``).
        self.collected = _collection_time(self.specimens)
        issued = report.get("issued")
        self.issued = issued if isinstance(issued, str) else None

    def _time(self, observation: Resource) -> str | None:
        return _observation_time(observation, self.collected, self.issued)

    # classification of DiagnosticReport.result
    def _classify(self) -> tuple[list[tuple[Resource, list[Resource]]], list[Resource], list[Resource]]:
        groups: list[tuple[Resource, list[Resource]]] = []
        standalone: list[Resource] = []
        comments: list[Resource] = []
        in_group: set[int] = set()
        headers: set[int] = set()
        results = self._resolved_results()
        for observation in results:
            if observation.get("resourceType") != "Observation":
                self.section.warn("unexpected-result", f"{observation.get('resourceType')} in a report result",
                                  observation)
                continue
            if not observation.get("related"):  # most results: not a group header
                continue
            members = self._members(observation)
            if members:
                groups.append((observation, members))
                headers.add(id(observation))
                in_group.update(id(m) for m in members)
        for observation in results:
            if observation.get("resourceType") != "Observation" or id(observation) in headers:
                continue
            if id(observation) in in_group:
                continue
            if snomed_code(observation.get("code")) == COMMENT_NOTE and not has_value(observation):
                comments.append(observation)
            else:
                standalone.append(observation)
        return groups, standalone, comments

    def _resolved_results(self) -> list[Resource]:
        results: list[Resource] = []
        unresolved: list[object] = []
        for reference in as_list(self.report.get("result")):
            resolved = self.index.resolve(reference)
            if resolved is None:
                unresolved.append(reference)
            else:
                results.append(resolved)
        for reference in unresolved:
            ref = reference.get("reference") if isinstance(reference, JSON_OBJECT) else reference
            self.section.warn("unresolved-reference", f"report result {ref} is not in the bundle", self.report)
        return results

    def _members(self, header: Resource) -> list[Resource]:
        """The Observations a group header lists as ``has-member``."""
        return [m for m in (self.index.resolve(rel.get("target")) for rel in as_list(header.get("related"))
                            if isinstance(rel, JSON_OBJECT) and rel.get("type", "has-member") == "has-member")
                if m is not None and m.get("resourceType") == "Observation"]

    def build(self) -> None:
        report = self.report
        groups, standalone, comments = self._classify()
        requests, conclusion = self._requests(), self._conclusion_lines()  # for the row and the entries
        header = self._report_row(groups, standalone, comments, requests, conclusion)
        organizers: list[tuple[Element, list[str]]] = []
        for group, members in groups:
            organizers.append(self._organizer(group, members, "BATTERY", group.get("code")))
        if standalone:
            code = standalone[0].get("code") if len(standalone) == 1 else self._cluster_code()
            organizers.append(self._organizer(None, standalone, "CLUSTER", code))
        # Report-level comments (filing comments, conclusion, coded diagnosis) go with the first organizer.
        if organizers and header is not None and (comments or conclusion):
            organizers[0][1].append(comment_activity_markup(header.reference, component=True))
        for entry, parts in organizers:
            parts.append("</organizer>")
            fragment(entry, "".join(parts))
        for comment in comments:
            if organizers:
                self.section.mapped(comment, T.COMMENT_ACTIVITY)
            else:
                self.section.narrative_only(comment, "filing comment of a report without test results")
        for specimen in self.specimens:
            self.section.supporting(specimen, "specimen of a result organizer (narrative and specimen element)")
        for request in requests:
            self.section.supporting(request, "original request of an investigation report, shown in its narrative")
        if organizers:
            self.section.mapped(report, T.RESULT_ORGANIZER)
        else:
            self.section.narrative_only(report, "report without test results: a Result Organizer needs one")
            self.section.warn("report-without-results", "investigation report has no test results; shown as text",
                              report)

    # --- narrative -------------------------------------------------------------------------------------------
    def _requests(self) -> list[Resource]:
        requests: list[Resource] = []
        for reference in as_list(self.report.get("basedOn")):  # (a loop, as for the specimens)
            request = self.index.resolve(reference)
            if request is not None and request.get("resourceType") == "ProcedureRequest":
                requests.append(request)
        return requests

    def _conclusion_lines(self) -> list[str]:
        report = self.report
        if "conclusion" not in report and "codedDiagnosis" not in report:  # most reports
            return []
        out = [f"Conclusion: {line}" for line in lines_of(string(report.get("conclusion")))]
        out += [f"Coded diagnosis: {concept_text(c)}" for c in as_list(report.get("codedDiagnosis"))
                if concept_text(c)]
        return out

    def _cluster_code(self) -> object:
        category = self.report.get("category")
        for coding in coding_view(category):
            if coding.get("system") in ("http://hl7.org/fhir/v2/0074", "http://terminology.hl7.org/CodeSystem/v2-0074"):
                return {"coding": [{"system": f"urn:oid:{V2_0074_OID}", "code": coding.get("code"),
                                    "display": coding.get("display")}]}
        return category if coding_view(category) else self.report.get("code")

    def _report_row(self, groups: Sequence[tuple[Resource, list[Resource]]], standalone: Sequence[Resource],
                    comments: Sequence[Resource], requests: Sequence[Resource], conclusion: list[str]) -> Row | None:
        report = self.report
        row = self.table.row()
        row.style = BOLD
        count = len(standalone)
        for _, members in groups:  # (a loop: a generator costs a call of its own)
            count += len(members)
        if len(groups) + len(standalone) == 1:  # one group or one result: its name is the title
            title = concept_text((groups[0][0] if groups else standalone[0]).get("code"))
        else:
            title = concept_text(report.get("category"), "Investigation report")
        row.cell(f"Report: {title}" + (f" ({count} results)" if count != 1 else ""))
        row.cell("")
        row.cell("")
        row.cell(_status_label(report))
        row.cell(["Issued " + readable_date(report.get("issued"))] if report.get("issued") else [])
        row.cell(self._report_details(comments, requests, conclusion))
        return row

    def _report_details(self, comments: Sequence[Resource], requests: Sequence[Resource],
                        conclusion: list[str]) -> list[str]:
        """The comments cell of a report's row: performer, specimens, requests (``_requests``), filing comments,
        conclusion (``_conclusion_lines``)."""
        report = self.report
        details: list[str] = []
        for performer in as_list(report.get("performer")):
            if isinstance(performer, JSON_OBJECT):
                lab = author_label(self.index, performer.get("actor"))
                if lab:
                    details.append(f"Performed by: {lab}")
        for specimen in self.specimens:
            details.append(f"Specimen: {specimen_text(specimen)}")
        for request in requests:
            requested = concept_text(request.get("code"), "request")
            notes = "; ".join(notes_text(request))
            requester = author_label(self.index, (request.get("requester") or {}).get("agent"))
            details.append(f"Request: {requested}" + (f" — {notes}" if notes else "")
                           + (f" (requested by {requester})" if requester else ""))
        for comment in comments:
            who = ", ".join(p for p in (author_label(self.index, x) for x in as_list(comment.get("performer"))) if p)
            when = readable_date(comment.get("effectiveDateTime") or comment.get("issued"))
            details.append("Filing comment" + (f" ({who}, {when})" if who or when else "") + ":")
            details += lines_of(string(comment.get("comment")))
        details += conclusion
        if self.section.is_confidential(report):
            details.append("Not for disclosure to the patient (NOPAT)")
        return details

    def _result_row(self, observation: Resource, code: Coded, value: str, moment: str | None,
                    comments: list[str]) -> tuple[Row, str | None]:
        """The narrative row of a result; ``code``: its code, ``value``: its value's text, ``comments``: its
        comment's lines."""
        row = self.table.row()
        code_ref = row.cell(code.text("Unnamed test"), content="code")
        row.cell(value)
        # Most results have neither reference ranges nor interpretations: their (empty) cells without the calls.
        row.cell(range_text(observation) if "referenceRange" in observation else ())
        row.cell(interpretation_text(observation) if "interpretation" in observation else "")
        row.cell(readable_date(moment))
        specimen = self._own_specimen(observation) if "specimen" in observation else None  # (most have none)
        confidential = self.section.is_confidential(observation)
        if specimen is None and not confidential:  # most results: the comment's lines alone
            row.cell(comments)
            return row, code_ref
        extra: list[str] = []
        if specimen is not None:
            extra.append(f"Specimen: {specimen_text(specimen)}")
        if confidential:
            extra.append("Not for disclosure to the patient (NOPAT)")
        row.cell(comments + extra)
        return row, code_ref

    def _own_specimen(self, observation: Resource) -> Resource | None:
        """The result's specimen when it is not one of the report's (None for most results: theirs are)."""
        reference = observation.get("specimen")
        if reference is None:
            return None
        specimen = self.index.resolve(reference)
        if specimen is None or any(specimen is s for s in self.specimens):
            return None
        return specimen

    # --- entries ---------------------------------------------------------------------------------------------
    def _organizer(self, group: Resource | None, members: Sequence[Resource], class_code: str,
                   code: object) -> tuple[Element, list[str]]:
        """A Result Organizer as its entry and its markup, joined at once (``build`` closes it, after the report's
        comments, which go with the first organizer)."""
        source = group or self.report
        if group is not None:
            row = self.table.row()
            row.style = BOLD
            code_ref = row.cell(concept_text(group.get("code"), "Test group"), content="code")
            row.cell(value_text(group))
            row.cell(range_text(group))
            row.cell(interpretation_text(group))
            row.cell(readable_date(self._time(group)))
            row.cell(lines_of(string(group.get("comment"))))
        else:
            row, code_ref = None, None
        entry = self.section.entry()
        parts = [
            start_tag("organizer", {"classCode": class_code, "moodCode": "EVN"}),
            template_markup(T.RESULT_ORGANIZER),
            self.ids.markup(source, "" if group is not None else "result-cluster"),
            cd_markup("code", code, reference=code_ref),
            _STATUS_CODE[result_status(source, lambda: any(map(has_value, members)))],
        ]
        moment = self.collected or (self._time(group) if group is not None else None)
        if moment is None and members:
            moment = self._time(members[0])
        if moment is not None:
            parts.append(f"<effectiveTime>{ts_markup('low', moment)}{ts_markup('high', moment)}</effectiveTime>")
        specimen = self.index.resolve(group.get("specimen")) if group is not None else None
        for item in ([specimen] if specimen is not None else self.specimens)[:1]:
            if item.get("resourceType") == "Specimen" and coding_view(item.get("type")):
                parts.append(f"<specimen><specimenRole><specimenPlayingEntity>{cd_markup('code', item.get('type'))}"
                             "</specimenPlayingEntity></specimenRole></specimen>")
        parts += map(self._result_observation, members)
        if group is not None and row is not None and string(group.get("comment")):
            parts.append(comment_activity_markup(row.reference, component=True))
        if group is not None:
            self.section.mapped(group, T.RESULT_ORGANIZER)
        return entry, parts

    def _result_observation(self, observation: Resource) -> str:
        """A Result Observation, joined at once as markup (a record has hundreds of results): the fixed start
        (component, classCode/moodCode, templateIds) is a frame, the rest is joined into it."""
        moment = _observation_time(observation, self.collected, self.issued)
        comments = lines_of(string(observation.get("comment")))
        concept = coded("code", observation.get("code"))  # its text for the row, its CD for the entry
        value, value_xml = value_text_and_markup(observation)  # likewise its value
        row, code_ref = self._result_row(observation, concept, value, moment, comments)
        text = reference_markup(row.reference)  # the result's row: its text, and its comment's
        status = observation.get("status")
        if isinstance(status, str) and status in RESULT_STATUS:  # most results: result_status without its call
            status_code = _STATUS_CODE[RESULT_STATUS[status]]
        else:
            status_code = _STATUS_CODE[result_status(observation, has_value(observation))]
        head, tail = _result_observation_frame()
        parts = [
            head,
            self.ids.markup(observation),
            concept.markup(code_ref),
            text,
            status_code,
            ts_markup("effectiveTime", moment),
            value_xml,
        ]
        if "interpretation" in observation:  # (absent from most results, like reference ranges)
            for code, display in interpretations(observation):
                parts.append(leaf_markup("interpretationCode", {"code": code, "codeSystem": INTERPRETATION_OID,
                                                                "codeSystemName": "ObservationInterpretation",
                                                                "displayName": display}))
        if comments:
            comment_head, comment_tail = _comment_frame(False)
            parts += (comment_head, text, comment_tail)
        if "referenceRange" in observation:
            parts.append(reference_ranges_markup(observation))
        parts.append(tail)
        self.section.mapped(observation, T.RESULT_OBSERVATION)
        return "".join(parts)


class UnfiledResults(ReportEntries):
    """One day of results filed outside a laboratory report: a Result Organizer (CLUSTER) of Result Observations,
    with a heading row saying so."""

    def __init__(self, section: SectionWriter, table: Any, ids: UniqueIds, day: str,
                 members: list[Resource]) -> None:
        super().__init__(section, table, ids, {})
        self.day = day
        self.members = members

    def build(self) -> None:
        members = self.members
        row = self.table.row()
        row.style = BOLD
        title = concept_text(members[0].get("code"), "Result") if len(members) == 1 else f"{len(members)} results"
        code_ref = row.cell(f"{UNFILED_LABEL}: {title}", content="code")
        row.cell("")
        row.cell("")
        row.cell("")
        row.cell(readable_date(self.day[:4] + "-" + self.day[4:6] + "-" + self.day[6:8]) if len(self.day) == 8
                 else "Date not recorded")
        row.cell(UNFILED_NOTE)
        organizer = el(self.section.entry(), "organizer", {"classCode": "CLUSTER", "moodCode": "EVN"})
        self.section.template(organizer, T.RESULT_ORGANIZER)
        state = self.section.state
        uid_ii(organizer, state.derived_id("unfiled-results", *(state.index.key(m) for m in members)))
        if len(members) == 1:
            cd(organizer, "code", members[0].get("code"), reference=code_ref)
        else:
            code = fixed_code(organizer, "code", UNFILED_CODE)
            fragment(code, reference_markup(code_ref, "originalText"))
        leaf(organizer, "statusCode", {"code": "completed"})
        moments = sorted(m for m in (fhir_ts(self._time(o)) for o in members) if m)
        if moments:
            interval = el(organizer, "effectiveTime")
            leaf(interval, "low", {"value": moments[0]})
            leaf(interval, "high", {"value": moments[-1]})
        for member in members:
            fragment(organizer, self._result_observation(member))


@memo()
def _result_observation_frame() -> tuple[str, str]:
    component = element("component")
    entry = el(component, "observation", {"classCode": "OBS", "moodCode": "EVN"})
    template_id(entry, T.RESULT_OBSERVATION)
    fragment(entry, SLOT)  # ids, code, text, statusCode, … of the result
    return frame(component)


# Every result status as its ``statusCode`` markup (the codes of RESULT_STATUS and result_status's fallbacks).
_STATUS_CODE: Final = {code: leaf_markup("statusCode", {"code": code})
                       for code in {*RESULT_STATUS.values(), "completed", "active"}}


def _status_label(resource: Resource) -> str:
    status = string(resource.get("status"))
    return f"Status: {status}" if status and status != "final" else ""


def specimen_text(specimen: Resource) -> str:
    parts = [concept_text(specimen.get("type"), "specimen")]
    accession = specimen.get("accessionIdentifier")
    if isinstance(accession, JSON_OBJECT) and string(accession.get("value")):
        parts.append(f"accession {accession['value']}")
    collection = specimen.get("collection")
    if isinstance(collection, JSON_OBJECT):
        collected = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
        if collected:
            parts.append(f"collected {readable_date(collected)}")
        if isinstance(collection.get("bodySite"), JSON_OBJECT):
            parts.append(f"site {concept_text(collection['bodySite'])}")
    if specimen.get("receivedTime"):
        parts.append(f"received {readable_date(specimen.get('receivedTime'))}")
    parts += notes_text(specimen)
    return ", ".join(p for p in parts if p)


def _collection_time(specimens: Sequence[Resource]) -> str | None:
    for specimen in specimens:
        collection = specimen.get("collection")
        if isinstance(collection, JSON_OBJECT):
            value = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
            if isinstance(value, str):
                return value
    return None


def _observation_time(observation: Resource, collected: str | None, report_issued: str | None) -> str | None:
    """effective, else specimen collection time (``_collection_time`` of the report's specimens), else issued,
    else the report's issued (SPEC §8.4.5)."""
    effective = observation.get("effectiveDateTime")
    if isinstance(effective, str):
        return effective
    period = observation.get("effectivePeriod")
    if isinstance(period, JSON_OBJECT) and isinstance(period.get("start"), str):
        return str(period["start"])
    if collected:
        return collected
    issued = observation.get("issued")
    return issued if isinstance(issued, str) else report_issued
