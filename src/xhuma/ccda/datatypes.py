"""HL7 V3 data types (II, CD, TS, IVL_TS, PQ) built as CDA elements from FHIR STU3 values.

Every string reaching the tree goes through ``xml_text`` (XML 1.0 forbids most control characters) and every
attribute constrained by the CDA schema (``cs`` codes, ``uid`` roots, ``ts`` values, ``real`` numbers) is checked
against the schema's lexical pattern before it is written, so malformed source data degrades to a nullFlavor
instead of producing a schema-invalid document (SPEC §8.3 nullFlavor rule 1).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Final, TypeAlias

from lxml import etree

from xhuma.ccda import templates as T

V3: Final = "urn:hl7-org:v3"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
SDTC: Final = "urn:hl7-org:sdtc"
NSMAP: Final = {None: V3, "xsi": XSI, "sdtc": SDTC}
XSI_TYPE: Final = f"{{{XSI}}}type"

Resource: TypeAlias = Mapping[str, Any]
# isinstance() against this tuple: parsed JSON objects are dicts, matched without the ABC machinery of Mapping.
JSON_OBJECT: Final = (dict, Mapping)

_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CS = re.compile(r"^[^\s]+$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_FHIR_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


# --- element building ------------------------------------------------------------------------------------------------
# A document has ~10^4 elements: building them as lxml elements (one C-level node, namespace lookup and attribute
# validation per call, and a subtree re-homing per ``append`` across documents) was most of the conversion time.
# Elements are therefore plain Python nodes, and leaves nothing changes afterwards are written at once as markup;
# the tree is serialised once at the end exactly as lxml serialises the same tree (``serialize``; golden files
# and a differential check against lxml's escaping keep the bytes identical). Attribute values are checked when
# set, with lxml's own check on the rare value that is not plainly printable, so invalid data fails at the same
# point as before (ValueError/TypeError inside the entry being converted).
_CLARK_OF: Final = {"xsi:type": XSI_TYPE}
_TEXT_SPECIAL = re.compile("[&<>\r]")


# Whether a value needs no escaping at all. isprintable() rejects every XML-forbidden character and \t \n \r; the
# rest is three or four substring tests, each a C-level scan cheaper than one regex search (these run for every
# narrative cell and most attribute values; ``markup`` and ``one_attr`` have the test inline).
def _plain_attr(value: str) -> bool:
    return value.isprintable() and "&" not in value and "<" not in value and ">" not in value and '"' not in value


class Node(list["Node | str"]):
    """One CDA element (``urn:hl7-org:v3`` namespace) under construction; the list holds its children. The subset
    of the lxml element API the builders use: ``set``, ``text``, ``append``, ``len``, identity equality and hashing
    (no ``tail``: mixed content is written as fragments). ``attrs`` is the attribute list as serialised. A ``str``
    child is markup already serialised (``fragment``): leaves nothing changes afterwards, narrative tables."""

    __slots__ = ("_text", "attrib", "attrs", "name")

    name: str
    attrib: Mapping[str, str] | None  # never mutated in place (callers may share constant dicts)
    attrs: str
    _text: str | None  # as written (``el`` stores xml_text output directly)

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    @property
    def text(self) -> str | None:
        return self._text

    @text.setter
    def text(self, value: str | None) -> None:
        """As lxml's ``.text =``: a str (TypeError otherwise) without XML-forbidden characters (ValueError)."""
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"Argument must be bytes or unicode, got {type(value).__name__!r}")
            if not value.isprintable():
                etree.Element("check").text = value  # raises if invalid
        self._text = value

    def set(self, key: str, value: str) -> None:
        attrib = dict(self.attrib) if self.attrib else {}
        attrib[_prefixed(key)] = value
        self.attrs = _attrs(attrib)
        self.attrib = attrib

    def unset(self, key: str) -> None:
        key = _prefixed(key)
        if self.attrib and key in self.attrib:
            attrib = {k: v for k, v in self.attrib.items() if k != key}
            self.attrs = _attrs(attrib) if attrib else ""
            self.attrib = attrib

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrib.get(_prefixed(key), default) if self.attrib else default


Element: TypeAlias = Node
_new = list.__new__


_RENDERED: dict[tuple[tuple[str, str], ...], str] = {}  # attribute sets already checked and serialised
_RENDERED_MAX: Final = 8192  # a cache, not state: emptied when full (most sets repeat: templateIds, codes)


