"""Encounters (SPEC §8.4.7): consultations, List 1149501000000101.

The consultations List references Encounters (and/or consultation Lists ``325851000000107``); each consultation
List points at its Encounter (``List.encounter``) and holds topic Lists (``25851000000105``, optionally linked to a
problem by Extension-CareConnect-RelatedProblemHeader-1) which hold heading Lists (``24781000000107``: History,
Examination, Plan …) and/or record entries. One Encounter → one Encounter Activity (4.49): id, type, period,
performer (participant PPRF, else REC), Service Delivery Location (4.32), and a narrative row naming the topics.
The consultation content itself is rendered by notes.py (one Note Activity per consultation, linked back to this
encounter by id); ``consultations()`` below is the shared walk of the consultation structure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.bundle import BundleIndex
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings, concept_text, readable_date, string
from xhuma.ccda.hl7 import cd_markup, fhir_ts, reference_markup, template_markup, ts_markup
from xhuma.ccda.narrative import NarrativeTable
from xhuma.ccda.participation import (
    address,
    assigned_party,
    author_label,
    name_text,
    practitioner_of,
    represented_organisation,
    telecoms,
)
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import el, element, fragment, leaf, markup_of, start_tag

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["encounters"]
HEADERS = ("Date", "Consultation", "Clinician", "Location", "Topics / problems", "Status")


@dataclass(slots=True)
class Topic:
    title: str
    problem: Resource | None
    # (heading title or "", items); items are resolved resources or unresolved reference strings
    headings: list[tuple[str, list[Resource | str]]] = field(default_factory=list)


@dataclass(slots=True)
class Consultation:
    encounter: Resource | None
    consultation_list: Resource | None
    topics: list[Topic] = field(default_factory=list)

    @property
    def start(self) -> str | None:
        if self.encounter is not None:
            period = self.encounter.get("period")
            if isinstance(period, JSON_OBJECT) and isinstance(period.get("start"), str):
                return str(period["start"])
        if self.consultation_list is not None and isinstance(self.consultation_list.get("date"), str):
            return str(self.consultation_list["date"])
        return None

    @property
    def title(self) -> str:
        if self.consultation_list is not None and string(self.consultation_list.get("title")):
            return str(string(self.consultation_list.get("title")))
        return encounter_type_text(self.encounter)

    @property
    def source(self) -> Resource:
        found = self.encounter or self.consultation_list
        assert found is not None
        return found


def encounter_type_text(encounter: Resource | None) -> str:
    if encounter is None:
        return "Consultation"
    types = [concept_text(t) for t in as_list(encounter.get("type")) if concept_text(t)]
    return ", ".join(types) or "Consultation"


def _is(lst: Resource, index: BundleIndex, code: str) -> bool:
    return code in index.list_codes(lst)


def consultations(state: ConversionState, primary_lists: list[Resource]) -> list[Consultation]:
    """Every consultation of the record (most recent first), from the consultations List(s) and the
    consultation Lists that point at an Encounter; each with its topics and headings resolved."""
    index = state.index
    by_encounter: dict[int, Resource] = {}
    orphans: list[Resource] = []
    for lst in index.lists(T.LIST_CONSULTATION):
        encounter = index.resolve(lst.get("encounter"))
        if encounter is not None and encounter.get("resourceType") == "Encounter":
            by_encounter.setdefault(id(encounter), lst)
        else:
            orphans.append(lst)
    found: list[Consultation] = []
    seen: set[int] = set()
    for primary in primary_lists:
        _primary_consultations(index, primary, by_encounter, found, seen)
    # Consultation Lists whose Encounter the primary list did not name (secondary queries) still count.
    for lst in index.lists(T.LIST_CONSULTATION):
        encounter = index.resolve(lst.get("encounter"))
        key = id(encounter) if encounter is not None else id(lst)
        if key not in seen:
            seen.add(key)
            found.append(Consultation(encounter if encounter is not None and encounter.get(
                "resourceType") == "Encounter" else None, lst))
    # Encounters outside any consultations List (uncoded lists in older examples, or referenced only from
    # clinical items) are still encounters of the record: never leave them out silently.
    for encounter in index.of_type("Encounter"):
        if id(encounter) not in seen:
            seen.add(id(encounter))
            found.append(Consultation(encounter, by_encounter.get(id(encounter))))
    for consultation in found:
        if consultation.consultation_list is not None:
            consultation.topics = _topics(index, consultation.consultation_list)
    found.sort(key=lambda c: fhir_ts(c.start) or "", reverse=True)
    return found


def _primary_consultations(index: BundleIndex, primary: Resource, by_encounter: dict[int, Resource],
                           found: list[Consultation], seen: set[int]) -> None:
    """The consultations the consultations List names: Encounters, or consultation Lists."""
    members, _ = index.list_members(primary)
    for member in members:
        if member.get("resourceType") == "Encounter" and id(member) not in seen:
            seen.add(id(member))
            found.append(Consultation(member, by_encounter.get(id(member))))
        elif member.get("resourceType") == "List" and _is(member, index, T.LIST_CONSULTATION):
            encounter = index.resolve(member.get("encounter"))
            key = id(encounter) if encounter is not None else id(member)
            if key not in seen:
                seen.add(key)
                found.append(Consultation(encounter, member))


def _items(index: BundleIndex, lst: Resource) -> list[Resource | str]:
    members: list[Resource | str] = []
    for entry in as_list(lst.get("entry")):
        item = entry.get("item") if isinstance(entry, JSON_OBJECT) else None
        resolved = index.resolve(item, lst)
        if resolved is not None:
            members.append(resolved)
        else:
            ref = item.get("reference") if isinstance(item, JSON_OBJECT) else None
            display = item.get("display") if isinstance(item, JSON_OBJECT) else None
            members.append(str(ref or display or "an entry without reference"))
    return members


def _topics(index: BundleIndex, consultation_list: Resource) -> list[Topic]:
    topics: list[Topic] = []
    loose: list[Resource | str] = []
    for item in _items(index, consultation_list):
        if isinstance(item, JSON_OBJECT) and item.get("resourceType") == "List" and _is(item, index, T.LIST_TOPIC):
            topics.append(_topic(index, item))
        elif isinstance(item, JSON_OBJECT) and item.get("resourceType") == "List":
            topics.append(Topic("", None, [(string(item.get("title")) or "", _items(index, item))]))
        else:
            loose.append(item)
    if loose:
        topics.insert(0, Topic("", None, [("", loose)]))
    return topics


def _topic(index: BundleIndex, topic_list: Resource) -> Topic:
    """A topic List: its related problem, and its entries by heading (entries outside any heading first)."""
    problem = None
    for ext in as_list(topic_list.get("extension")):
        if isinstance(ext, JSON_OBJECT) and str(ext.get("url", "")).endswith("RelatedProblemHeader-1"):
            for part in as_list(ext.get("extension")):
                if isinstance(part, JSON_OBJECT) and part.get("url") == "target":
                    problem = index.resolve(part.get("valueReference"))
    topic = Topic(string(topic_list.get("title")) or "Topic", problem)
    flat: list[Resource | str] = []
    for sub in _items(index, topic_list):
        if isinstance(sub, JSON_OBJECT) and sub.get("resourceType") == "List":
            topic.headings.append((string(sub.get("title")) or "", _items(index, sub)))
        else:
            flat.append(sub)
    if flat:
        topic.headings.insert(0, ("", flat))
    return topic


def structure_lists(consultation: Consultation, index: BundleIndex) -> list[Resource]:
    """The consultation, topic and heading Lists of one consultation (for the report)."""
    out: list[Resource] = []
    if consultation.consultation_list is None:
        return out
    out.append(consultation.consultation_list)
    for item in _items(index, consultation.consultation_list):
        if isinstance(item, JSON_OBJECT) and item.get("resourceType") == "List":
            out.append(item)
            out += [s for s in _items(index, item) if isinstance(s, JSON_OBJECT) and s.get("resourceType") == "List"]
    return out


def performer_reference(encounter: Resource) -> object:
    """participant of type PPRF (primary performer), else REC (recorder), else the first one."""
    participants = [p for p in as_list(encounter.get("participant")) if isinstance(p, JSON_OBJECT)]
    for wanted in ("PPRF", "REC"):
        for participant in participants:
            if any(c.get("code") == wanted for t in as_list(participant.get("type")) for c in codings(t)):
                return participant.get("individual")
    return participants[0].get("individual") if participants else None


def locations(index: BundleIndex, encounter: Resource) -> list[tuple[Resource | None, str]]:
    out: list[tuple[Resource | None, str]] = []
    for item in as_list(encounter.get("location")):
        if not isinstance(item, JSON_OBJECT):
            continue
        location = index.resolve(item.get("location"))
        label = (string(location.get("name")) if location else None) or string(
            (item.get("location") or {}).get("display")) or ""
        if label or location is not None:
            out.append((location, label))
    return out


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    primary = section.use_lists(T.LIST_CONSULTATIONS) + section.use_uncoded_lists("Encounter")
    for lst in primary:
        section.members(lst, "Encounter", "List")  # unresolved entries → warning + text row
    found = [c for c in consultations(state, primary) if c.encounter is not None]
    table = section.table(HEADERS)
    by_source = {id(c.source): c for c in found}
    section.convert_each([c.source for c in found],
                         lambda enc: EncounterActivity(section, table, by_source[id(enc)]).build())


_ENCOUNTER_HEAD: Final = start_tag("encounter", {"classCode": "ENC", "moodCode": "EVN"}) + template_markup(
    T.ENCOUNTER_ACTIVITY)


class EncounterActivity:
    def __init__(self, section: SectionWriter, table: NarrativeTable, consultation: Consultation) -> None:
        self.section = section
        self.table = table
        self.consultation = consultation
        assert consultation.encounter is not None
        self.encounter: Resource = consultation.encounter

    def build(self) -> None:
        index = self.section.index
        encounter = self.encounter
        row = self.table.row()
        period = encounter.get("period")
        start, end = (period.get("start"), period.get("end")) if isinstance(period, JSON_OBJECT) else (None, None)
        row.cell([readable_date(start)] + ([f"to {readable_date(end)}"] if end else []))
        type_ref = row.cell(encounter_type_text(encounter), content="type")
        performer = performer_reference(encounter)
        row.cell(author_label(index, performer))
        places = locations(index, encounter)
        row.cell([label for _, label in places if label])
        topics = []
        for topic in self.consultation.topics:
            if topic.problem is not None:
                topics.append(f"{topic.title} (problem: {concept_text(topic.problem.get('code'), 'problem')})"
                              if topic.title else concept_text(topic.problem.get("code"), "problem"))
            elif topic.title:
                topics.append(topic.title)
        if self.consultation.topics:
            topics.append("Consultation content: see Consultation notes")
        row.cell(topics)
        status = [string(encounter.get("status")) or ""]
        if self.section.is_confidential(encounter):
            status.append("Not for disclosure to the patient (NOPAT)")
        row.cell(status)

        # The Encounter Activity, joined at once from markup (nothing is added to it afterwards).
        types = [t for t in as_list(encounter.get("type")) if isinstance(t, JSON_OBJECT)]
        parts = [_ENCOUNTER_HEAD, self.section.state.ids_markup(encounter),
                 cd_markup("code", types[0] if types else None, reference=type_ref), reference_markup(row.reference)]
        if isinstance(end, str) and end:
            parts.append(f"<effectiveTime>{ts_markup('low', start)}{ts_markup('high', end)}</effectiveTime>")
        else:
            parts.append(ts_markup("effectiveTime", start))
        parts.append(self._performer(performer))
        parts += [self._location(location, label) for location, label in places]
        parts.append("</encounter>")
        fragment(self.section.entry(), "".join(parts))
        self.section.mapped(encounter, T.ENCOUNTER_ACTIVITY)
        for location, _ in places:
            self.section.supporting(location, "service delivery location of an encounter")

    def _performer(self, reference: object) -> str:
        """The performer ("" when nothing resolves). A record's consultations are held by a few clinicians: each
        performer is built once per conversion and then written as markup."""
        index = self.section.index
        person, organisation = practitioner_of(index, reference)
        provider = index.resolve(self.encounter.get("serviceProvider"))
        if person is None and organisation is None:
            return ""
        org = organisation or (provider if provider is not None and provider.get("resourceType") == "Organization"
                               else None)
        key = ("performer", id(person), id(organisation), id(org))
        markup = index.memo.get(key)
        if markup is None:
            performer = element("performer")
            assigned = el(performer, "assignedEntity")
            assigned_party(assigned, person, organisation)
            if org is not None:
                represented_organisation(assigned, org)
            markup = index.memo[key] = markup_of(performer)
        return markup

    def _location(self, location: Resource | None, label: str) -> str:
        """A Service Delivery Location participant; each (location, label) built once per conversion (a few
        places hold a record's consultations) and then written as markup."""
        key = ("location", id(location), label)
        markup = self.section.index.memo.get(key)
        if markup is None:
            participant = element("participant", {"typeCode": "LOC"})
            role = el(participant, "participantRole", {"classCode": "SDLOC"})
            self.section.template(role, T.SERVICE_DELIVERY_LOCATION)
            kind = location.get("type") if location is not None else None
            # HealthcareServiceLocation is a US (CDC HSLOC) value set: keep the GP system's text instead.
            code = el(role, "code", {"nullFlavor": "OTH" if concept_text(kind) else "NI"})
            if concept_text(kind):
                leaf(code, "originalText", text=concept_text(kind))
            if location is not None:
                if location.get("address"):
                    address(role, [location.get("address")] if isinstance(location.get("address"), JSON_OBJECT)
                            else location.get("address"), required=False)
                telecoms(role, location.get("telecom"), required=False)
            entity = el(role, "playingEntity", {"classCode": "PLC"})
            if label:
                leaf(entity, "name", text=label)
            markup = self.section.index.memo[key] = markup_of(participant)
        return markup


__all__ = ["Consultation", "Topic", "build", "consultations", "encounter_type_text", "name_text"]
