"""The UCUM rule, in one place: which unit a PQ carries (SPEC §8.3 rule 6, docs/mapping/results.md "Units").

A FHIR Quantity's unit reaches the CDA ``PQ/@unit`` as UCUM (C-CDA R2.1 CONF:1198-31484: the unit SHALL come from
UCUM). In order:

1. ``system`` is UCUM and ``code`` is a code → that code;
2. the unit text (``code``, then ``unit``) is itself a well-formed UCUM expression → that expression;
3. the unit text is in ``NHS_UNITS`` (NHS pathology spellings, normalised: lower case, single spaces) → its UCUM;
4. otherwise the number is kept with a UCUM annotation of the text (``{IU/L_37C}``: an annotation alone is a valid
   UCUM unit, read as "1" by a calculator) and the exact text travels in ``translation/originalText``; the narrative
   shows the text as sent. Never ``nullFlavor`` when there is a number (issue 13: "a number is never lost").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from xhuma.ccda.memo import memo

UCUM_SYSTEM: Final = "http://unitsofmeasure.org"

_UCUM_ATOMS = frozenset({
    "m", "g", "s", "L", "l", "mol", "eq", "U", "[iU]", "[IU]", "Cel", "K", "%", "h", "min", "d", "wk", "mo", "a",
    "Pa", "mm[Hg]", "cm[H2O]", "kat", "[degF]", "osm", "[ppm]", "[ppb]", "[drp]", "10*", "10^", "[arb'U]", "[HPF]",
    "[LPF]", "Hz", "J", "cal", "W", "V", "A", "Ohm", "S", "t", "bar", "[pH]", "[in_i]", "[lb_av]", "[oz_av]",
})
_UCUM_PREFIXES = ("da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a", "z", "y")
_UCUM_COMPONENT = re.compile(r"^(?P<unit>[^{}\d+-]+|10\*|10\^)?(?P<exp>[+-]?\d+)?(?P<ann>\{[^{}]*\})?$")

# Unit texts of NHS pathology and GP systems that are not UCUM as sent → UCUM. Provenance and the reasoning for
# each row: docs/mapping/results.md ("Units"). Keys are normalised by ``_normalise`` (lower case, single spaces,
# "µ"/"μ" as "u"); "^" and "*" spellings are both listed.
NHS_UNITS: Final[Mapping[str, str]] = {
    # enzyme activities: UK laboratories write IU/L or U/L, some with the assay temperature (37C)
    "u/l": "U/L", "iu/l": "[IU]/L", "iu/l 37c": "[IU]/L", "iu/l at 37c": "[IU]/L", "u/l 37c": "U/L",
    "u/l at 37c": "U/L",
    "iu/ml": "[IU]/mL", "ku/l": "k[IU]/L", "kiu/l": "k[IU]/L", "miu/l": "m[IU]/L", "mu/l": "m[IU]/L",
    "miu/ml": "m[IU]/mL", "mu/ml": "m[IU]/mL", "uiu/ml": "u[IU]/mL", "iu/day": "[IU]/d", "iu": "[IU]",
    # cell counts
    "x10^9/l": "10*9/L", "10^9/l": "10*9/L", "x10*9/l": "10*9/L", "x 10^9/l": "10*9/L", "10e9/l": "10*9/L",
    "x10^12/l": "10*12/L", "10^12/l": "10*12/L", "x10*12/l": "10*12/L", "x 10^12/l": "10*12/L",
    "10e12/l": "10*12/L", "x10^6/l": "10*6/L", "10^6/l": "10*6/L",
    # concentrations written in another case or with the micro sign
    "mmol/l": "mmol/L", "umol/l": "umol/L", "nmol/l": "nmol/L", "pmol/l": "pmol/L", "mol/l": "mol/L",
    "g/l": "g/L", "mg/l": "mg/L", "ug/l": "ug/L", "ng/l": "ng/L", "ng/ml": "ng/mL", "ug/ml": "ug/mL",
    "mg/dl": "mg/dL", "g/dl": "g/dL", "mmol/mol": "mmol/mol", "mmol/mol hb": "mmol/mol", "mosm/kg": "mosm/kg",
    "ml/min": "mL/min", "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73m^2": "mL/min/{1.73_m2}",
    "ml/min/1.73 m2": "mL/min/{1.73_m2}", "ml/min/1.73sqm": "mL/min/{1.73_m2}", "fl": "fL", "pg": "pg",
    "l/l": "L/L", "ratio": "{ratio}", "mg/mmol": "mg/mmol", "g/24h": "g/d", "mmol/24h": "mmol/d",
    # time, pressure, temperature, flow, body measures
    "secs": "s", "sec": "s", "seconds": "s", "mins": "min", "minutes": "min", "hrs": "h", "hours": "h",
    "mmhg": "mm[Hg]", "mm hg": "mm[Hg]", "degc": "Cel", "deg c": "Cel", "°c": "Cel",
    "l/min": "L/min", "litres/min": "L/min", "kgs": "kg", "metres": "m", "cms": "cm", "bpm": "/min",
    "beats/min": "/min", "per minute": "/min", "breaths/min": "/min", "kg/m^2": "kg/m2", "kg/m²": "kg/m2",
    "gram": "g", "grams": "g", "gram(s)": "g", "milligram(s)": "mg", "microgram(s)": "ug", "litre(s)": "L",
    "millilitre": "mL", "millilitres": "mL", "millilitre(s)": "mL", "ml(s)": "mL", "mls": "mL",
    "percent": "%", "units/week": "{units}/wk", "units per week": "{units}/wk", "cigs/day": "{cigarettes}/d",
    "cigarettes/day": "{cigarettes}/d",
}


def is_ucum(unit: object) -> bool:
    """Whether ``unit`` is a well-formed UCUM expression (``.``/``/`` products of optionally prefixed common
    atoms with exponents, numeric factors and ``{annotations}``)."""
    return isinstance(unit, str) and _is_ucum(unit)


def _ucum_simple(unit: str) -> bool:
    if unit in _UCUM_ATOMS:
        return True
    return any(unit.startswith(p) and unit[len(p):] in _UCUM_ATOMS and unit[len(p):] not in ("10*", "10^")
               for p in _UCUM_PREFIXES)


@memo(maxsize=1024)  # a record repeats a few dozen units
def _is_ucum(unit: str) -> bool:
    if not unit or any(c.isspace() for c in unit) or "(" in unit:
        return False
    for component in re.split(r"[./](?![^{]*\})", unit[1:] if unit.startswith("/") else unit):
        if component.isdigit():
            continue
        match = _UCUM_COMPONENT.match(component)
        if match is None or not (match.group("unit") or match.group("ann")):
            return False
        if match.group("unit") and not _ucum_simple(match.group("unit")):
            return False
    return True


def _normalise(text: str) -> str:
    return " ".join(text.replace("µ", "u").replace("μ", "u").lower().split())


def to_ucum(text: str) -> str | None:
    """The UCUM form of a unit text (rules 2 and 3), or None."""
    stripped = text.strip()
    if is_ucum(stripped):
        return stripped
    return NHS_UNITS.get(_normalise(stripped))


def annotation(text: str) -> str:
    """Rule 4: a UCUM annotation carrying the unit text (ASCII 33-126 without braces; spaces as ``_``)."""
    spaced = "_".join(text.replace("µ", "u").replace("μ", "u").split())
    kept = "".join(c if 33 <= ord(c) <= 126 and c not in "{}" else "_" for c in spaced)
    return "{" + kept + "}"


class Unit:
    """What a Quantity's unit becomes: ``code`` for PQ/@unit (None: no unit), ``original`` the text to keep in
    ``translation/originalText`` when the code is only an annotation of it."""

    __slots__ = ("code", "original")

    def __init__(self, code: str | None, original: str | None = None) -> None:
        self.code = code
        self.original = original


def quantity_unit(quantity: Mapping[str, Any]) -> Unit:
    """The unit of a Quantity (rules 1-4), from its ``system``, ``code`` and ``unit``."""
    system, code, unit = quantity.get("system"), quantity.get("code"), quantity.get("unit")
    if (system is None or system.__class__ is str) and (code is None or code.__class__ is str) \
            and (unit is None or unit.__class__ is str):
        return _text_unit(system, code, unit)  # the usual Quantity: memoised
    return _unit(system, code, unit)


def _unit(system: object, code: object, unit: object) -> Unit:
    if system == UCUM_SYSTEM and isinstance(code, str) and code and _no_whitespace(code):
        return Unit(code)
    # A code of another system (a SNOMED unit concept such as 428673006 |tablet|) is not a unit text: its
    # ``unit`` is. A bare number is valid UCUM (a factor), so the system decides, not the code's form.
    own_code = code if system in (None, UCUM_SYSTEM) else None
    text = own_code if is_ucum(own_code) else unit or own_code
    if not isinstance(text, str) or not text.strip():
        return Unit(None)
    mapped = to_ucum(text)
    if mapped is not None:
        return Unit(mapped)
    return Unit(annotation(text), text.strip())


# ``_unit`` for Quantities whose system, code and unit are texts (or absent): a record repeats a few dozen units.
# (Texts only: other JSON values could be equal without being alike, 1 == 1.0 == True.) Units are never changed.
_text_unit = memo(maxsize=1024)(_unit)


def _no_whitespace(text: str) -> bool:
    """No whitespace character in ``text``. The space is the only printable one, so most texts are answered
    without a per-character loop."""
    return (text.isprintable() and " " not in text) or not any(c.isspace() for c in text)


def dose_unit(quantity: Mapping[str, Any]) -> str | None:
    """The unit of a dose (``doseQuantity``): UCUM as sent, or a unit text with a UCUM form (rules 1–3); a countable
    form ("tablet", SNOMED 428673006) has none — C-CDA carries a countable dose without a unit, the form being the
    product's (CONF:1098-7526)."""
    unit = quantity_unit(quantity)
    return unit.code if unit.code is not None and unit.original is None else None
