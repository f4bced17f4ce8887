"""SOAP 1.2 transport for the three IHE transactions: hardened parsing, WS-Addressing, MTOM/XOP in and out.

Everything a caller sends is untrusted: XML is parsed without DTDs, entity expansion or network access, with a
bounded depth, and a ``multipart/related`` body is split by a real MIME parser (any prefix, any layout; LESSONS 10).
Problems at this layer raise ``SoapFault``; ``xhuma.ihe.faults`` decides which fault an application error becomes.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote

from lxml import etree

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
XOP = "http://www.w3.org/2004/08/xop/include"
XML_NS = "http://www.w3.org/XML/1998/namespace"

WSA_ANONYMOUS = f"{WSA}/anonymous"
WSA_NONE = f"{WSA}/none"
WSA_FAULT_ACTION = f"{WSA}/soap/fault"

MAX_DEPTH = 64  # deepest legitimate request (ITI-55 with SAML) is < 30 levels
UNDERSTOOD_HEADER_NAMESPACES = frozenset({WSA, WSSE, WSU})


class SoapFault(Exception):
    """A SOAP 1.2 Fault to answer with (SOAP 1.2 Part 1 §5.4). ``subcode`` is (namespace, prefix, local name)."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        subcode: tuple[str, str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code  # Sender | Receiver | VersionMismatch | MustUnderstand
        self.reason = reason  # safe text for the caller: never PHI, never an exception dump
        self.subcode = subcode
        self.error_code = error_code or (subcode[2] if subcode else code)

    @property
    def http_status(self) -> int:
        # SOAP 1.2 HTTP binding (Part 2 §7.5.1): Sender faults are 400, everything else 500.
        return 400 if self.code == "Sender" else 500


def sender_fault(reason: str, local: str | None = None, namespace: str = WSA, prefix: str = "wsa") -> SoapFault:
    return SoapFault("Sender", reason, subcode=(namespace, prefix, local) if local else None)


# --- hardened XML ------------------------------------------------------------------------------------------
def _parser() -> etree.XMLParser:
    # A parser per call: lxml parsers must not be shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
        remove_pis=True,
    )