def _attrs(attrib: Mapping[str, str]) -> str:
    """Serialised attributes, checked by lxml's rules: str values (TypeError otherwise), no XML-forbidden
    characters (ValueError, raised by lxml itself for the rare value that is not plainly printable). Memoised:
    for attribute sets that recur (templateIds, codes, class/mood codes, nullFlavors)."""
    memo_key = tuple(attrib.items())
    out = _RENDERED.get(memo_key)
    if out is None:
        out = unique_attrs(attrib)
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        _RENDERED[memo_key] = out
    return out


def one_attr(key: str, value: str) -> str:
    """``unique_attrs({key: value})`` for one plain (non-Clark) attribute name: narrative IDs and references,
    plainly safe in the common case."""
    if value.__class__ is str and value.isprintable() and "&" not in value and "<" not in value and ">" not in value \
            and '"' not in value:  # _plain_attr
        return f' {key}="{value}"'
    return unique_attrs({key: value})


def unique_attrs(attrib: Mapping[str, str]) -> str:
    """``_attrs`` without the memo, for values that do not recur (ids, references, narrative IDs)."""
    joined = "".join(attrib.values())  # TypeError for a non-string value, as lxml
    items: Iterable[tuple[str, str]] = attrib.items()
    if "{" in "".join(attrib):  # Clark names (lxml style) → prefixed names
        items = [(_prefixed(name), value) for name, value in items]
    out = ""
    if joined.isprintable():  # every XML-forbidden character, and \t \n \r, are non-printable
        if _plain_attr(joined):
            for key, value in items:
                out += f' {key}="{value}"'
            return out
    else:
        etree.Element("check", {_CLARK_OF.get(k, k): v for k, v in items})  # raises if invalid
    for key, value in items:
        out += f' {key}="{_escape_attr(value)}"'
    return out


def _prefixed(key: str) -> str:
    """``{namespace}local`` → ``prefix:local`` for the namespaces the document root declares."""
    if not key.startswith("{"):
        return key
    uri, _, local = key[1:].partition("}")
    for prefix, declared in NSMAP.items():
        if declared == uri and prefix:
            return f"{prefix}:{local}"
    raise ValueError(f"attribute namespace {uri} is not declared on the document root")


def element(name: str, attrib: Mapping[str, str] | None = None) -> Element:
    """A new element without a parent (entries, section components, the document root)."""
    node: Node = _new(Node)
    node.name = name
    node.attrib = attrib
    node.attrs = _attrs(attrib) if attrib else ""
    node._text = None
    return node


def fragment(parent: Element, xml: str) -> str:
    """Append already serialised, well-formed markup (escaped with ``escape_text`` / ``start_tag``)."""
    parent.append(xml)
    return xml


def leaf(parent: Element, name: str, attrib: Mapping[str, str] | None = None, text: object = None) -> str:
    """``el`` for an element nothing will change or add to (no children, no later ``set``): written at once."""
    xml = leaf_markup(name, attrib, text)
    parent.append(xml)
    return xml


def leaf_markup(name: str, attrib: Mapping[str, str] | None = None, text: object = None) -> str:
    """The markup ``leaf`` writes, without writing it (for a ``frame`` slot)."""
    head = f"<{name}{_attrs(attrib)}" if attrib else f"<{name}"
    return f"{head}/>" if text is None else f"{head}>{markup(text)}</{name}>"


def start_tag(name: str, attrib: Mapping[str, str] | None = None) -> str:
    """``<name attr="…">`` for a fragment (attributes checked as for ``el``)."""
    return f"<{name}{_attrs(attrib)}>" if attrib else f"<{name}>"


