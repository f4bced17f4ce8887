"""The section contract: ``ConversionState`` (one per conversion) and ``SectionWriter`` (one per CCD section).

A section module (``xhuma/ccda/sections/<key>.py``) exposes ``build(state: ConversionState) -> None`` and calls
``state.section(SPEC)`` to obtain a writer, fills its narrative and entries, and reports what it did with every
resource. See SECTIONS.md for the full contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.bundle import BundleIndex
from xhuma.ccda.context import ConversionContext
from xhuma.ccda.fhir import JSON_OBJECT, as_list, concept_text, extension, readable_date, string
from xhuma.ccda.hl7 import derived_uuid, fixed_code, identifier_markup, template_id, uid_markup
from xhuma.ccda.memo import memo
from xhuma.ccda.narrative import NarrativeTable, Row, paragraph
from xhuma.ccda.report import ReportBuilder
from xhuma.ccda.xmlwriter import Element, el, element, fragment, leaf

Resource = Mapping[str, Any]

# OperationOutcome diagnostics naming a disabled area (SPEC §7.4) → the sections that must say so.
DISABLED_AREA_SECTIONS: dict[str, tuple[str, ...]] = {
    "includeAllergies": ("allergies",),
    "includeMedication": ("medications",),
    "includeProblems": ("problems",),
    "includeImmunisations": ("immunizations",),
    "includeConsultations": ("encounters", "notes"),
    "includeUncategorisedData": ("vital_signs", "social_history", "uncategorised"),
    "includeInvestigations": ("results",),
    "includeReferrals": ("plan_of_treatment",),
    "includeDiaryEntries": ("plan_of_treatment",),
    "DocumentReferences": ("uncategorised",),
    "includeDocuments": ("uncategorised",),
}


@dataclass(frozen=True, slots=True)
class Notice:
    """A visible paragraph at the top of a section narrative (SPEC §8.5)."""

    text: str
    kind: str  # "warning" | "note" | "empty" | "disabled"
    subject: str = ""  # the List's title, for a warning ("text" then starts with it)
    message: str = ""  # a warning's text without the title (the provenance section counts repeats of it)


@dataclass(slots=True)
class ConversionState:
    """Everything a section module may read, plus the sinks it writes to. One per conversion."""

    index: BundleIndex
    context: ConversionContext
    report: ReportBuilder
    now: datetime
    disabled_areas: dict[str, list[str]] = field(default_factory=dict)  # section key → notices
    list_notices: list[tuple[str, Notice]] = field(default_factory=list)  # (section key, notice) for provenance
    sections: list[SectionWriter] = field(default_factory=list)

    def section(self, spec: T.SectionSpec | str) -> SectionWriter:
        """A new section writer; sections appear in the document in the order they are created."""
        resolved = T.SECTION_SPECS[spec] if isinstance(spec, str) else spec
        writer = SectionWriter(self, resolved)
        self.sections.append(writer)
        return writer

    # --- ids (uuid5 over source identifiers: same source item → same entry id in every document) -------------
    def derived_id(self, *parts: str) -> str:
        return derived_uuid("|".join(parts))

    def resource_seed(self, resource: Resource) -> str:
        """The most stable name of a resource: its first business identifier, else ``Type/id``."""
        for identifier in as_list(resource.get("identifier")):
            if isinstance(identifier, JSON_OBJECT) and string(identifier.get("value")):
                return f"{identifier.get('system')}|{str(identifier['value']).strip()}"
        return self.index.key(resource)

    def seed_and_ids(self, resource: Resource) -> tuple[str, str]:
        """``(resource_seed(resource), ids_markup(resource))`` in one pass over the identifiers: the seed is the
        first identifier that has a value, which is also the first that ``ids_markup`` writes."""
        seed = None
        written = ""
        for identifier in as_list(resource.get("identifier")):
            if isinstance(identifier, JSON_OBJECT):
                xml = identifier_markup(identifier)
                if xml is not None:  # (exactly when the identifier has a value)
                    written += xml
                    if seed is None:
                        seed = f"{identifier.get('system')}|{identifier['value'].strip()}"
        if seed is None:
            key = self.index.key(resource)
            return key, uid_markup(self.derived_id("resource", key))
        return seed, written

    def add_ids(self, parent: Element, resource: Resource, role: str = "") -> None:
        """Write the ``id`` elements of an entry for ``resource`` (``ids_markup``)."""
        fragment(parent, self.ids_markup(resource, role))

    def ids_markup(self, resource: Resource, role: str = "") -> str:
        """The ``id`` elements of an entry for ``resource``, as markup.

        ``role=""``: the resource's own business identifiers (SPEC §8.3). Any other role (``"concern"``,
        ``"supply"``, …) gives one id derived with uuid5 from the resource and the role, so wrapper acts get
        stable ids distinct from the observation they wrap.
        """
        if role:
            return uid_markup(self.derived_id(role, self.resource_seed(resource)))
        return self.seed_and_ids(resource)[1]


class SectionWriter:
    """Builds one ``<component><section>``: narrative notices and tables, entries, and report lines."""

    def __init__(self, state: ConversionState, spec: T.SectionSpec) -> None:
        self.state = state
        self.spec = spec
        self.key = spec.key
        self.index = state.index
        self.context = state.context
        self.report = state.report
        self.notices: list[Notice] = [Notice(text, "disabled") for text in state.disabled_areas.get(spec.key, [])]
        self.tables: list[NarrativeTable] = []
        self.entries: list[Element] = []
        self._failures: NarrativeTable | None = None
        self.title = spec.title

    # --- source Lists ------------------------------------------------------------------------------------------
    def use_lists(self, *codes: str) -> list[Resource]:
        """The Lists with these codes; marks them consumed and surfaces their warnings, notes and emptyReason."""
        found: list[Resource] = []
        for code in codes:
            for lst in self.index.lists(code):
                if any(lst is seen for seen in found):
                    continue
                found.append(lst)
                self.report.record(self.index.key(lst), "List", "supporting", section=None,
                                   reason=f"source list of section {self.key}")
                self.list_notices(lst)
        return found

    def use_secondary_lists(self, area: str) -> list[Resource]:
        """Secondary Lists (GPConnect-SecondaryListValues-1) whose code names this area, e.g. ``allergies`` for
        ``problems-allergies-related-to-problems``. Their members are linkage: render each resource once."""
        found: list[Resource] = []
        for lst in self.index.secondary_lists():
            codes = self.index.list_codes(lst)
            if any(f"-{area}-" in code for code in codes):
                found.append(lst)
                self.report.record(self.index.key(lst), "List", "supporting",
                                   reason=f"secondary list used by section {self.key}")
        return found

    def use_uncoded_lists(self, member_type: str) -> list[Resource]:
        """Lists without a recognised GP Connect code (placeholder codes such as "TBD" in older examples, or no
        code at all) whose members are all ``member_type``: classified by content, never by title (LESSONS 20)."""
        found: list[Resource] = []
        for lst in self.index.uncoded_lists():
            members, _ = self.index.list_members(lst)
            if members and all(m.get("resourceType") == member_type for m in members):
                found.append(lst)
                codes = ",".join(self.index.list_codes(lst)) or "no code"
                self.report.record(self.index.key(lst), "List", "supporting",
                                   reason=f"list with unrecognised code ({codes}) used by section {self.key} "
                                   f"because its members are {member_type}")
                self.warn("unrecognised-list-code", f"list {self.index.key(lst)} has no recognised GP Connect "
                          f"code ({codes}); its {member_type} members are shown in this section")
                self.list_notices(lst)
        return found

    def unlisted(self, rtype: str) -> list[Resource]:
        """Resources of ``rtype`` that no List references: converted here, with a warning, rather than lost."""
        found = self.index.unlisted(rtype)
        for resource in found:
            self.warn("not-in-any-list", f"{rtype} {self.index.key(resource)} is in no GP Connect List; shown in "
                      f"section {self.key}", resource)
        return found

    def is_confidential(self, resource: Resource) -> bool:
        """``meta.security`` NOPAT: not to be disclosed to the patient (SPEC §7.4, §8.5)."""
        meta = resource.get("meta")
        labels = meta.get("security") if isinstance(meta, JSON_OBJECT) else None
        if not labels or not isinstance(labels, list):  # most resources have no security labels
            return False
        return any(isinstance(label, JSON_OBJECT) and label.get("code") == "NOPAT" for label in labels)

    def list_notices(self, lst: Resource) -> None:
        """List warning codes, note and emptyReason as narrative paragraphs (SPEC §8.5; GPC warnings)."""
        title = string(lst.get("title")) or concept_text(lst.get("code"), "list")
        notes = [string(n.get("text")) for n in as_list(lst.get("note")) if isinstance(n, JSON_OBJECT)]
        note_text = " ".join(n for n in notes if n)
        warnings = [
            str(e.get("valueCode"))
            for e in as_list(lst.get("extension"))
            if isinstance(e, JSON_OBJECT) and isinstance(e.get("url"), str) and e["url"].endswith("ListWarningCode-1")
        ]
        for code in warnings:
            text = T.LIST_WARNING_TEXT.get(code, f"GP Connect warning '{code}'.")
            self._notice(f"{title}: {text}", "warning", title, text)
        if note_text:
            self._notice(f"{title}: {note_text}", "note")
        empty = lst.get("emptyReason")
        if isinstance(empty, JSON_OBJECT) and not as_list(lst.get("entry")):
            reason = concept_text(empty, "no reason given")
            self._notice(f"{title}: the GP system returned no entries ({reason}).", "empty")

    def _notice(self, text: str, kind: str, subject: str = "", message: str = "") -> None:
        notice = Notice(text, kind, subject, message)
        if notice not in self.notices:
            self.notices.append(notice)
            if kind == "warning":
                self.state.list_notices.append((self.key, notice))

    def members(self, lst: Resource, *types: str) -> list[Resource]:
        """Resolved members of a List (optionally only these types); unresolvable ones become a warning row."""
        members, unresolved = self.index.list_members(lst)
        for reference in unresolved:
            self.report.warn("unresolved-reference", f"list entry {reference} is not in the bundle",
                             section=self.key, resource=self.index.key(lst))
            self.failure_row(f"Referenced item {reference}", "", "The GP record lists this item but did not "
                             "include it in the response.")
        untyped = self.index.untyped_references(lst)
        if untyped:
            self.report.warn("reference-without-type", f"{len(untyped)} entries of list {self.index.key(lst)} name "
                             f"their item by id alone (FHIR references are Type/id); each matched the bundle's only "
                             f"resource with that id", section=self.key, resource=self.index.key(lst))
        if types:
            kept = []  # one pass: the members of these types kept, any other one a warning (in List order)
            for member in members:
                if member.get("resourceType") in types:
                    kept.append(member)
                else:
                    self.report.warn("unexpected-list-member",
                                     f"{member.get('resourceType')} in list {self.index.key(lst)} is not converted "
                                     f"by section {self.key}", section=self.key, resource=self.index.key(member))
            return kept
        return members

    # --- narrative ---------------------------------------------------------------------------------------------
    def paragraph(self, text: str) -> None:
        self._notice(text, "note")

    def empty_paragraph(self, text: str) -> None:
        """A paragraph saying why the section has no rows: written instead of "No information available ..."."""
        self._notice(text, "empty")

    def table(self, headers: Sequence[str], caption: str | None = None) -> NarrativeTable:
        prefix = f"{self.spec.id_prefix}{len(self.tables) + 1 if self.tables else ''}"
        table = NarrativeTable(tuple(headers), prefix, caption)
        self.tables.append(table)
        return table

    def failure_row(self, item: str, date: str, why: str) -> Row:
        """A row in this section's 'not converted' table: the data stays visible (issue 3: never drop)."""
        if self._failures is None:
            self._failures = NarrativeTable(
                ("Record entry", "Date", "Note"), f"{self.spec.id_prefix}-x", "Entries shown as text only"
            )
        row = self._failures.row()
        row.cell(item)
        row.cell(date)
        row.cell(why)
        return row

    # --- entries -----------------------------------------------------------------------------------------------
    def entry(self, type_code: str = "DRIV") -> Element:
        """A new ``<entry>`` of this section; build the act/observation inside it."""
        entry = element("entry", {"typeCode": type_code})
        self.entries.append(entry)
        return entry

    def add_ids(self, parent: Element, resource: Resource, role: str = "") -> None:
        self.state.add_ids(parent, resource, role)

    def template(self, parent: Element, template: T.TemplateId) -> str:
        return template_id(parent, template)

    # --- report ------------------------------------------------------------------------------------------------
    def mapped(self, resource: Resource, template: T.TemplateId | None) -> None:
        name = None if template is None else _template_name(template)
        self.report.record(self.index.key(resource), _type(resource), "entry", self.key, name, None)

    def narrative_only(self, resource: Resource, reason: str) -> None:
        self.report.record(self.index.key(resource), _type(resource), "narrative", self.key, None, reason)

    def supporting(self, resource: Resource | None, reason: str) -> None:
        if resource is not None:
            self.report.record(self.index.key(resource), _type(resource), "supporting", None, None, reason)

    def warn(self, code: str, message: str, resource: Resource | None = None) -> None:
        self.report.warn(code, message, section=self.key,
                         resource=self.index.key(resource) if resource is not None else None)

    def convert_each(
        self,
        resources: Iterable[Resource],
        convert: Callable[[Resource], None],
        describe: Callable[[Resource], tuple[str, str]] | None = None,
    ) -> None:
        """Run ``convert`` per resource; a resource that raises is rolled back (its entries and rows) and
        becomes a 'not converted' narrative row plus a report warning — never a lost section (LESSONS 24)."""
        for resource in resources:
            entries_mark = len(self.entries)
            rows_mark: list[int] = []  # (a loop, not a comprehension: that is a function call of its own, per resource)
            for table in self.tables:
                rows_mark.append(len(table.rows))
            try:
                convert(resource)
            except Exception as error:
                del self.entries[entries_mark:]
                for table, mark in zip(self.tables, rows_mark, strict=False):
                    del table.rows[mark:]
                item, date = _describe(resource) if describe is None else _safe_describe(describe, resource)
                row = self.failure_row(item, date, "Could not be converted to a structured entry; shown as text.")
                del row  # the row exists in the failures table; nothing references it
                self.report.record(self.index.key(resource), _type(resource), "narrative", section=self.key,
                                   reason=f"conversion failed: {type(error).__name__}")
                self.report.failed(self.key)
                self.warn("entry-conversion-failed",
                          f"{_type(resource)} could not be converted ({type(error).__name__}); shown as text",
                          resource)

    # --- rendering ---------------------------------------------------------------------------------------------
    @property
    def null_section(self) -> bool:
        """Entries-required section without entries: nullFlavor="NI" (SPEC §8.3 nullFlavor rule 3)."""
        return self.spec.entries_required and not self.entries

    def render(self) -> Element:
        component = element("component")
        section = el(component, "section")
        if self.null_section:
            section.set("nullFlavor", "NI")
        if self.spec.template is not None:
            template_id(section, self.spec.template)
        if self.spec.code is not None:
            fixed_code(section, "code", self.spec.code)
        leaf(section, "title", text=self.title)
        text = el(section, "text")
        for notice in self.notices:
            paragraph(text, notice.text, "Bold" if notice.kind in ("warning", "disabled") else None)
        tables = [t for t in self.tables if t.rows]
        if self._failures is not None and self._failures.rows:
            tables.append(self._failures)
        for table in tables:
            table.render(text)
        if not tables and not any(n.kind in ("empty", "disabled") for n in self.notices):
            paragraph(text, "No information available from the GP record.")
        for entry in self.entries:
            section.append(entry)
        return component


