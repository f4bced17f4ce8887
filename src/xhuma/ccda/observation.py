"""Observations as every observation-based section writes them (results, vital signs, social history, other
entries): the value (PQ/IVL_PQ/CD/ST/BL/INT), its text, interpretation and reference ranges, the effective time. The
unit of a PQ is decided by ``ucum.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import JSON_OBJECT, as_list, coding_view, concept_text, json_object, readable_date, string
from xhuma.ccda.hl7 import cd_markup, format_number, is_code, number_pq_markup, pq_markup
from xhuma.ccda.narrative import lines_of
from xhuma.ccda.xmlwriter import Element, fragment, leaf_markup, start_tag

if TYPE_CHECKING:
    from xhuma.ccda.section import ConversionState

Resource = Mapping[str, Any]

INTERPRETATION_OID = "2.16.840.1.113883.5.83"


INTERPRETATION_SYSTEMS = frozenset({
    "http://hl7.org/fhir/v2/0078",
    "http://terminology.hl7.org/CodeSystem/v2-0078",
    "http://hl7.org/fhir/v3/ObservationInterpretation",
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
})


# --- values shared by every observation-based section -------------------------------------------------------------
def quantity_text(quantity: object) -> str:
    if quantity is None or not isinstance(quantity, JSON_OBJECT):
        return ""
    number = format_number(quantity.get("value"))
    if number is None:
        return ""
    unit = string(quantity.get("unit")) or string(quantity.get("code")) or ""
    comparator = quantity.get("comparator")  # absent from most quantities, like their extensions
    comparator = "" if comparator is None else string(comparator) or ""
    extensions = quantity.get("extension")
    approx = extensions is not None and any(
        isinstance(e, JSON_OBJECT) and str(e.get("url", "")).endswith("ValueApproximation-1")
        and e.get("valueBoolean") is True for e in as_list(extensions))
    return f"{'approx. ' if approx else ''}{comparator}{number}{' ' + unit if unit else ''}"


def value_text(observation: Resource) -> str:
    """The value of an Observation as the clinician should read it."""
    if "valueQuantity" in observation:
        return quantity_text(observation.get("valueQuantity"))
    if "valueCodeableConcept" in observation:
        return concept_text(observation.get("valueCodeableConcept"))
    if not has_value(observation):  # most group headers and free-text results: none of the types below
        return _absent_text(observation)
    for key in ("valueString", "valueTime", "valueDateTime"):
        if isinstance(observation.get(key), str):
            return " ".join(lines_of(observation[key])) if key == "valueString" else readable_date(observation[key])
    if isinstance(observation.get("valueBoolean"), bool):
        return "Yes" if observation["valueBoolean"] else "No"
    if isinstance(observation.get("valueInteger"), int):
        return str(observation["valueInteger"])
    # json_object: these are absent from most observations (None is answered without the Mapping ABC check).
    value_range = json_object(observation.get("valueRange"))
    if value_range is not None:
        return f"{quantity_text(value_range.get('low'))} – {quantity_text(value_range.get('high'))}"
    period = json_object(observation.get("valuePeriod"))
    if period is not None:
        return f"{readable_date(period.get('start'))} – {readable_date(period.get('end'))}"
    ratio = json_object(observation.get("valueRatio"))
    if ratio is not None:
        return f"{quantity_text(ratio.get('numerator'))} / {quantity_text(ratio.get('denominator'))}"
    return _absent_text(observation)


def _absent_text(observation: Resource) -> str:
    absent = observation.get("dataAbsentReason")
    if absent is not None and isinstance(absent, JSON_OBJECT):
        return f"No value ({concept_text(absent, 'reason not given')})"
    return ""


def has_value(observation: Resource) -> bool:
    """Whether the observation has any ``value[x]`` key. The two usual types are looked up; otherwise one scan of
    the joined keys answers "no" for most (no key contains "value"), and only the rest are tested one by one."""
    if "valueQuantity" in observation or "valueCodeableConcept" in observation:
        return True
    if "value" not in "\x00".join(observation):  # the separator is in no "value": a match is inside one key
        return False
    return any(key.startswith("value") for key in observation)


_COMPARATOR = {"<": ("high", "false"), "<=": ("high", "true"), ">": ("low", "false"), ">=": ("low", "true")}


_XSI_IVL_PQ: Final = {"xsi:type": "IVL_PQ"}


_XSI_ST: Final = {"xsi:type": "ST"}


_NO_VALUE: Final = {"nullFlavor": "NI", "xsi:type": "PQ"}


def write_value(parent: Element, observation: Resource, reference: str | None = None) -> str:
    """Write the observation's ``value`` (``value_markup``); returns its markup."""
    return fragment(parent, value_markup(observation, reference))