def _escape_attr(value: str) -> str:
    """As libxml2 escapes attribute values."""
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def markup(value: object) -> str:
    """``escape_text(xml_text(value))``: text content ready to write, in one pass for plainly safe text."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "&" not in text and "<" not in text and ">" not in text:  # _plain_attr, '"' allowed
        return text
    return escape_text(xml_text(text))


def escape_text(value: str) -> str:
    """As libxml2 escapes text content."""
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _write(node: Node, append: Callable[[str], None]) -> None:
    name = node.name
    text = node._text
    append(f"<{name}{node.attrs}>{escape_text(text)}" if text else f"<{name}{node.attrs}>")
    for child in node:
        if isinstance(child, str):
            append(child)
            continue
        if child:
            _write(child, append)
            continue
        text = child._text
        if text is None:
            append(f"<{child.name}{child.attrs}/>")
        else:
            append(f"<{child.name}{child.attrs}>{escape_text(text)}</{child.name}>")
    append(f"</{name}>")


def markup_of(node: Element) -> str:
    """One element (and its subtree) serialised as ``serialize`` writes it inside the document: for a subtree that
    recurs unchanged, built once with the builders and then written with ``fragment``."""
    if node:
        out: list[str] = []
        _write(node, out.append)
        return "".join(out)
    name, text = node.name, node._text
    return f"<{name}{node.attrs}/>" if text is None else f"<{name}{node.attrs}>{escape_text(text)}</{name}>"


def inner_markup(node: Element) -> str:
    """The children of ``node`` serialised as ``serialize`` writes them (without ``node``'s own tags): for a
    scratch element whose children are the variable part of a ``frame``."""
    out: list[str] = []
    _write(node, out.append)
    return "".join(out[1:-1])


# A marker child for ``frame``: where the variable part of an otherwise fixed structure goes.
SLOT: Final = "\x00slot"


def frame(node: Element) -> tuple[str, str]:
    """The markup of a structure built with the builders around one ``fragment(..., SLOT)``, split at that slot:
    fixed structures that differ only in one part (a narrative reference) are then written as
    ``head + part + tail`` instead of being rebuilt element by element for every entry."""
    out: list[str] = []
    _write(node, out.append)
    at = next(i for i, part in enumerate(out) if part is SLOT)
    return "".join(out[:at]), "".join(out[at + 1:])


def serialize(root: Element) -> bytes:
    """The document as lxml's ``tostring(root, xml_declaration=True, encoding="UTF-8")`` writes it, the root
    declaring ``NSMAP``."""
    declarations = "".join(f' xmlns:{prefix}="{uri}"' if prefix else f' xmlns="{uri}"' for prefix, uri in NSMAP.items())
    out: list[str] = ["<?xml version='1.0' encoding='UTF-8'?>\n"]  # one join for the whole document
    if root:
        _write(root, out.append)
    else:
        out.append(f"<{root.name}{root.attrs}/>")
    first = out[1]
    cut = len(root.name) + 1
    out[1] = first[:cut] + declarations + first[cut:]
    return _utf8(out)


def _utf8(parts: list[str]) -> bytes:
    """``"".join(parts).encode("utf-8")``, faster: one non-ASCII character (an en dash in a reference range, a
    pound sign) makes the whole joined document a two-byte-per-character string, which encodes about ten times
    slower than an ASCII one. The few non-ASCII parts (narrative tables, mostly) are encoded on their own and the
    ASCII runs between them joined and encoded as ASCII (a copy)."""
    ascii_flags = list(map(str.isascii, parts))
    chunks: list[bytes] = []
    start = 0
    while (at := _index(ascii_flags, False, start)) >= 0:
        chunks.append("".join(parts[start:at]).encode("utf-8"))
        chunks.append(parts[at].encode("utf-8"))
        start = at + 1
    chunks.append("".join(parts[start:]).encode("utf-8"))
    return b"".join(chunks)


def _index(items: list[bool], value: bool, start: int) -> int:
    try:
        return items.index(value, start)
    except ValueError:
        return -1


def tag(name: str) -> str:
    """Clark name of a CDA element."""
    return f"{{{V3}}}{name}"


def xml_text(value: object) -> str:
    """Text safe for XML 1.0: forbidden control characters removed."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # every XML-forbidden character is non-printable
        return text
    return _XML_FORBIDDEN.sub("", text)


def el(parent: Element, name: str, attrib: Mapping[str, str] | None = None, text: object = None) -> Element:
    child: Node = _new(Node)
    child.name = name
    child.attrib = attrib
    child.attrs = _attrs(attrib) if attrib else ""
    child._text = None if text is None else xml_text(text)
    parent.append(child)
    return child


def null(parent: Element, name: str, flavor: str = "UNK") -> Element:
    return el(parent, name, {"nullFlavor": flavor})


def set_xsi_type(element: Element, xsi_type: str) -> Element:
    element.set(XSI_TYPE, xsi_type)
    return element


def is_code(value: object) -> bool:
    """A CDA ``cs`` token: non-empty, no whitespace."""
    return isinstance(value, str) and bool(_CS.match(value))


def is_uid(value: object) -> bool:
    return isinstance(value, str) and bool(_OID.match(value) or _UUID.match(value))


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


# --- TS ----------------------------------------------------------------------------------------------------------
def fhir_ts(value: object) -> str | None:
    """FHIR date/dateTime/instant → HL7 TS, keeping precision (SPEC §8.3 dates): 2011-05 → 201105."""
    return _fhir_ts(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)  # the same dates recur across a record (a report and its results, issue and request)
def _fhir_ts(value: str) -> str | None:
    match = _FHIR_DATE.match(value.strip())
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


def fhir_datetime(value: object) -> datetime | None:
    """FHIR date/dateTime → aware datetime (partial dates to their first instant; no zone read as UTC)."""
    if not isinstance(value, str):
        return None
    match = _FHIR_DATE.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz: timezone = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            int(float(fraction) * 1_000_000) if fraction and len(fraction) > 1 else 0, tzinfo=tz,
        )
    except ValueError:
        return None


