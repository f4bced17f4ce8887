"""HL7 V3 data types (II, CD, TS, IVL_TS, PQ) written as CDA elements from FHIR STU3 values.

Every attribute constrained by the CDA schema (``cs`` codes, ``uid`` roots, ``ts`` values, ``real`` numbers) is checked
against the schema's lexical pattern before it is written, so malformed source data degrades to a nullFlavor instead
of producing a schema-invalid document (SPEC §8.3 nullFlavor rule 1).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from xhuma.ccda import templates as T
from xhuma.ccda.fhir import FHIR_DATE, JSON_OBJECT, coding_display, coding_view, concept_term
from xhuma.ccda.memo import memo, memo_dict
from xhuma.ccda.ucum import quantity_unit
from xhuma.ccda.xmlwriter import (
    Element,
    attrs_markup,
    el,
    fragment,
    leaf_markup,
    one_attr,
    start_tag,
    unique_attrs,
    xml_text,
)

_CS = re.compile(r"^[^\s]+$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def is_code(value: object) -> bool:
    """A CDA ``cs`` token: non-empty, no whitespace (most codes are letters and digits: no regex needed)."""
    return isinstance(value, str) and (value.isalnum() or bool(_CS.match(value)))


def is_uid(value: object) -> bool:
    return isinstance(value, str) and bool(_OID.match(value) or _UUID.match(value))


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


# --- TS ----------------------------------------------------------------------------------------------------------
def fhir_ts(value: object) -> str | None:
    """FHIR date/dateTime/instant → HL7 TS, keeping precision (SPEC §8.3 dates): 2011-05 → 201105."""
    return _fhir_ts(value) if isinstance(value, str) else None


@memo(maxsize=4096)  # the same dates recur across a record (a report and its results, issue and request)
def _fhir_ts(value: str) -> str | None:
    match = FHIR_DATE.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    out = year + (month or "") + (day or "")
    if hour is None:
        return out
    out += hour + minute
    if second is not None:
        out += second
        # The CDA ts pattern allows a fraction only after full seconds.
        if fraction and len(fraction) > 1:
            out += fraction
    if zone:
        out += "+0000" if zone == "Z" else zone.replace(":", "")
    return out


def hl7_ts(moment: datetime) -> str:
    """Aware datetime → TS to the second with zone offset (US Realm Date and Time, CONF:81-10128)."""
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def ts(parent: Element, name: str, value: object, null_flavor: str = "UNK") -> str:
    """A TS element from a FHIR date; missing or malformed → nullFlavor (SPEC §8.3 dates). Written as a
    serialised fragment, like the other leaf elements no builder changes afterwards (``ii``, ``text_reference``)."""
    return fragment(parent, ts_markup(name, value, null_flavor))


def ts_markup(name: str, value: object, null_flavor: str = "UNK") -> str:
    """The markup ``ts`` writes, without writing it."""
    converted = _fhir_ts(value) if isinstance(value, str) else None  # fhir_ts, without its call
    if converted is None:
        return f"<{name}{attrs_markup({'nullFlavor': null_flavor})}/>"
    return f'<{name} value="{converted}"/>'  # digits, '.', '+', '-' only


def ivl_ts(
    parent: Element,
    name: str,
    low: object,
    high: object = None,
    *,
    high_required: bool = False,
    low_null: str = "UNK",
    high_null: str = "UNK",
    xsi_type: str | None = None,
) -> Element:
    """IVL_TS with ``low`` (nullFlavor when unknown) and ``high`` when given or required."""
    interval = el(parent, name, {"xsi:type": xsi_type} if xsi_type else None)
    fragment(interval, _ivl_ts_bounds(low, high, high_required, low_null, high_null))
    return interval


def ivl_ts_markup(
    name: str,
    low: object,
    high: object = None,
    *,
    high_required: bool = False,
    low_null: str = "UNK",
    high_null: str = "UNK",
    xsi_type: str | None = None,
) -> str:
    """The markup ``ivl_ts`` writes, for an interval nothing is added to afterwards."""
    bounds = _ivl_ts_bounds(low, high, high_required, low_null, high_null)
    return f"{start_tag(name, {'xsi:type': xsi_type} if xsi_type else None)}{bounds}</{name}>"


def _ivl_ts_bounds(low: object, high: object, high_required: bool, low_null: str, high_null: str) -> str:
    if high is not None or high_required:
        return ts_markup("low", low, low_null) + ts_markup("high", high, high_null)
    return ts_markup("low", low, low_null)


# --- II ----------------------------------------------------------------------------------------------------------
def ii(parent: Element, root: str, extension: object = None, name: str = "id") -> str:
    return fragment(parent, ii_markup(root, extension, name))


def ii_markup(root: str, extension: object = None, name: str = "id") -> str:
    """The markup ``ii`` writes, without writing it."""
    attrib = {"root": root}
    if extension is not None and str(extension).strip():
        attrib["extension"] = xml_text(str(extension).strip())
    return f"<{name}{unique_attrs(attrib)}/>"


def identifier_ii(parent: Element, identifier: Mapping[str, Any], name: str = "id") -> str | None:
    """FHIR Identifier → II: known systems to their OID, UUID values as root, else uuid5 (SPEC §8.3)."""
    xml = identifier_markup(identifier, name)
    return None if xml is None else fragment(parent, xml)


def identifier_markup(identifier: Mapping[str, Any], name: str = "id") -> str | None:
    """The markup ``identifier_ii`` writes, without writing it (None: the identifier has no value)."""
    value = identifier.get("value")
    if not isinstance(value, str) or not (value := value.strip()):
        return None
    system = identifier.get("system")
    oid = T.IDENTIFIER_SYSTEMS.get(system) if isinstance(system, str) else None
    if oid is not None:
        return ii_markup(oid, value, name)
    if len(value) == 36 and is_uuid(value):  # (stripped: no "uuid\n" for the pattern's ``$``) most are not
        return uid_markup(value.lower(), name)
    return f'<{name} root="{derived_uuid(f"{system}|{value}")}"/>'  # uid_markup, without its call


def uid_ii(parent: Element, uuid: str, name: str = "id") -> str:
    """``ii(parent, uuid)`` for a UUID made by ``derived_uuid`` or matched by ``is_uuid``: hex digits and dashes,
    nothing to check or escape (a document has hundreds of these ids)."""
    return fragment(parent, uid_markup(uuid, name))


def uid_markup(uuid: str, name: str = "id") -> str:
    """The markup ``uid_ii`` writes, without writing it."""
    return f'<{name} root="{uuid}"/>'


# The SHA-1 state after the namespace bytes: each id copies it and hashes only its name.
_NAMESPACE_SHA1: Final = hashlib.sha1(T.XHUMA_ID_NAMESPACE.bytes, usedforsecurity=False)


def derived_uuid(name: str) -> str:
    """``str(uuid.uuid5(T.XHUMA_ID_NAMESPACE, name))`` without the ``UUID`` object (thousands per document)."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(name.encode())  # UTF-8 (the default: no encoding name to look up)
    h = sha1.hexdigest()
    # Version nibble 5; variant bits 10 in the top of byte 8 (RFC 4122).
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# --- CD ----------------------------------------------------------------------------------------------------------
def snomed_code(concept: object) -> str | None:
    for coding in coding_view(concept):
        if coding.get("system") == T.SNOMED_URI and is_code(coding.get("code")):
            return str(coding["code"])
    return None


