"""Vital signs (SPEC §8.4.6): picked from uncategorised data by a curated SNOMED code list.

GP Connect has no vital-signs area. Observations of the uncategorised-data List (826501000000100) and of the
consultation topic/heading Lists whose code is a curated vital-sign code (or a blood-pressure panel with
systolic/diastolic ``component``s) become Vital Sign Observations (4.27, LOINC code + the GP's SNOMED code as
translation, PQ value with a UCUM unit), grouped by effective time into Vital Signs Organizers (4.26).
They are then not repeated in "Other GP record entries" (uncategorised.py skips what this section converted).
A reading whose unit cannot be expressed in UCUM, or which has no value, is shown as a row of this section
only, with a report warning. The code list must be verified against the terminology server (SPEC §8.4.6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, coding_display, codings, concept_text, readable_date, string
from xhuma.ccda.hl7 import fhir_ts, fixed_code, format_number, is_code, text_reference, ts
from xhuma.ccda.narrative import NarrativeTable, lines_of
from xhuma.ccda.observation import (
    INTERPRETATION_OID,
    effective,
    interpretation_text,
    interpretations,
    sct_codes,
    uncategorised_observations,
)
from xhuma.ccda.participation import author_label
from xhuma.ccda.section import ConversionState, SectionWriter
from xhuma.ccda.xmlwriter import Element, el, leaf, set_xsi_type, xml_text

Resource = Mapping[str, Any]
SPEC = T.SECTION_SPECS["vital_signs"]


class VitalKind(NamedTuple):
    loinc: str
    display: str
    ucum: str
    units: frozenset[str]  # accepted source unit spellings (lower case) → ``ucum``


_MMHG = frozenset({"mm[hg]", "mmhg", "mm hg", "millimeter of mercury", "millimetres of mercury"})
_PER_MIN = frozenset({"/min", "per minute", "{beats}/min", "{beat}/min", "{resps}/min", "{breaths}/min",
                      "beats/min", "bpm", "beats per minute", "breaths/min", "breaths per minute", "/minute",
                      "1/min", "min-1", "{h.b.}/min"})
SYSTOLIC = VitalKind("8480-6", "Systolic blood pressure", "mm[Hg]", _MMHG)
DIASTOLIC = VitalKind("8462-4", "Diastolic blood pressure", "mm[Hg]", _MMHG)
WEIGHT = VitalKind("29463-7", "Body weight", "kg", frozenset({"kg", "kgs", "kilogram", "kilograms"}))
HEIGHT = VitalKind("8302-2", "Body height", "cm", frozenset({"cm", "centimetre", "centimetres", "centimeter"}))
HEIGHT_M = VitalKind("8302-2", "Body height", "m", frozenset({"m", "metre", "metres", "meter", "meters"}))
BMI = VitalKind("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2",
                frozenset({"kg/m2", "kg/m^2", "kg/m²", "kg/(m^2)", "kg/sq m"}))
HEART_RATE = VitalKind("8867-4", "Heart rate", "/min", _PER_MIN)
RESPIRATORY_RATE = VitalKind("9279-1", "Respiratory rate", "/min", _PER_MIN)
TEMPERATURE = VitalKind("8310-5", "Body temperature", "Cel",
                        frozenset({"cel", "c", "°c", "degc", "deg c", "degrees c", "degrees celsius", "celsius"}))
SPO2 = VitalKind("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%",
                 frozenset({"%", "percent", "%{oxygen}"}))
HEAD_CIRCUMFERENCE = VitalKind("9843-4", "Head Occipital-frontal circumference", "cm",
                               frozenset({"cm", "centimetre", "centimetres"}))
PEAK_FLOW = VitalKind("33452-4", "Maximum expiratory gas flow Respiratory system airway", "L/min",
                      frozenset({"l/min", "litres/min", "liters/min", "litre/min", "l/minute", "litres per minute"}))

# GP SNOMED code → vital sign (SPEC §8.4.6 table, plus the codes seen in GP Connect examples: 703421000
# Temperature, 1097811000000106 SpO2 on room air at rest, 163030003/163031004 O/E systolic/diastolic reading; and
# issue 13: standing height, peak flow, a pulse finding carrying the rate).
VITAL_CODES: dict[str, VitalKind] = {
    **dict.fromkeys(("271649006", "72313002", "400974009", "407554009", "407556006", "163030003"), SYSTOLIC),
    **dict.fromkeys(("271650006", "1091811000000102", "400975005", "407555005", "407557002", "163031004"),
                    DIASTOLIC),
    "27113001": WEIGHT,
    "50373000": HEIGHT,
    "248333004": HEIGHT,  # Standing height
    "18491006": PEAK_FLOW,  # Peak expiratory flow rate
    "271637005": HEART_RATE,  # Pulse irregularly irregular: GP systems record the pulse rate as its value
    "60621009": BMI,
    "364075005": HEART_RATE,
    "78564009": HEART_RATE,
    "86290005": RESPIRATORY_RATE,
    "386725007": TEMPERATURE,
    "703421000": TEMPERATURE,
    "431314004": SPO2,
    "103228002": SPO2,
    "1097811000000106": SPO2,
    "363812007": HEAD_CIRCUMFERENCE,
}
# Blood-pressure panels whose values are in ``component`` (SPEC §7.4).
BP_PANELS = frozenset({"163020007", "386534000", "75367002", "163034007", "163035008", "163033001"})
VITAL_SIGNS = T.FixedCode("46680005", T.SNOMED_OID, "SNOMED CT", "Vital signs")
VITAL_SIGNS_PANEL = T.FixedCode("74728-7", T.LOINC_OID, "LOINC",
                                "Vital signs, weight, height, head circumference, oximetry, BMI, and BSA panel")
HEADERS = ("Date", "Vital sign", "Value", "Interpretation / comments", "Recorded by")


def vital_kind(concept: object) -> VitalKind | None:
    return next((VITAL_CODES[c] for c in sct_codes(concept) if c in VITAL_CODES), None)


def is_bp_panel(observation: Resource) -> bool:
    return any(c in BP_PANELS for c in sct_codes(observation.get("code"))) and bool(
        as_list(observation.get("component")))


def is_vital_sign(observation: Resource) -> bool:
    """Whether the observation is converted by this section (a curated code or a BP panel with components)."""
    return vital_kind(observation.get("code")) is not None or is_bp_panel(observation)


def ucum_unit(kind: VitalKind, quantity: Mapping[str, Any]) -> str | None:
    """The UCUM unit of a reading, or None when its unit is not one this vital sign may carry."""
    candidates = [quantity.get("code"), quantity.get("unit")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip().lower() in kind.units:
            return kind.ucum
    return None


class Reading(NamedTuple):
    source: Resource  # the Observation (a panel for BP components)
    concept: object  # the code of the reading (the component code for BP)
    kind: VitalKind | None
    value: Mapping[str, Any] | None  # the Quantity, if any
    holder: Mapping[str, Any]  # where value/dataAbsentReason/interpretation live (observation or component)
    position: int  # component index, -1 for the observation itself


def readings(observation: Resource) -> list[Reading]:
    if is_bp_panel(observation):
        out = []
        for position, component in enumerate(as_list(observation.get("component"))):
            if isinstance(component, JSON_OBJECT):
                quantity = component.get("valueQuantity")
                out.append(Reading(observation, component.get("code"), vital_kind(component.get("code")),
                                   quantity if isinstance(quantity, JSON_OBJECT) else None, component, position))
        return out
    quantity = observation.get("valueQuantity")
    return [Reading(observation, observation.get("code"), vital_kind(observation.get("code")),
                    quantity if isinstance(quantity, JSON_OBJECT) else None, observation, -1)]


def build(state: ConversionState) -> None:
    section = state.section(SPEC)
    section.use_lists(T.LIST_UNCATEGORISED)
    vitals = [o for o in uncategorised_observations(state) if is_vital_sign(o)]
    vitals.sort(key=lambda o: fhir_ts(effective(o)) or "", reverse=True)  # most recent first
    table = section.table(HEADERS)
    organizers: dict[str, Element] = {}
    section.convert_each(vitals, lambda o: VitalSign(section, table, organizers, o).build())


class VitalSign:
    """All readings of one source Observation, added to the organizer of their effective time."""

    def __init__(self, section: SectionWriter, table: NarrativeTable, organizers: dict[str, Element],
                 observation: Resource) -> None:
        self.section = section
        self.table = table
        self.organizers = organizers
        self.observation = observation
        self.when = effective(observation)

    def build(self) -> None:
        converted = 0
        problems: list[str] = []
        for reading in readings(self.observation):
            unit = ucum_unit(reading.kind, reading.value) if reading.kind and reading.value else None
            number = format_number(reading.value.get("value")) if reading.value else None
            row = self._row(reading)
            if reading.kind is None or number is None or unit is None:
                why = ("not a recognised vital-sign component" if reading.kind is None
                       else "no value recorded" if number is None
                       else f"unit '{string(reading.value.get('unit') if reading.value else None) or ''}' "
                            "is not a UCUM unit for this vital sign")
                problems.append(why)
                continue
            self._observation(reading, number, unit, row.reference)
            converted += 1
        if converted:
            self.section.mapped(self.observation, T.VITAL_SIGN_OBSERVATION)
        else:
            self.section.narrative_only(self.observation, "vital sign without a convertible value: "
                                        + "; ".join(problems))
        for why in problems:
            self.section.warn("vital-sign-not-structured", f"vital sign shown as text only: {why}",
                              self.observation)

    def _row(self, reading: Reading) -> Any:
        row = self.table.row()
        row.cell(readable_date(self.when))
        label = concept_text(reading.concept, reading.kind.display if reading.kind else "Vital sign")
        if reading.position >= 0:
            label = f"{concept_text(self.observation.get('code'), 'Blood pressure')}: {label}"
        row.cell(label, content="code")
        quantity_text = ""
        if reading.value is not None and format_number(reading.value.get("value")) is not None:
            unit = string(reading.value.get("unit")) or string(reading.value.get("code")) or ""
            quantity_text = f"{format_number(reading.value.get('value'))} {unit}".strip()
        elif isinstance(reading.holder.get("dataAbsentReason"), JSON_OBJECT):
            quantity_text = f"Not recorded ({concept_text(reading.holder['dataAbsentReason'])})"
        row.cell(quantity_text)
        remarks = [interpretation_text(reading.holder), *lines_of(string(self.observation.get("comment")))]
        if self.section.is_confidential(self.observation):
            remarks.append("Not for disclosure to the patient (NOPAT)")
        row.cell(remarks)
        row.cell([author_label(self.section.index, p) for p in as_list(self.observation.get("performer"))])
        return row

    def _organizer(self) -> Element:
        key = fhir_ts(self.when) or "unknown"
        organizer = self.organizers.get(key)
        if organizer is not None:
            return organizer
        state = self.section.state
        organizer = el(self.section.entry(), "organizer", {"classCode": "CLUSTER", "moodCode": "EVN"})
        self.section.template(organizer, T.VITAL_SIGNS_ORGANIZER)
        leaf(organizer, "id", {"root": state.derived_id("vital-signs", key, state.resource_seed(self.observation))})
        code = fixed_code(organizer, "code", VITAL_SIGNS)
        fixed_code(code, "translation", VITAL_SIGNS_PANEL)
        leaf(organizer, "statusCode", {"code": "completed"})
        ts(organizer, "effectiveTime", self.when)
        self.organizers[key] = organizer
        return organizer

    def _observation(self, reading: Reading, number: str, unit: str, reference: str) -> None:
        kind = reading.kind
        assert kind is not None
        observation = el(el(self._organizer(), "component"), "observation", {"classCode": "OBS", "moodCode": "EVN"})
        self.section.template(observation, T.VITAL_SIGN_OBSERVATION)
        if reading.position >= 0:
            self.section.add_ids(observation, self.observation, f"component-{reading.position}")
        else:
            self.section.add_ids(observation, self.observation)
        code = el(observation, "code", {"code": kind.loinc, "codeSystem": T.LOINC_OID, "codeSystemName": "LOINC",
                                        "displayName": kind.display})
        leaf(el(code, "originalText"), "reference", {"value": f"{reference}-code"})
        _translations(code, codings(reading.concept))
        text_reference(observation, reference)
        leaf(observation, "statusCode", {"code": "completed"})
        ts(observation, "effectiveTime", self.when)
        set_xsi_type(el(observation, "value", {"value": number, "unit": unit}), "PQ")
        for code_value, display in interpretations(reading.holder):
            leaf(observation, "interpretationCode", {"code": code_value, "codeSystem": INTERPRETATION_OID,
                                                   "displayName": display})


def _translations(code: Element, source: Iterable[Mapping[str, Any]]) -> None:
    """The GP's own codings as translations of the LOINC code (SNOMED first: SPEC §8.4.6)."""
    for coding in source:
        system = T.CODE_SYSTEMS.get(str(coding.get("system")))
        value = coding.get("code")
        value = value.strip() if isinstance(value, str) else value
        if system is None or not is_code(value):
            continue
        attrib = {"code": str(value), "codeSystem": system.oid, "codeSystemName": system.name}
        display = coding_display(coding)
        if display:
            attrib["displayName"] = xml_text(display)
        leaf(code, "translation", attrib)
