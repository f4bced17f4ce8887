"""The CDA XML writer: light element nodes and their serialisation, exactly as lxml writes the same tree.

Every string reaching the tree goes through ``xml_text`` (XML 1.0 forbids most control characters); attribute values
are checked by lxml's rules when they are set, so invalid data fails inside the entry being converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeAlias

from lxml import etree

from xhuma.ccda.memo import memo_dict

V3: Final = "urn:hl7-org:v3"
XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
SDTC: Final = "urn:hl7-org:sdtc"
NSMAP: Final = {None: V3, "xsi": XSI, "sdtc": SDTC}
XSI_TYPE: Final = f"{{{XSI}}}type"

_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# --- element building ------------------------------------------------------------------------------------------------
# A document has ~10^4 elements: building them as lxml elements (one C-level node, namespace lookup and attribute
# validation per call, and a subtree re-homing per ``append`` across documents) was most of the conversion time.
# Elements are therefore plain Python nodes, and leaves nothing changes afterwards are written at once as markup;
# the tree is serialised once at the end exactly as lxml serialises the same tree (``serialize``; golden files
# and a differential check against lxml's escaping keep the bytes identical). Attribute values are checked when
# set, with lxml's own check on the rare value that is not plainly printable, so invalid data fails at the same
# point as before (ValueError/TypeError inside the entry being converted).
_CLARK_OF: Final = {"xsi:type": XSI_TYPE}


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
        self.attrs = attrs_markup(attrib)
        self.attrib = attrib

    def unset(self, key: str) -> None:
        key = _prefixed(key)
        if self.attrib and key in self.attrib:
            attrib = {k: v for k, v in self.attrib.items() if k != key}
            self.attrs = attrs_markup(attrib) if attrib else ""
            self.attrib = attrib

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrib.get(_prefixed(key), default) if self.attrib else default


Element: TypeAlias = Node
_new = list.__new__


_RENDERED: dict[tuple[str, ...], str] = memo_dict({})  # attribute sets already checked and serialised
_RENDERED_MAX: Final = 8192  # a cache, not state: emptied when full (most sets repeat: templateIds, codes)


def attrs_markup(attrib: Mapping[str, str]) -> str:
    """Serialised attributes, checked by lxml's rules: str values (TypeError otherwise), no XML-forbidden
    characters (ValueError, raised by lxml itself for the rare value that is not plainly printable). Memoised:
    for attribute sets that recur (templateIds, codes, class/mood codes, nullFlavors)."""
    memo_key = (*attrib, *attrib.values())  # names then values: one flat tuple, cheaper to hash than pairs
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
    """``attrs_markup`` without the memo, for values that do not recur (ids, references, narrative IDs)."""
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
    node.attrs = attrs_markup(attrib) if attrib else ""
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
    head = f"<{name}{attrs_markup(attrib)}" if attrib else f"<{name}"
    return f"{head}/>" if text is None else f"{head}>{markup(text)}</{name}>"


def start_tag(name: str, attrib: Mapping[str, str] | None = None) -> str:
    """``<name attr="…">`` for a fragment (attributes checked as for ``el``)."""
    return f"<{name}{attrs_markup(attrib)}>" if attrib else f"<{name}>"


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
    """As libxml2 escapes text content (``str.replace`` answers the string itself when there is nothing to replace:
    four scans for a single character each are cheaper than one regex search)."""
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
    child.attrs = attrs_markup(attrib) if attrib else ""
    child._text = None if text is None else xml_text(text)
    parent.append(child)
    return child


def null(parent: Element, name: str, flavor: str = "UNK") -> Element:
    return el(parent, name, {"nullFlavor": flavor})


def set_xsi_type(element: Element, xsi_type: str) -> Element:
    element.set(XSI_TYPE, xsi_type)
    return element