def _code_attrs(coding: Mapping[str, Any]) -> dict[str, str] | None:
    system = coding.get("system")
    code = coding.get("code")
    if not is_code(code) or not isinstance(system, str):
        return None
    known = T.CODE_SYSTEMS.get(system)
    attrib = {"code": str(code)}
    if known is not None:
        attrib["codeSystem"] = known.oid
        attrib["codeSystemName"] = known.name
    elif is_uid(system.removeprefix("urn:oid:")):
        attrib["codeSystem"] = system.removeprefix("urn:oid:")
    else:
        return None
    display = coding_display(coding)
    if display:
        attrib["displayName"] = xml_text(display)
    return attrib


def cd(
    parent: Element,
    name: str,
    concept: object,
    *,
    reference: str | None = None,
    xsi_type: str | None = None,
    null_flavor: str = "UNK",
    primary_systems: Iterable[str] = T.PRIMARY_SYSTEMS,
    extra: str = "",
) -> str:
    """FHIR CodeableConcept → CD (SPEC §8.3 codes), written at once as markup.

    Primary code from the first SNOMED/LOINC coding; every other coding becomes a ``translation``; codings of
    systems without an OID keep their text in the translation's originalText. No usable primary coding →
    ``nullFlavor="OTH"`` (text known) or ``null_flavor`` (nothing known). ``reference`` points originalText at
    the narrative. ``extra`` is markup written after the translations (a fixed translation).
    """
    return fragment(parent, cd_markup(name, concept, reference=reference, xsi_type=xsi_type,
                                      null_flavor=null_flavor, primary_systems=primary_systems, extra=extra))


