"""Allergies and adverse reactions (SPEC §8.4.1): Lists 886921000000105 (active) + 1103671000000101 (ended).

One AllergyIntolerance → one Allergy Concern Act → Allergy-Intolerance Observation (+ Criticality, Reaction and
Severity Observations). Resolved allergies (ended list, or clinicalStatus resolved/inactive) are never active
(LESSONS 21). "No known allergies" is a negated observation; an empty list with emptyReason is a nullFlavor
section (SPEC §8.3 nullFlavor rules 3 and 4; SCAL GPC-STR-TST-ALG-07/08).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, codings, concept_text, extension, readable_date, string, sub_extension
from xhuma.ccda.hl7 import cd, fixed_code, ivl_ts, snomed, snomed_code, text_reference
from xhuma.ccda.narrative import Row
from xhuma.ccda.participation import author_label, author_participation
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import Element, el, leaf

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
    date = sub_extension(end, "endDate")
    reason = sub_extension(end, "endReason") or sub_extension(end, "reasonEnded")
    return (
        string(date.get("valueDateTime")) if date else None,
        string(reason.get("valueString")) if reason else None,
    )


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

    def build(self) -> None:
        agent_ref = self._narrative()
        state = self.section.state
        allergy = self.allergy
        act = el(self.section.entry(), "act", {"classCode": "ACT", "moodCode": "EVN"})
        self.section.template(act, T.ALLERGY_CONCERN_ACT)
        self.section.add_ids(act, allergy, "allergy-concern")
        fixed_code(act, "code", T.CONCERN)
        leaf(act, "statusCode", {"code": "completed" if self.ended else "active"})
        # Concern time = when the concern was recorded; an ended concern SHALL have high (unknown → UNK).
        ivl_ts(act, "effectiveTime", allergy.get("assertedDate"), self.end_date if self.ended else None,
               high_required=self.ended)
        author_participation(act, state.index, allergy.get("recorder"), allergy.get("assertedDate"))
        observation = el(el(act, "entryRelationship", {"typeCode": "SUBJ"}), "observation",
                         {"classCode": "OBS", "moodCode": "EVN"})
        if self.no_known:
            observation.set("negationInd", "true")
        self._observation(observation, agent_ref)
        self.section.mapped(allergy, T.ALLERGY_CONCERN_ACT)

    def _observation(self, observation: Element, agent_ref: str | None) -> None:
        allergy = self.allergy
        self.section.template(observation, T.ALLERGY_INTOLERANCE_OBSERVATION)
        self.section.add_ids(observation, allergy)
        fixed_code(observation, "code", T.ASSERTION)
        text_reference(observation, self.row.reference)
        leaf(observation, "statusCode", {"code": "completed"})
        ivl_ts(observation, "effectiveTime", allergy.get("onsetDateTime"),
               self.end_date if self.ended else None, high_required=self.ended)
        if self.no_known:
            snomed(observation, "value", self.no_known[0], self.no_known[1], xsi_type="CD")
        else:
            code, display = self._allergy_type()
            snomed(observation, "value", code, display, xsi_type="CD")
        author_participation(observation, self.section.index, allergy.get("recorder"), allergy.get("assertedDate"))
        entity = el(el(el(observation, "participant", {"typeCode": "CSM"}), "participantRole",
                       {"classCode": "MANU"}), "playingEntity", {"classCode": "MMAT"})
        if self.no_known:
            leaf(entity, "code", {"nullFlavor": "NA"})  # SPEC §8.3 rule 4: no agent for "no known allergy"
        else:
            cd(entity, "code", allergy.get("code"), reference=agent_ref)
        criticality = CRITICALITY.get(str(allergy.get("criticality")))
        if criticality is not None and not self.no_known:
            crit = el(el(observation, "entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"}),
                      "observation", {"classCode": "OBS", "moodCode": "EVN"})
            self.section.template(crit, T.CRITICALITY_OBSERVATION)
            fixed_code(crit, "code", T.CRITICALITY)
            leaf(crit, "statusCode", {"code": "completed"})
            fixed_code(crit, "value", T.FixedCode(criticality[0], T.CRITICALITY_OID, "HL7 Criticality",
                                                  criticality[1]), xsi_type="CD")
        for position, (manifestation, severity, description) in enumerate(self._manifestations()):
            self._reaction(observation, position, manifestation, severity, description)

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

    def _reaction(self, observation: Element, position: int, manifestation: Mapping[str, Any],
                  severity: str | None, description: str | None) -> None:
        reaction = el(el(observation, "entryRelationship", {"typeCode": "MFST", "inversionInd": "true"}),
                      "observation", {"classCode": "OBS", "moodCode": "EVN"})
        self.section.template(reaction, T.REACTION_OBSERVATION)
        self.section.add_ids(reaction, self.allergy, f"reaction-{position}")
        fixed_code(reaction, "code", T.ASSERTION)
        leaf(reaction, "statusCode", {"code": "completed"})
        null_flavor = next((str(c.get("code")) for c in codings(manifestation)
                            if c.get("system") == NULL_FLAVOR_SYSTEM and c.get("code") in ("NI", "UNC", "ASKU",
                                                                                              "UNK")), None)
        if null_flavor is not None:
            # Manifestation sent as a nullFlavor (SPEC §7.4): keep the GP's description as originalText.
            value = el(reaction, "value", {"nullFlavor": "UNK" if null_flavor == "UNC" else null_flavor})
            value.set("{http://www.w3.org/2001/XMLSchema-instance}type", "CD")
            if description:
                leaf(value, "originalText", text=description)
        else:
            cd(reaction, "value", manifestation, xsi_type="CD")
        if severity in SEVERITY:
            sev = el(el(reaction, "entryRelationship", {"typeCode": "SUBJ", "inversionInd": "true"}),
                     "observation", {"classCode": "OBS", "moodCode": "EVN"})
            self.section.template(sev, T.SEVERITY_OBSERVATION)
            fixed_code(sev, "code", T.SEVERITY)
            leaf(sev, "statusCode", {"code": "completed"})
            snomed(sev, "value", SEVERITY[severity][0], SEVERITY[severity][1], xsi_type="CD")

    def _narrative(self) -> str | None:
        allergy = self.allergy
        row = self.row
        agent = concept_text(allergy.get("code"), "Unspecified allergen")
        if self.agent_code == TRANSFER_DEGRADED:
            agent = f"{agent} (transfer-degraded record: the original coding was lost in a GP2GP transfer)"
        agent_ref = row.cell(agent, content="agent")
        row.cell("No known allergy (positive assertion)" if self.no_known else self._allergy_type()[1])
        row.cell(self._reaction_lines())
        criticality = CRITICALITY.get(str(allergy.get("criticality")))
        row.cell(criticality[1].capitalize() if criticality else "")
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
        for manifestation, severity, description in self._manifestations():
            text = concept_text(manifestation, description or "Unspecified reaction")
            reactions.append(f"{text} ({severity})" if severity else text)
        if not reactions:
            reactions = [d for r in as_list(self.allergy.get("reaction")) if isinstance(r, JSON_OBJECT)
                         if (d := string(r.get("description")))]
        return reactions

    def _note_lines(self) -> list[str]:
        allergy = self.allergy
        notes = [n.get("text") for n in as_list(allergy.get("note")) if isinstance(n, JSON_OBJECT)]
        last = allergy.get("lastOccurrence")
        extra = [f"Last occurrence: {readable_date(last)}"] if isinstance(last, str) else []
        if self.section.is_confidential(allergy):
            extra.append("Not for disclosure to the patient (NOPAT)")
        return [str(n) for n in notes if isinstance(n, str)] + extra
