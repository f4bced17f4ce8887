"""Allergies and adverse reactions (SPEC §8.4.1): Lists 886921000000105 (active) + 1103671000000101 (ended).

One AllergyIntolerance → one Allergy Concern Act → Allergy-Intolerance Observation (+ Criticality, Reaction and
Severity Observations). Resolved allergies (ended list, or clinicalStatus resolved/inactive) are never active
(LESSONS 21). "No known allergies" is a negated observation; an empty list with emptyReason is a nullFlavor
section (SPEC §8.3 nullFlavor rules 3 and 4; SCAL GPC-STR-TST-ALG-07/08).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings, concept_text, extension, readable_date, string, sub_extension
from xhuma.ccda.hl7 import (
    cd_markup,
    coded,
    fixed_code,
    fixed_code_attrs,
    ivl_ts_markup,
    reference_markup,
    snomed,
    snomed_code,
    snomed_markup,
    template_id,
    template_markup,
)
from xhuma.ccda.memo import memo
from xhuma.ccda.narrative import Row
from xhuma.ccda.participation import author_label, author_markup
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import el, element, fragment, leaf, leaf_markup, markup_of, start_tag

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["allergies"]

# 716186003 No known allergy and its descendants (SPEC §7.4 allergy special cases).
NO_KNOWN_ALLERGY = {
    "716186003": ("419199007", "Allergy to substance"),
    "409137002": ("416098002", "Allergy to drug"),  # No known drug allergy
    "428607008": ("419199007", "Allergy to substance"),  # No known environmental allergy
    "429625007": ("414285001", "Allergy to food"),  # No known food allergy
    "428197003": ("419199007", "Allergy to substance"),  # No known insect allergy
}
TRANSFER_DEGRADED = "196461000000101"

# (category, type) → Allergy and Intolerance Type value (SPEC §8.4.1 category + type row).
ALLERGY_TYPE: dict[tuple[str, str], tuple[str, str]] = {
    ("medication", "allergy"): ("416098002", "Allergy to drug"),
    ("medication", "intolerance"): ("59037007", "Drug intolerance"),
    ("medication", ""): ("419511003", "Propensity to adverse reactions to drug"),
    ("food", "allergy"): ("414285001", "Allergy to food"),
    ("food", "intolerance"): ("235719002", "Intolerance to food"),
    ("food", ""): ("418471000", "Propensity to adverse reactions to food"),
    ("environment", "allergy"): ("419199007", "Allergy to substance"),
    ("environment", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("environment", ""): ("418038007", "Propensity to adverse reactions to substance"),
    ("biologic", "allergy"): ("419199007", "Allergy to substance"),
    ("biologic", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("biologic", ""): ("418038007", "Propensity to adverse reactions to substance"),
    ("", "allergy"): ("419199007", "Allergy to substance"),
    ("", "intolerance"): ("418038007", "Propensity to adverse reactions to substance"),
    ("", ""): ("420134006", "Propensity to adverse reactions"),
}
CRITICALITY = {"low": ("CRITL", "low criticality"), "high": ("CRITH", "high criticality"),
               "unable-to-assess": ("CRITU", "unable to assess criticality")}
SEVERITY = {"mild": ("255604002", "Mild"), "moderate": ("6736007", "Moderate"), "severe": ("24484000", "Severe")}
NULL_FLAVOR_SYSTEM = "http://hl7.org/fhir/v3/NullFlavor"

HEADERS = ("Allergen", "Type", "Reaction", "Criticality", "Status", "Onset", "Recorded", "Ended", "Notes")


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    active_lists = section.use_lists(T.LIST_ALLERGIES)
    ended_lists = section.use_lists(T.LIST_ENDED_ALLERGIES)
    extra_lists = section.use_secondary_lists("allergies") + section.use_uncoded_lists("AllergyIntolerance")

    seen: set[int] = set()
    items: list[tuple[Resource, bool]] = []  # (allergy, known ended)
    for lists, ended in ((ended_lists, True), (active_lists, False), (extra_lists, False)):
        for lst in lists:
            for allergy in section.members(lst, "AllergyIntolerance"):
                if id(allergy) not in seen:
                    seen.add(id(allergy))
                    items.append((allergy, ended or _is_resolved(allergy)))
    items += [(allergy, _is_resolved(allergy)) for allergy in section.unlisted("AllergyIntolerance")]

    # Sensible order: current before ended, most recently recorded first.
    items.sort(key=lambda item: _sort_date(item[0]), reverse=True)
    items.sort(key=lambda item: item[1])
    table = section.table(HEADERS)
    ended_by_id = {id(allergy): ended for allergy, ended in items}
    section.convert_each(
        [allergy for allergy, _ in items],
        lambda allergy: AllergyConcernAct(section, table.row(), allergy, ended_by_id[id(allergy)]).build(),
    )


def _is_resolved(allergy: Resource) -> bool:
    return allergy.get("clinicalStatus") in ("resolved", "inactive")


def _sort_date(allergy: Resource) -> str:
    value = allergy.get("assertedDate") or allergy.get("onsetDateTime") or ""
    return value if isinstance(value, str) else ""


def _end(allergy: Resource) -> tuple[str | None, str | None]:
    """(endDate, reason) from Extension-CareConnect-GPC-AllergyIntoleranceEnd-1; spec says endReason, examples
    reasonEnded — read both (SPEC §7.4)."""
    end = extension(allergy, "AllergyIntoleranceEnd-1")
    if end is None:  # most allergies
        return None, None
    date = sub_extension(end, "endDate")
    reason = sub_extension(end, "endReason") or sub_extension(end, "reasonEnded")
    return (
        string(date.get("valueDateTime")) if date else None,
        string(reason.get("valueString")) if reason else None,
    )


# The fixed parts of the concern act and its observations, written as markup around the parts that vary.
_EVENT: Final = {"classCode": "OBS", "moodCode": "EVN"}
_CONCERN_HEAD: Final = start_tag("act", {"classCode": "ACT", "moodCode": "EVN"}) + template_markup(
    T.ALLERGY_CONCERN_ACT)
_CONCERN_CODE: Final = leaf_markup("code", fixed_code_attrs(T.CONCERN))
_CONCERN_SUBJECT: Final = start_tag("entryRelationship", {"typeCode": "SUBJ"})
_ACTIVE: Final = leaf_markup("statusCode", {"code": "active"})
_COMPLETED: Final = leaf_markup("statusCode", {"code": "completed"})
_OBSERVATION_HEAD: Final = start_tag("observation", _EVENT) + template_markup(T.ALLERGY_INTOLERANCE_OBSERVATION)
_NO_KNOWN_HEAD: Final = start_tag("observation", {**_EVENT, "negationInd": "true"}) + template_markup(
    T.ALLERGY_INTOLERANCE_OBSERVATION)
_ASSERTION_CODE: Final = leaf_markup("code", fixed_code_attrs(T.ASSERTION))
_AGENT_START: Final = (start_tag("participant", {"typeCode": "CSM"})
                       + start_tag("participantRole", {"classCode": "MANU"})
                       + start_tag("playingEntity", {"classCode": "MMAT"}))
_AGENT_END: Final = "</playingEntity></participantRole></participant>"
_NO_AGENT: Final = leaf_markup("code", {"nullFlavor": "NA"})
_REACTION_HEAD: Final = (start_tag("entryRelationship", {"typeCode": "MFST", "inversionInd": "true"})
                         + start_tag("observation", _EVENT) + template_markup(T.REACTION_OBSERVATION))


@memo()
def _value_markup(code: str, display: str) -> str:
    """The observation's value: an allergy type (from ``ALLERGY_TYPE`` or ``NO_KNOWN_ALLERGY``, a few: written
    once each)."""
    return snomed_markup("value", code, display, xsi_type="CD")


@memo()
def _criticality_markup(code: str, display: str) -> str:
    """A Criticality Observation (one per criticality: built once with the builders)."""
    relationship = element("entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"})
    crit = el(relationship, "observation", _EVENT)
    template_id(crit, T.CRITICALITY_OBSERVATION)
    fixed_code(crit, "code", T.CRITICALITY)
    leaf(crit, "statusCode", {"code": "completed"})
    fixed_code(crit, "value", T.FixedCode(code, T.CRITICALITY_OID, "HL7 Criticality", display), xsi_type="CD")
    return markup_of(relationship)


@memo()
def _severity_markup(code: str, display: str) -> str:
    """A Severity Observation (one per severity: built once with the builders)."""
    relationship = element("entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"})
    sev = el(relationship, "observation", _EVENT)
    template_id(sev, T.SEVERITY_OBSERVATION)
    fixed_code(sev, "code", T.SEVERITY)
    leaf(sev, "statusCode", {"code": "completed"})
    snomed(sev, "value", code, display, xsi_type="CD")
    return markup_of(relationship)


class AllergyConcernAct:
    """Allergy Concern Act (4.30) wrapping one Allergy-Intolerance Observation (4.7) for one AllergyIntolerance."""

    def __init__(self, section: SectionWriter, row: Row, allergy: Resource, ended: bool) -> None:
        self.section = section
        self.row = row
        self.allergy = allergy
        self.ended = ended
        self.end_date, self.end_reason = _end(allergy)
        self.agent_code = snomed_code(allergy.get("code"))
        self.no_known = NO_KNOWN_ALLERGY.get(self.agent_code or "")
        # The agent's CD and text, looked up once for the row and the participant ("no known allergy": no agent).
        self.agent = None if self.no_known else coded("code", allergy.get("code"))
        # Facts both the narrative row and the observation use, read once. The observation's value: the allergy
        # type (the category of a "no known allergy").
        self.value = self.no_known or self._allergy_type()
        self.criticality = CRITICALITY.get(str(allergy.get("criticality")))
        self.manifestations = self._manifestations()
        # The recorder at the asserted date: the concern act's author and the observation's.
        self.author = author_markup(section.index, allergy.get("recorder"), allergy.get("assertedDate")) or ""

    def build(self) -> None:
        """The concern act, joined at once from markup (nothing is added to it afterwards)."""
        agent_ref = self._narrative()
        state = self.section.state
        allergy = self.allergy
        # Concern time = when the concern was recorded; an ended concern SHALL have high (unknown → UNK).
        concern_time = ivl_ts_markup("effectiveTime", allergy.get("assertedDate"),
                                     self.end_date if self.ended else None, high_required=self.ended)
        observation = self._observation(agent_ref)
        fragment(self.section.entry(), "".join((
            _CONCERN_HEAD, state.ids_markup(allergy, "allergy-concern"), _CONCERN_CODE,
            _COMPLETED if self.ended else _ACTIVE, concern_time, self.author, _CONCERN_SUBJECT, observation,
            "</entryRelationship></act>")))
        self.section.mapped(allergy, T.ALLERGY_CONCERN_ACT)

    def _observation(self, agent_ref: str | None) -> str:
        """The Allergy-Intolerance Observation (inside the concern act's SUBJ entryRelationship)."""
        allergy = self.allergy
        parts = [
            _NO_KNOWN_HEAD if self.no_known else _OBSERVATION_HEAD,
            self.section.state.ids_markup(allergy),
            _ASSERTION_CODE,
            reference_markup(self.row.reference),
            _COMPLETED,
            ivl_ts_markup("effectiveTime", allergy.get("onsetDateTime"), self.end_date if self.ended else None,
                          high_required=self.ended),
            _value_markup(*self.value),
            self.author,
            _AGENT_START,
            # SPEC §8.3 rule 4: no agent for "no known allergy"
            _NO_AGENT if self.agent is None else self.agent.markup(agent_ref),
            _AGENT_END,
        ]
        if self.criticality is not None and not self.no_known:
            parts.append(_criticality_markup(*self.criticality))
        for position, (manifestation, severity, description) in enumerate(self.manifestations):
            parts.append(self._reaction(position, manifestation, severity, description))
        parts.append("</observation>")
        return "".join(parts)

    def _allergy_type(self) -> tuple[str, str]:
        categories = [c for c in as_list(self.allergy.get("category")) if isinstance(c, str)]
        category = categories[0] if categories else ""
        kind = self.allergy.get("type") if self.allergy.get("type") in ("allergy", "intolerance") else ""
        return ALLERGY_TYPE.get((category, str(kind)), ALLERGY_TYPE[("", str(kind))])

    def _manifestations(self) -> list[tuple[Mapping[str, Any], str | None, str | None]]:
        found = []
        for reaction in as_list(self.allergy.get("reaction")):
            if not isinstance(reaction, JSON_OBJECT):
                continue
            severity = reaction.get("severity") if isinstance(reaction.get("severity"), str) else None
            description = string(reaction.get("description"))
            for manifestation in as_list(reaction.get("manifestation")):
                if isinstance(manifestation, JSON_OBJECT):
                    found.append((manifestation, severity, description))
        return found

    def _reaction(self, position: int, manifestation: Mapping[str, Any], severity: str | None,
                  description: str | None) -> str:
        """A Reaction Observation (and its Severity Observation) in an ``entryRelationship MFST``."""
        parts = [_REACTION_HEAD, self.section.state.ids_markup(self.allergy, f"reaction-{position}"), _ASSERTION_CODE,
                 _COMPLETED]
        null_flavor = next((str(c.get("code")) for c in codings(manifestation)
                            if c.get("system") == NULL_FLAVOR_SYSTEM and c.get("code") in ("NI", "UNC", "ASKU",
                                                                                              "UNK")), None)
        if null_flavor is not None:
            # Manifestation sent as a nullFlavor (SPEC §7.4): keep the GP's description as originalText.
            attrib = {"nullFlavor": "UNK" if null_flavor == "UNC" else null_flavor, "xsi:type": "CD"}
            if description:
                parts.append(f"{start_tag('value', attrib)}{leaf_markup('originalText', text=description)}</value>")
            else:
                parts.append(leaf_markup("value", attrib))
        else:
            parts.append(cd_markup("value", manifestation, xsi_type="CD"))
        if severity in SEVERITY:
            parts.append(_severity_markup(*SEVERITY[severity]))
        parts.append("</observation></entryRelationship>")
        return "".join(parts)

    def _narrative(self) -> str | None:
        allergy = self.allergy
        row = self.row
        agent = (concept_text(allergy.get("code"), "Unspecified allergen") if self.agent is None
                 else self.agent.text("Unspecified allergen"))
        if self.agent_code == TRANSFER_DEGRADED:
            agent = f"{agent} (transfer-degraded record: the original coding was lost in a GP2GP transfer)"
        agent_ref = row.cell(agent, content="agent")
        row.cell("No known allergy (positive assertion)" if self.no_known else self.value[1])
        row.cell(self._reaction_lines())
        row.cell(self.criticality[1].capitalize() if self.criticality else "")
        row.cell("Ended" if self.ended else "Active")
        row.cell(readable_date(allergy.get("onsetDateTime")))
        recorded = readable_date(allergy.get("assertedDate"))
        recorder = author_label(self.section.index, allergy.get("recorder"))
        row.cell([recorded, recorder])
        if self.ended:
            row.cell([readable_date(self.end_date) or "Date not recorded", self.end_reason or ""])
        else:
            row.cell("")
        row.cell(self._note_lines())
        return agent_ref

    def _reaction_lines(self) -> list[str]:
        reactions = []
        for manifestation, severity, description in self.manifestations:
            text = concept_text(manifestation, description or "Unspecified reaction")
            reactions.append(f"{text} ({severity})" if severity else text)
        if not reactions:
            reactions = [d for r in as_list(self.allergy.get("reaction")) if isinstance(r, JSON_OBJECT)
                         if (d := string(r.get("description")))]
        return reactions

    def _note_lines(self) -> list[str]:
        allergy = self.allergy
        lines = [text for n in as_list(allergy.get("note")) if isinstance(n, JSON_OBJECT)
                 if isinstance(text := n.get("text"), str)]
        last = allergy.get("lastOccurrence")
        if isinstance(last, str):
            lines.append(f"Last occurrence: {readable_date(last)}")
        if self.section.is_confidential(allergy):
            lines.append("Not for disclosure to the patient (NOPAT)")
        return lines
