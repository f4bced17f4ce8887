"""Minimal IHE requests for the data-protection end-to-end test: ITI-55, ITI-38 FindDocuments, ITI-39."""

from __future__ import annotations

import base64
import uuid

import httpx
from lxml import etree

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
HL7 = "urn:hl7-org:v3"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
NHS_OID = "2.16.840.1.113883.2.1.4.1"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SOAP_CONTENT_TYPE = "application/soap+xml; charset=UTF-8"
ACTIONS = {
    "iti55": "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
    "iti38": "urn:ihe:iti:2007:CrossGatewayQuery",
    "iti39": "urn:ihe:iti:2007:CrossGatewayRetrieve",
}


def envelope(action: str, body: etree._Element) -> bytes:
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"s": SOAP12, "a": WSA})
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    action_element = etree.SubElement(header, f"{{{WSA}}}Action")
    action_element.set(f"{{{SOAP12}}}mustUnderstand", "1")
    action_element.text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(env, f"{{{SOAP12}}}Body").append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def _hl7(tag: str, parent: etree._Element | None = None, **attrs: str) -> etree._Element:
    if parent is None:
        return etree.Element(f"{{{HL7}}}{tag}", attrs, nsmap={None: HL7})
    return etree.SubElement(parent, f"{{{HL7}}}{tag}", attrs)


def iti55_body(nhs_number: str, *, family: str, given: str, birth: str, gender: str) -> etree._Element:
    message = _hl7("PRPA_IN201305UV02", ITSVersion="XML_1.0")
    _hl7("id", message, root="1.2.840.114350.1.13.0.1.7.1.1", extension="35423")
    _hl7("creationTime", message, value="20260101120000")
    _hl7("interactionId", message, root="2.16.840.1.113883.1.6", extension="PRPA_IN201305UV02")
    _hl7("processingCode", message, code="P")
    _hl7("processingModeCode", message, code="T")
    _hl7("acceptAckCode", message, code="AL")
    receiver = _hl7("device", _hl7("receiver", message, typeCode="RCV"), classCode="DEV", determinerCode="INSTANCE")
    _hl7("id", receiver, root="2.16.840.1.113883.3.9999.1.3")
    sender = _hl7("device", _hl7("sender", message, typeCode="SND"), classCode="DEV", determinerCode="INSTANCE")
    _hl7("id", sender, root="1.2.840.114350.1.13.999.567")
    control = _hl7("controlActProcess", message, classCode="CACT", moodCode="EVN")
    _hl7("code", control, code="PRPA_TE201305UV02", codeSystem="2.16.840.1.113883.1.6")
    query = _hl7("queryByParameter", control)
    _hl7("queryId", query, root="1.2.840.114350.1.13.28.1.18.5.999", extension="18204")
    _hl7("statusCode", query, code="new")
    _hl7("responseModalityCode", query, code="R")
    _hl7("responsePriorityCode", query, code="I")
    parameters = _hl7("parameterList", query)
    for tag, attrs, semantics in (
        ("livingSubjectAdministrativeGender", {"code": gender}, "LivingSubject.administrativeGender"),
        ("livingSubjectBirthTime", {"value": birth}, "LivingSubject.birthTime"),
        ("livingSubjectId", {"root": NHS_OID, "extension": nhs_number}, "LivingSubject.id"),
    ):
        element = _hl7(tag, parameters)
        _hl7("value", element, **attrs)
        _hl7("semanticsText", element).text = semantics
    name = _hl7("livingSubjectName", parameters)
    value = _hl7("value", name)
    _hl7("given", value).text = given
    _hl7("family", value).text = family
    _hl7("semanticsText", name).text = "LivingSubject.name"
    return message


def iti38_body(nhs_number: str) -> etree._Element:
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(request, f"{{{QUERY}}}ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=FIND_DOCUMENTS)
    for name, value in (
        ("$XDSDocumentEntryPatientId", f"'{nhs_number}^^^&{NHS_OID}&ISO'"),
        ("$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"),
    ):
        value_list = etree.SubElement(etree.SubElement(query, f"{{{RIM}}}Slot", name=name), f"{{{RIM}}}ValueList")
        etree.SubElement(value_list, f"{{{RIM}}}Value").text = value
    return request


def iti39_body(home: str, repository: str, unique_id: str) -> etree._Element:
    body = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    item = etree.SubElement(body, f"{{{XDSB}}}DocumentRequest")
    for local, value in (("HomeCommunityId", home), ("RepositoryUniqueId", repository),
                         ("DocumentUniqueId", unique_id)):
        etree.SubElement(item, f"{{{XDSB}}}{local}").text = value
    return body


async def post(client: httpx.AsyncClient, transaction: str, body: etree._Element) -> httpx.Response:
    return await client.post(f"/SOAP/{transaction}", content=envelope(ACTIONS[transaction], body),
                             headers={"content-type": SOAP_CONTENT_TYPE})


def soap_parts(response: httpx.Response) -> tuple[etree._Element, dict[str, bytes]]:
    """The response envelope and its MTOM attachments by Content-ID (none for a plain SOAP response)."""
    content_type = response.headers["content-type"]
    if not content_type.startswith("multipart/related"):
        return etree.fromstring(response.content), {}
    from xhuma.ihe.soap import content_type_params, split_multipart

    _, params = content_type_params(content_type)
    parts = split_multipart(response.content, params["boundary"])
    start = params.get("start", "").strip("<>")
    root = next((part for part in parts if part.content_id == start), parts[0])
    attachments = {(part.content_id or "").strip("<>"): part.content for part in parts if part is not root}
    return etree.fromstring(root.content), attachments


def retrieved_document(response: httpx.Response) -> bytes:
    env, attachments = soap_parts(response)
    document = env.find(f".//{{{XDSB}}}Document")
    assert document is not None, etree.tostring(env)[:2000]
    include = document.find(f"{{{XOP}}}Include")
    if include is not None:
        content_id = include.get("href", "").removeprefix("cid:")
        from urllib.parse import unquote

        return attachments.get(content_id) or attachments[unquote(content_id)]
    return base64.b64decode(document.text or "")