def cd_markup(
    name: str,
    concept: object,
    *,
    reference: str | None = None,
    xsi_type: str | None = None,
    null_flavor: str = "UNK",
    primary_systems: Iterable[str] = T.PRIMARY_SYSTEMS,
    extra: str = "",
) -> str:
    """The markup ``cd`` writes, without writing it (for a ``frame`` slot)."""
    return coded(name, concept, xsi_type=xsi_type, null_flavor=null_flavor, primary_systems=primary_systems,
                 extra=extra).markup(reference)


class Coded(NamedTuple):
    """A CD's markup in three parts (the start tag unclosed, the originalText written when there is no narrative
    reference, what follows originalText: translations, ``extra``) and its concept's text (``concept_term``)."""

    name: str
    head: str
    original: str
    tail: str
    term: str | None

    def text(self, default: str = "") -> str:
        """``concept_text`` of the concept: for its narrative cell."""
        return default if self.term is None else self.term

    def markup(self, reference: str | None = None) -> str:
        """The CD; ``reference`` points originalText at the narrative."""
        name = self.name
        if reference:
            return (f"{self.head}><originalText><reference{one_attr('value', reference)}/></originalText>"
                    f"{self.tail}</{name}>")
        inner = self.original + self.tail
        return f"{self.head}>{inner}</{name}>" if inner else f"{self.head}/>"


def coded(
    name: str,
    concept: object,
    *,
    xsi_type: str | None = None,
    null_flavor: str = "UNK",
    primary_systems: Iterable[str] = T.PRIMARY_SYSTEMS,
    extra: str = "",
) -> Coded:
    """A concept's CD and text looked up once (a narrative cell and its entry's CD read the same concept)."""
    allowed = primary_systems if isinstance(primary_systems, frozenset) else frozenset(primary_systems)
    all_codings = coding_view(concept)
    key = _concept_key(concept, all_codings)
    found = None if key is None else _CONCEPTS.get((name, xsi_type, null_flavor, allowed, extra, key))
    if found is None:
        term = concept_term(concept)
        found = Coded(name, *_cd_parts(name, concept, all_codings, term, xsi_type, null_flavor, allowed, extra),
                      term)
        if key is not None:
            if len(_CONCEPTS) >= _CONCEPTS_MAX:
                _CONCEPTS.clear()
            _CONCEPTS[name, xsi_type, null_flavor, allowed, extra, key] = found
    return found


# Concepts already written (a record repeats its codes: 86 distinct among 207 result codes in one sample), keyed
# by everything their markup reads, only when that is all plain text (see _concept_key).
_CONCEPTS: dict[tuple[Any, ...], Coded] = memo_dict({})
_CONCEPTS_MAX: Final = 4096  # a cache, not state: emptied when full


def _concept_key(concept: object, all_codings: Sequence[Mapping[str, Any]]) -> tuple[Any, ...] | None:
    """What ``_cd_parts`` reads of a concept (text; each coding's system, code, display and chosen display), or
    None when any of it is not a plain ``str`` or None (no key: 1, 1.0 and True are equal keys)."""
    text = concept.get("text") if concept is not None and isinstance(concept, JSON_OBJECT) else None
    key: tuple[Any, ...]
    if len(all_codings) == 1:  # most concepts: the key built at once, without a loop of tuple concatenations
        coding = all_codings[0]
        key = (text, coding.get("system"), coding.get("code"), coding.get("display"),
               coding_display(coding) if "extension" in coding else None)
    else:
        key = (text,)
        for coding in all_codings:
            # Without extensions the chosen display is the display's, already in the key (most codings have none).
            key += (coding.get("system"), coding.get("code"), coding.get("display"),
                    coding_display(coding) if "extension" in coding else None)
    for part in key:
        if part is not None and part.__class__ is not str:
            return None
    return key


