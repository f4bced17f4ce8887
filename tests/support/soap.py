"""IHE SOAP messages as an EHR (Epic Care Everywhere) sends them, and the answers as the tests read them:
namespaces and actions, envelopes, the ITI-55/38/39 request bodies, Epic-shaped MTOM, signed SAML assertions in a
WS-Security header, and the parsing of responses (plain SOAP or MTOM) down to the retrieved document."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
from lxml import etree
from signxml import XMLSigner
from tests.support.pki import SigningKey

from xhuma.ihe.soap import MimePart, content_type_params, split_multipart

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
HL7 = "urn:hl7-org:v3"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
NS = {
    "env": SOAP12,
    "wsa": WSA,
    "hl7": HL7,
    "query": QUERY,
    "rim": RIM,
    "rs": RS,
    "xdsb": XDSB,
    "xop": XOP,
    "wsse": WSSE,
}

NHS_OID = "2.16.840.1.113883.2.1.4.1"
DEMO_NHS = "9690937286"
ACTION_55 = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
ACTION_38 = "urn:ihe:iti:2007:CrossGatewayQuery"
ACTION_39 = "urn:ihe:iti:2007:CrossGatewayRetrieve"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"  # XDSDocumentEntry.uniqueId
SOAP_CT = "application/soap+xml; charset=UTF-8"


def cx(nhs: str = DEMO_NHS) -> str:
    return f"{nhs}^^^&{NHS_OID}&ISO"


# --- SAML -----------------------------------------------------------------------------------------------------------
def epic_statement(data_dir: Any, *, resource_id: str | None = None, purpose: str | None = None) -> etree._Element:
    statement = etree.parse(str(data_dir / "ihe" / "epic-saml-attributes.xml")).getroot()
    if resource_id is not None:
        for attribute in statement:
            if attribute.get("Name") == "urn:oasis:names:tc:xacml:2.0:resource:resource-id":
                attribute[0].text = resource_id
    if purpose is not None:
        for element in statement.iter("{urn:hl7-org:v3}PurposeForUse"):
            element.set("code", purpose)
    return statement


def assertion(
    statement: etree._Element | None,
    *,
    not_before: datetime | None = None,
    not_on_or_after: datetime | None = None,
    audience: str | None = None,
    signer: SigningKey | None = None,
    name_id: str = "epic-user-1234",
) -> etree._Element:
    now = datetime.now(UTC)
    element = etree.Element(
        f"{{{SAML2}}}Assertion",
        nsmap={"saml2": SAML2},
        ID=f"_{uuid.uuid4().hex}",
        Version="2.0",
        IssueInstant=now.isoformat(),
    )
    etree.SubElement(element, f"{{{SAML2}}}Issuer").text = "CN=Epic Care Everywhere Test"
    subject = etree.SubElement(element, f"{{{SAML2}}}Subject")
    etree.SubElement(subject, f"{{{SAML2}}}NameID").text = name_id
    conditions = etree.SubElement(
        element,
        f"{{{SAML2}}}Conditions",
        NotBefore=(not_before or now - timedelta(minutes=1)).isoformat(),
        NotOnOrAfter=(not_on_or_after or now + timedelta(minutes=5)).isoformat(),
    )
    if audience is not None:
        restriction = etree.SubElement(conditions, f"{{{SAML2}}}AudienceRestriction")
        etree.SubElement(restriction, f"{{{SAML2}}}Audience").text = audience
    if statement is not None:
        element.append(etree.fromstring(etree.tostring(statement)))
    if signer is None:
        return element
    signed = XMLSigner(
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    ).sign(element, key=signer.key_pem, cert=[signer.cert], reference_uri=element.get("ID"))
    return signed


def security_header(saml: etree._Element | None) -> etree._Element:
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.set(f"{{{SOAP12}}}mustUnderstand", "true")
    if saml is not None:
        security.append(saml)
    return security


def epic_security(data_dir: Any, signer: SigningKey, nhs: str = DEMO_NHS, **overrides: Any) -> etree._Element:
    """A WS-Security header with Epic's attribute statement for the patient ``nhs``, signed by ``signer``
    (``overrides``: the conditions and audience of ``assertion``)."""
    return security_header(assertion(epic_statement(data_dir, resource_id=cx(nhs)), signer=signer, **overrides))



# --- request builders -----------------------------------------------------------------------------------------------
def envelope(
    action: str | None,
    body: etree._Element,
    *,
    message_id: str | None = "auto",
    security: etree._Element | None = None,
    reply_to: str | None = None,
    soap_prefix: str = "s",
    wsa_prefix: str = "a",
    pretty: bool = False,
) -> bytes:
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={soap_prefix: SOAP12, wsa_prefix: WSA})
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    if action is not None:
        action_element = etree.SubElement(header, f"{{{WSA}}}Action")
        action_element.set(f"{{{SOAP12}}}mustUnderstand", "1")
        action_element.text = action
    if message_id is not None:
        etree.SubElement(header, f"{{{WSA}}}MessageID").text = (
            f"urn:uuid:{uuid.uuid4()}" if message_id == "auto" else message_id
        )
    if reply_to is not None:
        etree.SubElement(etree.SubElement(header, f"{{{WSA}}}ReplyTo"), f"{{{WSA}}}Address").text = reply_to
    etree.SubElement(env, f"{{{SOAP12}}}Body").append(body)
    if security is None:
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)
    # The signed assertion travels byte for byte as signed (pretty-printing it would break its digest).
    etree.SubElement(header, "security-marker")
    raw = etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)
    return raw.replace(b"<security-marker/>", etree.tostring(security))


def iti55_body(
    ids: list[list[tuple[str, str]]] | None = None,
    *,
    family: str | None = "Smith",
    given: str | None = "Jane",
    birth: str | None = "19520531",
    gender: str | None = "F",
    priority: str = "I",
) -> etree._Element:
    """PRPA_IN201305UV02; ``ids`` is a list of livingSubjectId elements, each a list of (root, extension)."""
    if ids is None:
        ids = [[(NHS_OID, DEMO_NHS)]]
    E = lambda tag, parent=None, **attrs: (  # noqa: E731
        etree.SubElement(parent, f"{{{HL7}}}{tag}", attrs)
        if parent is not None
        else etree.Element(
            f"{{{HL7}}}{tag}", attrs, nsmap={None: HL7, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
        )
    )
    message = E("PRPA_IN201305UV02", ITSVersion="XML_1.0")
    E("id", message, root="1.2.840.114350.1.13.0.1.7.1.1", extension="35423")
    E("creationTime", message, value="20250301120000")
    E("interactionId", message, root="2.16.840.1.113883.1.6", extension="PRPA_IN201305UV02")
    E("processingCode", message, code="P")
    E("processingModeCode", message, code="T")
    E("acceptAckCode", message, code="AL")
    device = E("device", E("receiver", message, typeCode="RCV"), classCode="DEV", determinerCode="INSTANCE")
    E("id", device, root="2.16.840.1.113883.3.9999.1.3")
    sender = E("device", E("sender", message, typeCode="SND"), classCode="DEV", determinerCode="INSTANCE")
    E("id", sender, root="1.2.840.114350.1.13.999.567")
    organisation = E(
        "representedOrganization", E("asAgent", sender, classCode="AGNT"), classCode="ORG", determinerCode="INSTANCE"
    )
    E("id", organisation, root="1.2.840.114350.1.13.525.3.7.3.688884.100")
    control = E("controlActProcess", message, classCode="CACT", moodCode="EVN")
    E("code", control, code="PRPA_TE201305UV02", codeSystem="2.16.840.1.113883.1.6")
    query = E("queryByParameter", control)
    E("queryId", query, root="1.2.840.114350.1.13.28.1.18.5.999", extension="18204")
    E("statusCode", query, code="new")
    E("responseModalityCode", query, code="R")
    E("responsePriorityCode", query, code=priority)
    parameters = E("parameterList", query)
    if gender:
        E("value", E("livingSubjectAdministrativeGender", parameters), code=gender)
        parameters[-1].append(_semantics("LivingSubject.administrativeGender"))
    if birth:
        E("value", E("livingSubjectBirthTime", parameters), value=birth)
        parameters[-1].append(_semantics("LivingSubject.birthTime"))
    for values in ids:
        element = E("livingSubjectId", parameters)
        for root, extension in values:
            E("value", element, root=root, extension=extension)
        element.append(_semantics("LivingSubject.id"))
    if family or given:
        name = E("livingSubjectName", parameters)
        value = E("value", name)
        if given:
            E("given", value).text = given
        if family:
            E("family", value).text = family
        name.append(_semantics("LivingSubject.name"))
    return message


def _semantics(text: str) -> etree._Element:
    element = etree.Element(f"{{{HL7}}}semanticsText")
    element.text = text
    return element


def iti38_body(
    slots: Mapping[str, list[str]] | None = None,
    *,
    query_id: str = FIND_DOCUMENTS,
    return_type: str = "LeafClass",
    home: str | None = None,
    nhs: str = DEMO_NHS,
) -> etree._Element:
    if slots is None:
        slots = {
            "$XDSDocumentEntryPatientId": [f"'{nhs}^^^&{NHS_OID}&ISO'"],
            "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
        }
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(request, f"{{{QUERY}}}ResponseOption", returnType=return_type, returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=query_id)
    if home is not None:
        query.set("home", home)
    for name, values in slots.items():
        value_list = etree.SubElement(etree.SubElement(query, f"{{{RIM}}}Slot", name=name), f"{{{RIM}}}ValueList")
        for value in values:
            etree.SubElement(value_list, f"{{{RIM}}}Value").text = value
    return request


def iti39_body(requests: list[tuple[str | None, str | None, str | None]]) -> etree._Element:
    body = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    for home, repository, unique_id in requests:
        item = etree.SubElement(body, f"{{{XDSB}}}DocumentRequest")
        for local, value in (
            ("HomeCommunityId", home),
            ("RepositoryUniqueId", repository),
            ("DocumentUniqueId", unique_id),
        ):
            if value is not None:
                etree.SubElement(item, f"{{{XDSB}}}{local}").text = value
    return body


def mtom_wrap(
    envelope_bytes: bytes, *, boundary: str = "uuid:0f8d7e6a-epic", line_end: bytes = b"\r\n", start: bool = True
) -> tuple[bytes, str]:
    """An Epic-style MTOM request: multipart/related with the envelope as the root part and no attachment."""
    root_id = "<root.message@cxf.apache.org>"
    body = line_end.join(
        [
            b"--" + boundary.encode(),
            b'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"',
            b"Content-Transfer-Encoding: binary",
            b"Content-ID: " + root_id.encode(),
            b"",
            envelope_bytes,
            b"--" + boundary.encode() + b"--",
            b"",
        ]
    )
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        + (f'start="{root_id}"; ' if start else "")
        + 'start-info="application/soap+xml"; action="urn:ihe:iti:2007:CrossGatewayRetrieve"'
    )
    return body, content_type


def body_of(env: etree._Element) -> etree._Element:
    return env.find(f"{{{SOAP12}}}Body")[0]


# --- responses ------------------------------------------------------------------------------------------------------
def _multipart(response: httpx.Response) -> tuple[dict[str, str], list[MimePart]]:
    _, params = content_type_params(response.headers["content-type"])
    return params, split_multipart(response.content, params["boundary"])


def parse_response(response: httpx.Response) -> etree._Element:
    """The SOAP envelope of a response: the part named by ``start`` of an MTOM package (which must name it), or the
    whole body."""
    if response.headers["content-type"].startswith("multipart/related"):
        params, parts = _multipart(response)
        start = params["start"].strip("<>")
        root = next(part for part in parts if part.content_id == start)
        return etree.fromstring(root.content)
    return etree.fromstring(response.content)


def attachments(response: httpx.Response) -> dict[str, bytes]:
    """Every part of an MTOM response (the root part included) by its Content-ID."""
    _, parts = _multipart(response)
    return {part.content_id or "": part.content for part in parts}


def soap_parts(response: httpx.Response) -> tuple[etree._Element, dict[str, bytes]]:
    """The response envelope and its MTOM attachments by Content-ID (none for a plain SOAP response); lenient:
    without a ``start`` parameter the first part is the root."""
    if not response.headers["content-type"].startswith("multipart/related"):
        return etree.fromstring(response.content), {}
    params, parts = _multipart(response)
    start = params.get("start", "").strip("<>")
    root = next((part for part in parts if part.content_id == start), parts[0])
    found = {(part.content_id or "").strip("<>"): part.content for part in parts if part is not root}
    return etree.fromstring(root.content), found


def retrieved_document(response: httpx.Response) -> bytes:
    """The document of an ITI-39 response, from its XOP attachment or inline base64."""
    env, found = soap_parts(response)
    document = env.find(f".//{{{XDSB}}}Document")
    assert document is not None, etree.tostring(env)[:2000]
    include = document.find(f"{{{XOP}}}Include")
    if include is not None:
        content_id = include.get("href", "").removeprefix("cid:")
        return found.get(content_id) or found[unquote(content_id)]
    return base64.b64decode(document.text or "")


def unique_id_of(entry: etree._Element) -> str:
    """The XDSDocumentEntry.uniqueId of an ITI-38 ExtrinsicObject."""
    identifier = entry.find(f"{{{RIM}}}ExternalIdentifier[@identificationScheme='{UNIQUE_ID_SCHEME}']")
    assert identifier is not None, etree.tostring(entry)[:2000]
    return str(identifier.get("value"))


def slot_value(entry: etree._Element, name: str) -> str | None:
    """The first value of the slot ``name`` of an ITI-38 ExtrinsicObject (None when absent)."""
    return entry.findtext(f"{{{RIM}}}Slot[@name='{name}']/{{{RIM}}}ValueList/{{{RIM}}}Value")