def hl7_ts(moment: datetime) -> str:
    """Aware datetime → TS to the second with zone offset (US Realm Date and Time, CONF:81-10128)."""
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def readable_date(value: object) -> str:
    """Clinically readable date for narrative: 07-May-2011, May-2011, 2011, or 07-May-2011 10:57."""
    return _readable_date(value) if isinstance(value, str) else ""


@lru_cache(maxsize=4096)
def _readable_date(value: str) -> str:
    match = _FHIR_DATE.match(value.strip())
    if match is None:
        return value
    year, month, day, hour, minute, *_ = match.groups()
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    if month is None or not 1 <= int(month) <= 12:
        return year
    name = months[int(month) - 1]
    if day is None:
        return f"{name}-{year}"
    text = f"{day}-{name}-{year}"
    if hour is not None and (hour, minute) != ("00", "00"):
        text += f" {hour}:{minute}"
    return text


def ts(parent: Element, name: str, value: object, null_flavor: str = "UNK") -> str:
    """A TS element from a FHIR date; missing or malformed → nullFlavor (SPEC §8.3 dates). Written as a
    serialised fragment, like the other leaf elements no builder changes afterwards (``ii``, ``text_reference``)."""
    return fragment(parent, ts_markup(name, value, null_flavor))


def ts_markup(name: str, value: object, null_flavor: str = "UNK") -> str:
    """The markup ``ts`` writes, without writing it."""
    converted = fhir_ts(value)
    if converted is None:
        return f"<{name}{_attrs({'nullFlavor': null_flavor})}/>"
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
    ts(interval, "low", low, low_null)
    if high is not None or high_required:
        ts(interval, "high", high, high_null)
    return interval


# --- II ----------------------------------------------------------------------------------------------------------
def ii(parent: Element, root: str, extension: object = None, name: str = "id") -> str:
    attrib = {"root": root}
    if extension is not None and str(extension).strip():
        attrib["extension"] = xml_text(str(extension).strip())
    return fragment(parent, f"<{name}{unique_attrs(attrib)}/>")


def identifier_ii(parent: Element, identifier: Mapping[str, Any], name: str = "id") -> str | None:
    """FHIR Identifier → II: known systems to their OID, UUID values as root, else uuid5 (SPEC §8.3)."""
    system = identifier.get("system")
    value = identifier.get("value")
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    oid = T.IDENTIFIER_SYSTEMS.get(system) if isinstance(system, str) else None
    if oid is not None:
        return ii(parent, oid, value, name)
    if len(value) == 36 and is_uuid(value):  # (stripped: no "uuid\n" for the pattern's ``$``) most are not
        return uid_ii(parent, value.lower(), name)
    return uid_ii(parent, derived_uuid(f"{system}|{value}"), name)


def uid_ii(parent: Element, uuid: str, name: str = "id") -> str:
    """``ii(parent, uuid)`` for a UUID made by ``derived_uuid`` or matched by ``is_uuid``: hex digits and dashes,
    nothing to check or escape (a document has hundreds of these ids)."""
    return fragment(parent, f'<{name} root="{uuid}"/>')


_NAMESPACE_BYTES: Final = T.XHUMA_ID_NAMESPACE.bytes