@memo()  # the registry's TemplateId constants, one name each
def _template_name(template: T.TemplateId) -> str:
    return f"{template.root}:{template.extension}" if template.extension else template.root


def _type(resource: Resource) -> str:
    rtype = resource.get("resourceType")
    return rtype if isinstance(rtype, str) else "Unknown"


def _describe(resource: Resource) -> tuple[str, str]:
    """Best-effort label and date of any clinical resource, for failure rows."""
    concept = None
    for key in ("code", "vaccineCode", "medicationCodeableConcept", "type"):
        if isinstance(resource.get(key), JSON_OBJECT):
            concept = resource[key]
            break
    label = concept_text(concept, _type(resource))
    date = ""
    for key in ("assertedDate", "onsetDateTime", "effectiveDateTime", "date", "authoredOn", "issued",
                "dateAsserted"):
        if isinstance(resource.get(key), str):
            date = readable_date(resource[key])
            break
    period = resource.get("effectivePeriod")
    if not date and isinstance(period, JSON_OBJECT):
        date = readable_date(period.get("start"))
    return f"{_type(resource)}: {label}", date


def _safe_describe(describe: Callable[[Resource], tuple[str, str]], resource: Resource) -> tuple[str, str]:
    try:
        return describe(resource)
    except Exception:
        return _describe(resource)


__all__ = ["ConversionState", "Notice", "SectionWriter", "extension"]