def _cd_parts(
    name: str,
    concept: object,
    all_codings: Sequence[Mapping[str, Any]],
    term: str | None,
    xsi_type: str | None,
    null_flavor: str,
    allowed: frozenset[str],
    extra: str,
) -> tuple[str, str, str]:
    """A CD's markup in three parts: the start tag unclosed, the originalText written when there is no
    narrative reference, and what follows originalText (translations, ``extra``)."""
    primary: dict[str, str] | None = None
    primary_index = -1
    for index, coding in enumerate(all_codings):
        if coding.get("system") in allowed:
            primary = _code_attrs(coding)
            if primary is not None:
                primary_index = index
                break
    original = ""
    if primary is None:  # the text is needed only for a nulled code (its flavor and originalText)
        text = term or ""
        primary = {"nullFlavor": "OTH" if (text or all_codings) else null_flavor}
        if text:
            original = leaf_markup("originalText", text=text)
    head = f"<{name}{attrs_markup({**primary, 'xsi:type': xsi_type} if xsi_type else primary)}"
    tail = ""
    if len(all_codings) > 1 or primary_index < 0:  # translations: every coding but the primary one
        tail = "".join(_translation_markup(coding) for index, coding in enumerate(all_codings)
                       if index != primary_index)
    return head, original, tail + extra


def _translation_markup(coding: Mapping[str, Any]) -> str:
    """A coding other than the primary one as a ``translation`` ("" when it says nothing)."""
    translation = _code_attrs(coding)
    if translation is not None:
        return leaf_markup("translation", translation)
    if coding.get("code") is not None or coding.get("display") is not None:
        # Unknown system: keep what the GP system said rather than drop it (issue 3: originalText).
        described = " ".join(str(coding.get(k)) for k in ("system", "code", "display") if coding.get(k))
        original = leaf_markup("originalText", text=described)
        return f"<translation{attrs_markup(_OTH)}>{original}</translation>"
    return ""


_OTH: Final = {"nullFlavor": "OTH"}


def fixed_code(parent: Element, name: str, code: T.FixedCode, *, xsi_type: str | None = None) -> Element:
    return el(parent, name, fixed_code_attrs(code, xsi_type))


def fixed_code_attrs(code: T.FixedCode, xsi_type: str | None = None) -> dict[str, str]:
    """The attributes of a registry code (for ``leaf_markup`` where nothing is added inside)."""
    attrib = {"code": code.code, "codeSystem": code.system, "codeSystemName": code.system_name}
    if code.display:
        attrib["displayName"] = code.display
    if xsi_type:
        attrib["xsi:type"] = xsi_type  # as set_xsi_type would add it, last
    return attrib


def snomed(parent: Element, name: str, code: str, display: str, *, xsi_type: str | None = None) -> Element:
    return fixed_code(parent, name, T.FixedCode(code, T.SNOMED_OID, "SNOMED CT", display), xsi_type=xsi_type)


def snomed_markup(name: str, code: str, display: str, *, xsi_type: str | None = None) -> str:
    """The markup ``snomed`` writes, for an element nothing is added to."""
    return leaf_markup(name, fixed_code_attrs(T.FixedCode(code, T.SNOMED_OID, "SNOMED CT", display), xsi_type))


def template_id(parent: Element, template: T.TemplateId) -> str:
    """templateId; versioned templates with an R1.1 ancestor also get the bare root (CONF:1198-32934).

    Written as one serialised fragment (a tenth of a document's elements are templateIds)."""
    return fragment(parent, template_markup(template))


