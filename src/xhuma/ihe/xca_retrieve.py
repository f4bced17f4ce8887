"""ITI-39 Cross Gateway Retrieve: RetrieveDocumentSetRequest in, RetrieveDocumentSetResponse out (SPEC §3).

The document goes back as an MTOM/XOP attachment (``xop:Include``) or inline base64, per the
``mtom_responses`` setting. The bytes are exactly those whose hash and size ITI-38 advertised.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from xhuma.ihe.faults import RegistryErrorInfo
from xhuma.ihe.soap import XOP, Attachment, sender_fault
from xhuma.ihe.xca_query import RS, registry_error_list, response_status
from xhuma.ports import StoredDocument

XDSB = "urn:ihe:iti:xds-b:2007"
X = f"{{{XDSB}}}"

ACTION_REQUEST = "urn:ihe:iti:2007:CrossGatewayRetrieve"
ACTION_RESPONSE = "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"
MAX_DOCUMENT_REQUESTS = 100  # we publish one document per patient; a retrieve never needs more than a few


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    home_community_id: str | None
    repository_unique_id: str | None
    document_unique_id: str | None


def _text(parent: etree._Element, local: str) -> str | None:
    element = parent.find(f"{X}{local}")
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def parse_request(body: etree._Element) -> list[DocumentRequest]:
    if body.tag != f"{X}RetrieveDocumentSetRequest":
        raise sender_fault("The ITI-39 body must be a RetrieveDocumentSetRequest")
    requests = [
        DocumentRequest(
            _text(element, "HomeCommunityId"), _text(element, "RepositoryUniqueId"), _text(element, "DocumentUniqueId")
        )
        for element in body.iterfind(f"{X}DocumentRequest")
    ]
    if not requests:
        raise sender_fault("The RetrieveDocumentSetRequest has no DocumentRequest")
    if len(requests) > MAX_DOCUMENT_REQUESTS:
        # Each DocumentRequest is audited on its own: without a bound, one 10 MB request would write some 40,000
        # audit events and hold the connection for a minute.
        raise sender_fault(f"A RetrieveDocumentSetRequest may carry at most {MAX_DOCUMENT_REQUESTS} DocumentRequests")
    return requests


@dataclass(frozen=True, slots=True)
class RetrievedDocument:
    request: DocumentRequest
    document: StoredDocument


def build_response(
    retrieved: Sequence[RetrievedDocument],
    errors: Sequence[RegistryErrorInfo],
    *,
    home_community_urn: str,
    repository_unique_id: str,
    mtom: bool,
) -> tuple[etree._Element, list[Attachment]]:
    response = etree.Element(f"{X}RetrieveDocumentSetResponse", nsmap={"xdsb": XDSB, "rs": RS, "xop": XOP})
    registry_response = etree.SubElement(
        response, f"{{{RS}}}RegistryResponse", status=response_status(bool(retrieved), errors)
    )
    registry_error_list(registry_response, errors, home_community_urn)
    attachments: list[Attachment] = []
    for item in retrieved:
        document_response = etree.SubElement(response, f"{X}DocumentResponse")
        etree.SubElement(document_response, f"{X}HomeCommunityId").text = home_community_urn
        etree.SubElement(document_response, f"{X}RepositoryUniqueId").text = repository_unique_id
        etree.SubElement(document_response, f"{X}DocumentUniqueId").text = item.document.unique_id
        etree.SubElement(document_response, f"{X}mimeType").text = item.document.mime_type
        content = etree.SubElement(document_response, f"{X}Document")
        if mtom:
            content_id = f"doc{len(attachments) + 1}.{uuid.uuid4().hex}@xhuma"
            etree.SubElement(content, f"{{{XOP}}}Include", href=f"cid:{content_id}")
            attachments.append(Attachment(content_id, item.document.mime_type, item.document.content))
        else:
            content.text = base64.b64encode(item.document.content).decode("ascii")
    return response, attachments