def parse_xml(data: bytes, *, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Parse untrusted XML: no DTD (so no entity expansion: XXE, billion laughs), no network, bounded depth."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise sender_fault("DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        raise sender_fault("The message is not well-formed XML") from None
    if root.getroottree().docinfo.doctype:
        raise sender_fault("DTDs and entity declarations are not accepted")
    depth = 0
    for event, _element in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            if depth > max_depth:
                raise sender_fault("The message is nested too deeply")
        else:
            depth -= 1
    return root


# --- MIME (MTOM/XOP) ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class MimePart:
    headers: dict[str, str]
    content: bytes

    @property
    def content_id(self) -> str | None:
        value = self.headers.get("content-id")
        return value.strip().strip("<>").strip() if value else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")


# RFC 9110 §8.3.1: parameter = token "=" ( token / quoted-string ), separated by ";".
_CONTENT_TYPE_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


def content_type_params(content_type: str) -> tuple[str, dict[str, str]]:
    """Media type (lower case) and parameters (names lower case, quoted values unquoted) of a Content-Type."""
    media_type, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for name, value in _CONTENT_TYPE_PARAM.findall(";" + rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.lower()] = value
    media_type = media_type.strip().lower()
    return (media_type if "/" in media_type else "text/plain"), params


def split_multipart(body: bytes, boundary: str) -> list[MimePart]:
    """Split a ``multipart/related`` body (RFC 2046) into its parts; tolerant of LF-only line ends."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    parts: list[MimePart] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # close delimiter: the rest is the epilogue
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        elif chunk.startswith(b"\n"):
            chunk = chunk[1:]
        separator = chunk.find(b"\r\n\r\n")
        skip = 4
        if separator < 0:
            separator = chunk.find(b"\n\n")
            skip = 2
        if separator < 0:
            raise sender_fault("A MIME part has no header section")
        header_block = chunk[:separator].decode("latin-1")
        content = chunk[separator + skip:]
        # The CRLF before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        headers: dict[str, str] = {}
        for line in header_block.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ").split("\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        encoding = headers.get("content-transfer-encoding", "binary").lower()
        if encoding == "base64":
            try:
                content = base64.b64decode(content, validate=False)
            except ValueError:
                raise sender_fault("A MIME part is not valid base64") from None
        parts.append(MimePart(headers, content))
    if not parts:
        raise sender_fault("The multipart body has no parts")
    return parts


# --- request -----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Addressing:
    action: str | None = None
    message_id: str | None = None
    reply_to: str | None = None
    fault_to: str | None = None
    to: str | None = None


@dataclass(slots=True)
class SoapRequest:
    envelope: etree._Element
    body: etree._Element  # first element child of soap:Body
    addressing: Addressing
    security: etree._Element | None
    mtom: bool
    attachments: dict[str, bytes] = field(default_factory=dict)


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _child(parent: etree._Element, namespace: str, local: str) -> etree._Element | None:
    return parent.find(f"{{{namespace}}}{local}")


def read_envelope_bytes(body: bytes, content_type: str | None) -> tuple[bytes, dict[str, bytes], bool]:
    """The envelope bytes, the attachments by Content-ID, and whether the request was MTOM."""
    mime_type, params = content_type_params(content_type or "application/soap+xml")
    if mime_type == "multipart/related":
        boundary = params.get("boundary")
        if not boundary:
            raise sender_fault("multipart/related without a boundary")
        parts = split_multipart(body, boundary)
        start = params.get("start", "").strip().strip("<>").strip() or None
        root = next((part for part in parts if start and part.content_id == start), None) if start else parts[0]
        if root is None:
            raise sender_fault("The multipart start part is missing")
        attachments = {part.content_id: part.content for part in parts if part is not root and part.content_id}
        return root.content, attachments, True
    if mime_type in ("application/soap+xml", "text/xml", "application/xml", "application/xop+xml"):
        return body, {}, False
    raise sender_fault(f"Unsupported content type {mime_type}")


def _resolve_xop(envelope: etree._Element, attachments: dict[str, bytes]) -> None:
    """Replace each xop:Include with the base64 text of the part it points to (the XOP infoset)."""
    for include in list(envelope.iter(f"{{{XOP}}}Include")):
        href = include.get("href", "")
        cid = unquote(href[4:]) if href.startswith("cid:") else None
        if cid is None or cid not in attachments:
            raise sender_fault("An xop:Include refers to a missing MIME part")
        parent = include.getparent()
        if parent is None:
            raise sender_fault("An xop:Include has no parent")
        parent.remove(include)
        parent.text = base64.b64encode(attachments[cid]).decode("ascii")


def parse_request(body: bytes, content_type: str | None) -> SoapRequest:
    envelope_bytes, attachments, mtom = read_envelope_bytes(body, content_type)
    envelope = parse_xml(envelope_bytes)
    qname = etree.QName(envelope)
    if qname.localname != "Envelope":
        raise sender_fault("The message is not a SOAP envelope")
    if qname.namespace == SOAP11:
        raise SoapFault("VersionMismatch", "SOAP 1.1 is not supported; use SOAP 1.2")
    if qname.namespace != SOAP12:
        raise SoapFault("VersionMismatch", "Unknown SOAP envelope namespace")
    header = _child(envelope, SOAP12, "Header")
    soap_body = _child(envelope, SOAP12, "Body")
    if soap_body is None:
        raise sender_fault("The SOAP envelope has no Body")
    payload = next((child for child in soap_body if isinstance(child.tag, str)), None)
    if payload is None:
        raise sender_fault("The SOAP Body is empty")
    addressing = Addressing()
    security = None
    if header is not None:
        for block in header:
            if not isinstance(block.tag, str):
                continue
            namespace = etree.QName(block).namespace
            must_understand = block.get(f"{{{SOAP12}}}mustUnderstand", "false").strip() in ("1", "true")
            if must_understand and namespace not in UNDERSTOOD_HEADER_NAMESPACES:
                raise SoapFault("MustUnderstand", "A header block marked mustUnderstand is not understood")
        for local in ("Action", "MessageID", "To", "ReplyTo", "FaultTo"):
            # WS-Addressing 1.0 Core §3.2: each at most once; a second copy is InvalidAddressingHeader (SOAP binding
            # §6.4.1), not silently the first one.
            if len(header.findall(f"{{{WSA}}}{local}")) > 1:
                raise sender_fault(f"wsa:{local} appears more than once", "InvalidAddressingHeader")
        addressing = Addressing(
            action=_text(_child(header, WSA, "Action")),
            message_id=_text(_child(header, WSA, "MessageID")),
            reply_to=_address(_child(header, WSA, "ReplyTo")),
            fault_to=_address(_child(header, WSA, "FaultTo")),
            to=_text(_child(header, WSA, "To")),
        )
        security = _child(header, WSSE, "Security")
    if attachments or mtom:
        _resolve_xop(envelope, attachments)
    return SoapRequest(envelope, payload, addressing, security, mtom, attachments)


def _address(endpoint: etree._Element | None) -> str | None:
    if endpoint is None:
        return None
    return _text(_child(endpoint, WSA, "Address")) or WSA_ANONYMOUS


def check_addressing(
    addressing: Addressing, *, expected_actions: Iterable[str], reply_to_allow_list: Sequence[str]
) -> None:
    """WS-Addressing rules for a synchronous IHE responder (ITI TF-2 V.3.2; LESSONS 12)."""
    if not addressing.action:
        raise sender_fault("wsa:Action is required", "MessageAddressingHeaderRequired")
    if addressing.action not in expected_actions:
        raise sender_fault("This endpoint does not support the requested wsa:Action", "ActionNotSupported")
    if not addressing.message_id:
        raise sender_fault("wsa:MessageID is required", "MessageAddressingHeaderRequired")
    for address in (addressing.reply_to, addressing.fault_to):
        # We answer on the HTTP back-channel only and never call a caller-supplied address. A non-anonymous
        # address is accepted only when allow-listed (and even then the answer still goes on the back-channel).
        if address and address not in (WSA_ANONYMOUS, WSA_NONE) and address not in reply_to_allow_list:
            raise sender_fault("Only the anonymous ReplyTo address is supported", "OnlyAnonymousAddressSupported")


# --- response ----------------------------------------------------------------------------------------------
def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def build_envelope(action: str, body: etree._Element | None, *, relates_to: str | None) -> etree._Element:
    """A SOAP 1.2 envelope with the response's wsa:Action, a fresh MessageID and RelatesTo (LESSONS 9)."""
    envelope = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"env": SOAP12, "wsa": WSA})
    header = etree.SubElement(envelope, f"{{{SOAP12}}}Header")
    action_element = etree.SubElement(header, f"{{{WSA}}}Action")
    action_element.set(f"{{{SOAP12}}}mustUnderstand", "true")
    action_element.text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = new_message_id()
    if relates_to:
        etree.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    soap_body = etree.SubElement(envelope, f"{{{SOAP12}}}Body")
    if body is not None:
        soap_body.append(body)
    return envelope