def value_markup(observation: Resource, reference: str | None = None) -> str:
    """Observation value[x] → CDA ``value`` markup (SPEC §8.4.5): PQ (UCUM; comparators as IVL_PQ), CD, ST, BL,
    INT, IVL_PQ for ranges; no value → ``PQ nullFlavor="NI"`` (value is SHALL) with the text in the narrative."""
    if not has_value(observation):  # the common case for group headers and free-text results
        return _NO_VALUE_MARKUP
    return _present_value_markup(observation, reference)


def _present_value_markup(observation: Resource, reference: str | None) -> str:
    """``value_markup`` of an observation that has a ``value[x]`` key (``has_value``)."""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, JSON_OBJECT):
        comparator = _COMPARATOR.get(str(quantity.get("comparator")))
        number = None if comparator is None else format_number(quantity.get("value"))
        if comparator is not None and number is not None:
            bound = number_pq_markup(comparator[0], number, quantity, inclusive=comparator[1])
            return f"{_IVL_PQ_START}{bound}</value>"
        return pq_markup("value", quantity, xsi_type="PQ")
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, JSON_OBJECT):
        return cd_markup("value", concept, reference=reference, xsi_type="CD")
    # xsi:type is given with the other attributes (written last, where set_xsi_type would add it).
    if isinstance(observation.get("valueBoolean"), bool):
        return leaf_markup("value", {"value": "true" if observation["valueBoolean"] else "false", "xsi:type": "BL"})
    if isinstance(observation.get("valueInteger"), int) and not isinstance(observation.get("valueInteger"), bool):
        return leaf_markup("value", {"value": str(observation["valueInteger"]), "xsi:type": "INT"})
    value_range = observation.get("valueRange")
    if isinstance(value_range, JSON_OBJECT):
        bounds = "".join(pq_markup(side, value_range[side]) for side in ("low", "high")
                         if isinstance(value_range.get(side), JSON_OBJECT))
        return f"{_IVL_PQ_START}{bounds}</value>" if bounds else leaf_markup("value", _XSI_IVL_PQ)
    text = value_text(observation)
    if text:
        return leaf_markup("value", _XSI_ST, text=text)
    return _NO_VALUE_MARKUP


def value_text_and_markup(observation: Resource) -> tuple[str, str]:
    """``(value_text(observation), value_markup(observation))`` with the value's presence tested once: a result's
    narrative cell and its entry's value (most results of a record have no value, only a code and a comment)."""
    if not has_value(observation):
        return _absent_text(observation), _NO_VALUE_MARKUP
    return value_text(observation), _present_value_markup(observation, None)


_IVL_PQ_START: Final = start_tag("value", _XSI_IVL_PQ)
_NO_VALUE_MARKUP: Final = leaf_markup("value", _NO_VALUE)


def interpretations(observation: Resource) -> list[tuple[str, str]]:
    """(HL7 ObservationInterpretation code, display) of FHIR interpretation codings."""
    concept = observation.get("interpretation")
    if concept is None:  # most observations
        return []
    found = []
    for coding in coding_view(concept):
        system = coding.get("system")  # (a str test first: a set lookup of an unhashable JSON value raises)
        if isinstance(system, str) and system in INTERPRETATION_SYSTEMS and is_code(coding.get("code")):
            found.append((str(coding["code"]), string(coding.get("display")) or str(coding["code"])))
    return found


def interpretation_text(observation: Resource) -> str:
    concept = observation.get("interpretation")
    return "" if concept is None else concept_text(concept, "")  # (None: most observations)