def template_markup(template: T.TemplateId) -> str:
    """The markup ``template_id`` writes, without writing it."""
    xml = _TEMPLATE_XML.get(template)
    if xml is None:
        attribs = [{"root": template.root, "extension": template.extension}] if template.extension else []
        if not template.extension or template.r11:
            attribs.insert(0, {"root": template.root})
        xml = "".join(start_tag("templateId", attrib)[:-1] + "/>" for attrib in attribs)
        if len(_TEMPLATE_XML) >= 1024:
            _TEMPLATE_XML.clear()
        _TEMPLATE_XML[template] = xml
    return xml


_TEMPLATE_XML: dict[T.TemplateId, str] = memo_dict({})  # a cache of serialised templateIds (the registry's constants)


def text_reference(parent: Element, reference: str, name: str = "text") -> str:
    """``<text><reference value="#row"/></text>``: ties an entry to its narrative row (LESSONS 27)."""
    return fragment(parent, reference_markup(reference, name))


def reference_markup(reference: str, name: str = "text") -> str:
    """The markup ``text_reference`` writes, without writing it (for a ``frame`` slot)."""
    return f"<{name}><reference{one_attr('value', reference)}/></{name}>"


# --- PQ ----------------------------------------------------------------------------------------------------------


def pq(parent: Element, name: str, quantity: object, *, xsi_type: str | None = None,
       inclusive: str | None = None) -> str:
    """FHIR Quantity → PQ, written at once as markup: the number always, the unit as UCUM (``ucum.py``), a unit
    text that has no UCUM form kept in ``translation/originalText``. ``inclusive``: the bound of an IVL_PQ."""
    return fragment(parent, pq_markup(name, quantity, xsi_type=xsi_type, inclusive=inclusive))


def pq_markup(name: str, quantity: object, *, xsi_type: str | None = None, inclusive: str | None = None) -> str:
    """The markup ``pq`` writes, without writing it."""
    attrs, inner = _UNKNOWN_QUANTITY, ""
    if isinstance(quantity, JSON_OBJECT):
        number = format_number(quantity.get("value"))
        if number is not None:
            attrs, inner = _pq_parts(number, quantity)
    if xsi_type:
        attrs += one_attr("xsi:type", xsi_type)  # after the value's, as set_xsi_type would add it
    if inclusive is not None:
        attrs += one_attr("inclusive", inclusive)
    return f"<{name}{attrs}>{inner}</{name}>" if inner else f"<{name}{attrs}/>"


def number_pq_markup(name: str, number: str, unit_of: Mapping[str, Any], *, inclusive: str | None = None) -> str:
    """``pq_markup`` of a Quantity whose value's ``format_number`` the caller already has (``number``, not None),
    with the unit of ``unit_of`` (a Quantity: only its system, code and unit are read, by ``ucum.quantity_unit``).
    For bounds: a reference range's bound in its result's unit, a comparator's bound."""
    attrs, inner = _pq_parts(number, unit_of)
    if inclusive is not None:
        attrs += one_attr("inclusive", inclusive)
    return f"<{name}{attrs}>{inner}</{name}>" if inner else f"<{name}{attrs}/>"


def _pq_parts(number: str, quantity: Mapping[str, Any]) -> tuple[str, str]:
    """The serialised value and unit attributes of a PQ whose value is ``number`` and its children's markup
    (``pq``); the unit by ``ucum.quantity_unit``. Written directly: each number is another attribute set."""
    attrs = f' value="{number}"'  # a CDA real: digits, sign, point, exponent (nothing to escape)
    unit = quantity_unit(quantity)
    if unit.code is not None:
        attrs += one_attr("unit", unit.code)
    if unit.original is None:
        return attrs, ""
    # The exact unit text beside its annotation (docs/mapping/results.md "Units").
    original = leaf_markup("originalText", text=unit.original)
    return attrs, f'<translation value="{number}" nullFlavor="OTH">{original}</translation>'


_UNKNOWN_QUANTITY: Final = attrs_markup({"nullFlavor": "UNK"})


def format_number(value: object) -> str | None:
    """A number as the CDA ``real`` lexical form, or None."""
    if type(value) is int:  # most numbers, answered first (bool, a subclass of int, is not of this type)
        return str(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = repr(value)
        return text if "e" not in text else f"{value:f}"
    if isinstance(value, str) and _REAL.match(value.strip()):
        return value.strip()
    return None