def derived_uuid(name: str) -> str:
    """``str(uuid.uuid5(T.XHUMA_ID_NAMESPACE, name))`` without the ``UUID`` object (thousands per document)."""
    h = hashlib.sha1(_NAMESPACE_BYTES + name.encode("utf-8"), usedforsecurity=False).hexdigest()
    # Version nibble 5; variant bits 10 in the top of byte 8 (RFC 4122).
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# --- CD ----------------------------------------------------------------------------------------------------------
def codings(concept: object) -> list[Mapping[str, Any]]:
    # ``is None`` first here and in the other accessors called with absent values: isinstance(None, Mapping)
    # goes through the ABC machinery, a Python-level call (thousands of absent values per document).
    if concept is None or not isinstance(concept, JSON_OBJECT):
        return []
    found = concept.get("coding")
    return [c for c in found if isinstance(c, JSON_OBJECT)] if isinstance(found, list) else []


def coding_display(coding: Mapping[str, Any]) -> str | None:
    """SNOMED DescriptionDisplay when present (the term the clinician chose), else display (SPEC §7.4)."""
    for extension in coding.get("extension") or ():
        if isinstance(extension, JSON_OBJECT) and extension.get("url") == T.EXT_SCT_DESCRIPTION:
            for part in extension.get("extension") or ():
                if isinstance(part, JSON_OBJECT) and part.get("url") == "descriptionDisplay":
                    text = part.get("valueString")
                    if isinstance(text, str) and text.strip():
                        return text.strip()
    display = coding.get("display")
    return display.strip() if isinstance(display, str) and display.strip() else None


def concept_text(concept: object, default: str = "") -> str:
    """The human-readable term of a CodeableConcept: DescriptionDisplay > text > display > code."""
    if concept is None or not isinstance(concept, JSON_OBJECT):
        return default
    all_codings = codings(concept)
    for coding in all_codings:
        if coding.get("system") == T.SNOMED_URI:
            display = coding_display(coding)
            if display:
                return display
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for coding in all_codings:
        display = coding_display(coding)
        if display:
            return display
    for coding in all_codings:
        if isinstance(coding.get("code"), str):
            return str(coding["code"])
    return default


def snomed_code(concept: object) -> str | None:
    for coding in codings(concept):
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
) -> Element:
    """FHIR CodeableConcept → CD (SPEC §8.3 codes).

    Primary code from the first SNOMED/LOINC coding; every other coding becomes a ``translation``; codings of
    systems without an OID keep their text in the translation's originalText. No usable primary coding →
    ``nullFlavor="OTH"`` (text known) or ``null_flavor`` (nothing known). ``reference`` points originalText at
    the narrative.
    """
    attrib, inner = _cd_parts(concept, reference, xsi_type, null_flavor, primary_systems)
    element = el(parent, name, attrib)
    if inner:
        fragment(element, inner)
    return element


def cd_leaf(
    parent: Element,
    name: str,
    concept: object,
    *,
    reference: str | None = None,
    xsi_type: str | None = None,
    null_flavor: str = "UNK",
    primary_systems: Iterable[str] = T.PRIMARY_SYSTEMS,
) -> str:
    """``cd`` for a code element nothing will change or add to: written at once as markup (as ``leaf`` is to
    ``el``), without an element node to build and serialise later (a record has hundreds of coded values)."""
    return fragment(parent, cd_markup(name, concept, reference=reference, xsi_type=xsi_type,
                                      null_flavor=null_flavor, primary_systems=primary_systems))


def cd_markup(
    name: str,
    concept: object,
    *,
    reference: str | None = None,
    xsi_type: str | None = None,
    null_flavor: str = "UNK",
    primary_systems: Iterable[str] = T.PRIMARY_SYSTEMS,
) -> str:
    """The markup ``cd_leaf`` writes, without writing it (for a ``frame`` slot)."""
    attrib, inner = _cd_parts(concept, reference, xsi_type, null_flavor, primary_systems)
    head = f"<{name}{_attrs(attrib)}"
    return f"{head}>{inner}</{name}>" if inner else f"{head}/>"