def range_text(observation: Resource) -> list[str]:
    ranges = observation.get("referenceRange")
    if not ranges:  # most results
        return []
    out = []
    unit = ""
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, JSON_OBJECT):
        unit = string(quantity.get("unit")) or ""
    for reference_range in as_list(ranges):
        if not isinstance(reference_range, JSON_OBJECT):
            continue
        text = string(reference_range.get("text"))
        low = quantity_text(reference_range.get("low")).removesuffix(f" {unit}") if unit else quantity_text(
            reference_range.get("low"))
        high = quantity_text(reference_range.get("high"))
        if not high.endswith(unit) and unit and high:
            high = f"{high} {unit}"
        if low or high:
            out.append(f"{low or '…'} – {high or '…'}".strip())
        if text:
            out.append(text)
    return out


def reference_ranges_markup(observation: Resource) -> str:
    """referenceRange/observationRange: IVL_PQ for low/high (unit of the result when the range has none), the
    text (and ST value) for textual ranges; observationRange SHALL have exactly one value (CONF:1198-32175).
    Written as markup ("" without ranges)."""
    ranges = observation.get("referenceRange")
    if not ranges:  # most results
        return ""
    result_quantity = observation.get("valueQuantity")
    result_unit = result_quantity if isinstance(result_quantity, JSON_OBJECT) else None
    written = ""
    for reference_range in as_list(ranges):  # (a loop: most results have one range, a comprehension costs a call)
        if isinstance(reference_range, JSON_OBJECT):
            written += _range_markup(reference_range, result_unit)
    return written


_UNIT_KEYS: Final = ("unit", "system", "code")


def _range_markup(reference_range: Resource, result_unit: Mapping[str, Any] | None) -> str:
    """One ``referenceRange`` ("" when it has neither bounds nor text); ``result_unit``: the result's Quantity
    (None when the result is not one), whose unit (system, code, unit) is that of bounds without one."""
    low, high = reference_range.get("low"), reference_range.get("high")
    text = string(reference_range.get("text"))
    if not (isinstance(low, JSON_OBJECT) or isinstance(high, JSON_OBJECT) or text):
        return ""
    bounds = ""
    for name, quantity in (("low", low), ("high", high)):  # each bound's number formatted once
        if isinstance(quantity, JSON_OBJECT):
            number = format_number(quantity.get("value"))
            if number is not None:
                if result_unit is not None and quantity.keys().isdisjoint(_UNIT_KEYS):
                    quantity = result_unit
                bounds += number_pq_markup(name, number, quantity)
    parts = ["<referenceRange><observationRange>"]
    if text or not bounds:
        parts.append(leaf_markup("text", text=text or ""))
    if bounds:
        parts += (_IVL_PQ_START, bounds, "</value>")
    else:
        parts.append(leaf_markup("value", _XSI_ST, text=text or ""))
    parts.append("</observationRange></referenceRange>")
    return "".join(parts)


def sct_codes(concept: object) -> list[str]:
    """SNOMED codes of a concept, whitespace-trimmed (some suppliers send ``" 86290005"``)."""
    return [str(c.get("code")).strip() for c in coding_view(concept)
            if c.get("system") == T.SNOMED_URI and isinstance(c.get("code"), str)]


def uncategorised_observations(state: ConversionState) -> list[Resource]:
    """Observations of uncategorised data: members of the uncategorised List(s), of the consultation topic
    and heading Lists (consultation content is uncategorised data too) and of the secondary Lists of uncategorised
    data (``problems-uncategorised-data-related-to-problems``: some records send their uncategorised data only
    there), de-duplicated, in bundle order of Lists. Unresolvable members are reported by uncategorised.py /
    notes.py, not here."""
    index = state.index
    seen: set[int] = set()
    found: list[Resource] = []
    secondary = [lst for lst in index.secondary_lists()
                 if any("-uncategorised-data-" in code for code in index.list_codes(lst))]
    lists = [*index.lists(T.LIST_UNCATEGORISED), *index.lists(T.LIST_TOPIC), *index.lists(T.LIST_HEADING),
             *secondary]
    for lst in lists:
        members, _ = index.list_members(lst)
        for member in members:
            if member.get("resourceType") == "Observation" and id(member) not in seen:
                seen.add(id(member))
                found.append(member)
    return found


def effective(observation: Resource) -> str | None:
    value = observation.get("effectiveDateTime")
    if isinstance(value, str):
        return value
    period = observation.get("effectivePeriod")
    if isinstance(period, JSON_OBJECT) and isinstance(period.get("start"), str):
        return str(period["start"])
    issued = observation.get("issued")
    return issued if isinstance(issued, str) else None
