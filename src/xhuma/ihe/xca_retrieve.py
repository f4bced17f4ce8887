"""ITI-39 Cross Gateway Retrieve: RetrieveDocumentSetRequest in, RetrieveDocumentSetResponse out (SPEC §3).

The document goes back as an MTOM/XOP attachment (``xop:Include``) or inline base64, per the
``mtom_responses`` setting. The bytes are exactly those whose hash and size ITI-38 advertised.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from xhuma import ids
from xhuma.ihe.faults import RegistryErrorInfo
from xhuma.ihe.soap import XOP, Attachment, escape_attr, escape_text, sender_fault
from xhuma.ihe.transactions import ITI_39
from xhuma.ihe.xca_query import RS, highest_severity, response_status
from xhuma.ports import StoredDocument

XDSB = "urn:ihe:iti:xds-b:2007"
X = f"{{{XDSB}}}"

ACTION_REQUEST = ITI_39.request_action
ACTION_RESPONSE = ITI_39.response_action
MAX_DOCUMENT_REQUESTS = 100  # we publish one document per patient; a retrieve never needs more than a few


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    home_community_id: str | None
    repository_unique_id: str | None
    document_unique_id: str | None


_FIELDS = {f"{X}HomeCommunityId": 0, f"{X}RepositoryUniqueId": 1, f"{X}DocumentUniqueId": 2}


def _document_request(element: etree._Element) -> DocumentRequest:
    """The first HomeCommunityId, RepositoryUniqueId and DocumentUniqueId child of one DocumentRequest."""
    found: list[etree._Element | None] = [None, None, None]
    for child in element:
        index = _FIELDS.get(child.tag)
        if index is not None and found[index] is None:
            found[index] = child
    home, repository, document = (
        ((child.text or "").strip() or None) if child is not None else None for child in found
    )
    return DocumentRequest(home, repository, document)


def parse_request(body: etree._Element) -> list[DocumentRequest]:
    if body.tag != ITI_39.request_element:
        raise sender_fault("The ITI-39 body must be a RetrieveDocumentSetRequest")
    requests = [_document_request(element) for element in body.iterchildren(f"{X}DocumentRequest")]
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


def _error_list_markup(errors: Sequence[RegistryErrorInfo], home_community_urn: str) -> str:
    # ebRS 3.0 RegistryError/@location: the DocumentUniqueId that failed, so that an initiator that asked for several
    # documents knows which one (the homeCommunityId only for an error about no one document).
    items = "".join(
        f'<rs:RegistryError errorCode="{escape_attr(error.error_code)}" codeContext="{escape_attr(error.code_context)}"'
        f' location="{escape_attr(error.location or home_community_urn)}" severity="{escape_attr(error.severity)}"/>'
        for error in errors
    )
    return f'<rs:RegistryErrorList highestSeverity="{highest_severity(errors)}">{items}</rs:RegistryErrorList>'


def build_response(
    retrieved: Sequence[RetrievedDocument],
    errors: Sequence[RegistryErrorInfo],
    *,
    home_community_urn: str,
    repository_unique_id: str,
    mtom: bool,
) -> tuple[bytes, list[Attachment]]:
    """The RetrieveDocumentSetResponse as markup for ``soap.envelope``, and the attachments it refers to."""
    status = response_status(bool(retrieved), errors)
    parts = [f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{XDSB}" xmlns:rs="{RS}" xmlns:xop="{XOP}">']
    if errors:
        parts.append(f'<rs:RegistryResponse status="{status}">'
                     f"{_error_list_markup(errors, home_community_urn)}</rs:RegistryResponse>")
    else:
        parts.append(f'<rs:RegistryResponse status="{status}"/>')
    home = escape_text(home_community_urn)
    repository = escape_text(repository_unique_id)
    attachments: list[Attachment] = []
    for item in retrieved:
        document = item.document
        if mtom:
            content_id = f"doc{len(attachments) + 1}.{ids.random_hex()}@xhuma"
            content = f'<xop:Include href="cid:{content_id}"/>'
            attachments.append(Attachment(content_id, document.mime_type, document.content))
        else:
            content = base64.b64encode(document.content).decode("ascii")
        parts.append(
            f"<xdsb:DocumentResponse><xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>"
            f"<xdsb:RepositoryUniqueId>{repository}</xdsb:RepositoryUniqueId>"
            f"<xdsb:DocumentUniqueId>{escape_text(document.unique_id)}</xdsb:DocumentUniqueId>"
            f"<xdsb:mimeType>{escape_text(document.mime_type)}</xdsb:mimeType>"
            f"<xdsb:Document>{content}</xdsb:Document></xdsb:DocumentResponse>"
        )
    parts.append("</xdsb:RetrieveDocumentSetResponse>")
    return "".join(parts).encode(), attachments