def _cd_parts(concept: object, reference: str | None, xsi_type: str | None, null_flavor: str,
              primary_systems: Iterable[str]) -> tuple[dict[str, str], str]:
    """The attributes of a CD element and its children's markup (``cd``)."""
    primary: dict[str, str] | None = None
    primary_index = -1
    allowed = primary_systems if isinstance(primary_systems, frozenset) else frozenset(primary_systems)
    all_codings = codings(concept)
    for index, coding in enumerate(all_codings):
        if coding.get("system") in allowed:
            primary = _code_attrs(coding)
            if primary is not None:
                primary_index = index
                break
    # The text is needed only for a nulled code or an originalText without a narrative reference: most coded
    # values have both a primary code and a reference, and skip it.
    text = concept_text(concept) if primary is None or not reference else ""
    if primary is None:
        primary = {"nullFlavor": "OTH" if (text or all_codings) else null_flavor}
    attrib = {**primary, "xsi:type": xsi_type} if xsi_type else primary
    parts: list[str] = []
    if reference:
        parts.append(f"<originalText><reference{one_attr('value', reference)}/></originalText>")
    elif text and "nullFlavor" in primary:
        parts.append(leaf_markup("originalText", text=text))
    for index, coding in enumerate(all_codings):
        if index == primary_index:
            continue
        translation = _code_attrs(coding)
        if translation is not None:
            parts.append(leaf_markup("translation", translation))
        elif coding.get("code") is not None or coding.get("display") is not None:
            # Unknown system: keep what the GP system said rather than drop it (issue 3: originalText).
            described = " ".join(str(coding.get(k)) for k in ("system", "code", "display") if coding.get(k))
            parts.append(f"<translation{_attrs(_OTH)}>{leaf_markup('originalText', text=described)}</translation>")
    return attrib, "".join(parts)


_OTH: Final = {"nullFlavor": "OTH"}


def fixed_code(parent: Element, name: str, code: T.FixedCode, *, xsi_type: str | None = None) -> Element:
    attrib = {"code": code.code, "codeSystem": code.system, "codeSystemName": code.system_name}
    if code.display:
        attrib["displayName"] = code.display
    if xsi_type:
        attrib["xsi:type"] = xsi_type  # as set_xsi_type would add it, last
    element = el(parent, name, attrib)
    return element


def snomed(parent: Element, name: str, code: str, display: str, *, xsi_type: str | None = None) -> Element:
    return fixed_code(parent, name, T.FixedCode(code, T.SNOMED_OID, "SNOMED CT", display), xsi_type=xsi_type)


def template_id(parent: Element, template: T.TemplateId) -> str:
    """templateId; versioned templates with an R1.1 ancestor also get the bare root (CONF:1198-32934).

    Written as one serialised fragment (a tenth of a document's elements are templateIds)."""
    xml = _TEMPLATE_XML.get(template)
    if xml is None:
        attribs = [{"root": template.root, "extension": template.extension}] if template.extension else []
        if not template.extension or template.r11:
            attribs.insert(0, {"root": template.root})
        xml = "".join(start_tag("templateId", attrib)[:-1] + "/>" for attrib in attribs)
        if len(_TEMPLATE_XML) >= 1024:
            _TEMPLATE_XML.clear()
        _TEMPLATE_XML[template] = xml
    return fragment(parent, xml)


_TEMPLATE_XML: dict[T.TemplateId, str] = {}  # a cache of serialised templateIds (the registry's constants)


def text_reference(parent: Element, reference: str, name: str = "text") -> str:
    """``<text><reference value="#row"/></text>``: ties an entry to its narrative row (LESSONS 27)."""
    return fragment(parent, reference_markup(reference, name))


def reference_markup(reference: str, name: str = "text") -> str:
    """The markup ``text_reference`` writes, without writing it (for a ``frame`` slot)."""
    return f"<{name}><reference{one_attr('value', reference)}/></{name}>"


# --- PQ ----------------------------------------------------------------------------------------------------------
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"


def pq(parent: Element, name: str, quantity: object, *, xsi_type: str | None = None) -> Element:
    """FHIR Quantity → PQ. Non-UCUM units keep the value as a translation with originalText (SPEC §8.3 rule 6)."""
    attrib, inner = _pq_parts(quantity, xsi_type)
    element = el(parent, name, attrib)
    if inner:
        fragment(element, inner)
    return element


def pq_leaf(parent: Element, name: str, quantity: object, *, xsi_type: str | None = None) -> str:
    """``pq`` for a quantity element nothing will change or add to: written at once as markup."""
    attrib, inner = _pq_parts(quantity, xsi_type)
    head = f"<{name}{_attrs(attrib)}"
    return fragment(parent, f"{head}>{inner}</{name}>" if inner else f"{head}/>")