def fault_envelope(fault: SoapFault, *, relates_to: str | None) -> etree._Element:
    envelope = build_envelope(WSA_FAULT_ACTION, None, relates_to=relates_to)
    soap_body = envelope[1]
    fault_element = etree.SubElement(soap_body, f"{{{SOAP12}}}Fault")
    code = etree.SubElement(fault_element, f"{{{SOAP12}}}Code")
    etree.SubElement(code, f"{{{SOAP12}}}Value").text = f"env:{fault.code}"
    if fault.subcode is not None:
        namespace, prefix, local = fault.subcode
        subcode = etree.SubElement(code, f"{{{SOAP12}}}Subcode")
        value = etree.SubElement(subcode, f"{{{SOAP12}}}Value", nsmap={prefix: namespace})
        value.text = f"{prefix}:{local}"
    reason = etree.SubElement(fault_element, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(reason, f"{{{SOAP12}}}Text")
    text.set(f"{{{XML_NS}}}lang", "en")
    text.text = fault.reason
    return envelope


def serialize(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def soap_content_type(action: str) -> str:
    return f'application/soap+xml; charset=UTF-8; action="{action}"'


@dataclass(frozen=True, slots=True)
class Attachment:
    content_id: str  # without angle brackets
    content_type: str
    content: bytes


def mtom_package(envelope: bytes, attachments: Sequence[Attachment], *, action: str) -> tuple[bytes, str]:
    """An MTOM/XOP ``multipart/related`` package (SPEC §3.2): root part first, raw binary attachments."""
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.message.{uuid.uuid4().hex}@xhuma"
    head = (
        f"--{boundary}\r\n"
        f'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
        f"Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{root_id}>\r\n\r\n"
    ).encode("ascii")
    chunks: list[bytes] = [head, envelope]
    for attachment in attachments:
        chunks.append(
            (
                f"\r\n--{boundary}\r\n"
                f"Content-Type: {attachment.content_type}\r\n"
                f"Content-Transfer-Encoding: binary\r\n"
                f"Content-ID: <{attachment.content_id}>\r\n\r\n"
            ).encode("ascii")
        )
        chunks.append(attachment.content)
    chunks.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<{root_id}>"; '
        f'start-info="application/soap+xml"; action="{action}"'
    )
    return b"".join(chunks), content_type


def hl7_timestamp(moment: datetime | None = None) -> str:
    """HL7 TS in UTC, ``YYYYMMDDHHMMSS`` (never a Unix epoch; LESSONS 5)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