def _pq_parts(quantity: object, xsi_type: str | None) -> tuple[dict[str, str], str]:
    """The attributes of a PQ element and its children's markup (``pq``)."""
    attrib: dict[str, str] = {}
    value = quantity.get("value") if isinstance(quantity, JSON_OBJECT) else None
    number = format_number(value)
    unit = None
    unit_text = None
    if isinstance(quantity, JSON_OBJECT):
        code = quantity.get("code")
        if quantity.get("system") == UCUM_SYSTEM and is_code(code):
            unit = str(code)
        unit_text = quantity.get("unit") or quantity.get("code")
        if unit is None and isinstance(unit_text, str) and unit_text.strip() in ("1", "%"):
            unit = unit_text.strip()
    if number is not None and (unit is not None or not unit_text):
        attrib["value"] = number
        if unit is not None:
            attrib["unit"] = unit
    elif number is not None:
        attrib["nullFlavor"] = "OTH"
    else:
        attrib["nullFlavor"] = "UNK"
    if xsi_type:
        attrib["xsi:type"] = xsi_type  # last, as set_xsi_type would add it
    if number is not None and "nullFlavor" in attrib:
        translation = _attrs({"value": number, "nullFlavor": "OTH"})
        return attrib, f"<translation{translation}>{leaf_markup('originalText', text=unit_text)}</translation>"
    return attrib, ""


def format_number(value: object) -> str | None:
    """A number as the CDA ``real`` lexical form, or None."""
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


# --- small FHIR accessors ------------------------------------------------------------------------------------------
def first(items: object) -> Any:
    if isinstance(items, list) and items:
        return items[0]
    return None


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (malformed input never raises AttributeError)."""
    return value if value is not None and isinstance(value, JSON_OBJECT) else {}


def json_object(value: object) -> Mapping[str, Any] | None:
    """``value`` if it is a JSON object, else None. For optional elements, mostly absent: ``None`` is answered
    without ``isinstance(None, Mapping)``, which goes through the ABC machinery (a Python-level call)."""
    return None if value is None or not isinstance(value, JSON_OBJECT) else value


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def extension(resource: Mapping[str, Any], url_suffix: str) -> Mapping[str, Any] | None:
    """The first extension whose url ends with ``url_suffix`` (GP Connect URLs vary in host between releases)."""
    for item in as_list(resource.get("extension")):
        if isinstance(item, JSON_OBJECT) and isinstance(item.get("url"), str) and item["url"].endswith(url_suffix):
            return item
    return None


def extensions(resource: Mapping[str, Any], *url_suffixes: str) -> list[Mapping[str, Any] | None]:
    """``[extension(resource, suffix) for suffix in url_suffixes]`` in one pass over the extensions (for a
    resource whose extensions are read for several facts)."""
    found: list[Mapping[str, Any] | None] = [None] * len(url_suffixes)
    for item in as_list(resource.get("extension")):
        if isinstance(item, JSON_OBJECT) and isinstance(url := item.get("url"), str):
            for at, suffix in enumerate(url_suffixes):
                if found[at] is None and url.endswith(suffix):
                    found[at] = item
    return found


def sub_extension_values(parent: Mapping[str, Any] | None, *wanted: tuple[str, str]) -> list[Any]:
    """``[(sub_extension(parent, url) or {}).get(key) for url, key in wanted]`` in one pass over the
    sub-extensions."""
    found: list[Mapping[str, Any] | None] = [None] * len(wanted)
    if parent is not None:
        for item in as_list(parent.get("extension")):
            if isinstance(item, JSON_OBJECT):
                url = item.get("url")
                for at, (name, _) in enumerate(wanted):
                    if found[at] is None and url == name:
                        found[at] = item
    return [None if item is None else item.get(key) for item, (_, key) in zip(found, wanted, strict=True)]


def sub_extension(parent: Mapping[str, Any] | None, url: str) -> Mapping[str, Any] | None:
    if parent is None:
        return None
    for item in as_list(parent.get("extension")):
        if isinstance(item, JSON_OBJECT) and item.get("url") == url:
            return item
    return None


def notes_text(resource: Mapping[str, Any], key: str = "note") -> list[str]:
    out = []
    for note in as_list(resource.get(key)):
        if isinstance(note, JSON_OBJECT) and isinstance(note.get("text"), str) and note["text"].strip():
            out.append(note["text"].strip())
    return out


def string(value: object) -> str | None:
    if isinstance(value, str) and (stripped := value.strip()):
        return stripped
    return None


def join(parts: Sequence[str | None], sep: str = "; ") -> str:
    return sep.join(p for p in parts if p)
