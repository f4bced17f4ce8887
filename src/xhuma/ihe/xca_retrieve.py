"""ITI-39 Cross Gateway Retrieve: RetrieveDocumentSetRequest in, RetrieveDocumentSetResponse out (SPEC §3).

The document goes back as an MTOM/XOP attachment (``xop:Include``) or inline base64, per the
``mtom_responses`` setting. The bytes are exactly those whose hash and size ITI-38 advertised.

The whole transaction: its descriptor (``ITI_39``, listed in ``xhuma.ihe.transactions``), its handler
(``CrossGatewayRetrieve``), and its messages.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from lxml import etree

from xhuma import errors, ids, tracing
from xhuma.ihe import faults, soap
from xhuma.ihe.descriptor import XDSB, AtnaEvent, ErrorForm, Transaction
from xhuma.ihe.exchange import Exchange, GatewayServices, SoapResponse, log_unexpected
from xhuma.ihe.faults import RegistryErrorInfo
from xhuma.ihe.soap import XOP, Attachment, escape_attr, escape_text, sender_fault
from xhuma.ihe.xca_query import (
    RS,
    XDS_SCHEMA,
    XdsQueryError,
    highest_severity,
    query_error_info,
    response_status,
    same_community,
)
from xhuma.records import DocumentContent

X = f"{{{XDSB}}}"

ACTION_REQUEST = "urn:ihe:iti:2007:CrossGatewayRetrieve"
ACTION_RESPONSE = "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"
REQUEST_ELEMENT = f"{X}RetrieveDocumentSetRequest"
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
    if body.tag != REQUEST_ELEMENT:
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
    document: DocumentContent


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


# --- the handler ------------------------------------------------------------------------------------------------
class CrossGatewayRetrieve:
    """ITI-39 over the gateway's services: each requested document, or a RegistryError naming the one that failed.

    The cached retrieve is the hot path (bench/iti39_throughput.py): nothing here is built per request beyond the
    answer itself.
    """

    def __init__(self, services: GatewayServices) -> None:
        settings = services.settings
        self.settings = settings
        self.records = services.records
        self.verifier = services.verifier

    async def __call__(self, exchange: Exchange) -> SoapResponse:
        try:
            document_requests = parse_request(exchange.request.body)
        except Exception as error:
            return await exchange.fault(error)

        message_id = exchange.message_id
        caller = exchange.caller
        retrieved: list[RetrievedDocument] = []
        problems: list[RegistryErrorInfo] = []
        # Every document's patient is checked against the assertion before anything is audited as disclosed: a
        # refusal at the second document must not leave a success event for the first, which is never sent.
        looked_up: list[tuple[DocumentRequest, DocumentContent | RegistryErrorInfo]] = []
        for item in document_requests:
            try:
                document = await self._retrieve_one(item)
                caller = exchange.caller = self.verifier.check_patient(caller, document.nhs_number)
            except errors.SecurityError as error:
                return await exchange.fault(error)
            except Exception as error:
                info = (query_error_info(error) if isinstance(error, XdsQueryError)
                        else faults.registry_error(error, transaction=ITI_39))
                log_unexpected(ITI_39, error)
                looked_up.append((item, info))
            else:
                looked_up.append((item, document))
        for item, found in looked_up:
            if isinstance(found, RegistryErrorInfo):
                problems.append(replace(found, location=item.document_unique_id))
                await exchange.audit(
                    "error", caller=caller, error_code=found.error_code, reason=found.reason or None,
                    message_id=message_id, document_unique_id=item.document_unique_id,
                    duration_ms=exchange.elapsed_ms(),
                )
                continue
            document = found
            # Disclosure: only once the audit event is committed (no disclosure without audit).
            if await exchange.audit(
                "success", nhs_number=document.nhs_number, caller=caller, message_id=message_id,
                document_unique_id=document.unique_id, duration_ms=exchange.elapsed_ms(),
            ):
                retrieved.append(RetrievedDocument(item, document))
            else:
                problems.append(replace(faults.registry_error(errors.AuditUnavailable(), transaction=ITI_39),
                                        location=document.unique_id))

        settings = self.settings
        mtom = settings.mtom_responses
        with tracing.stage(None, "serialise"):
            response, attachments = build_response(
                retrieved, problems, home_community_urn=settings.home_community_urn,
                repository_unique_id=settings.repository_unique_id, mtom=mtom,
            )
            envelope = soap.envelope(ACTION_RESPONSE, response, relates_to=message_id,
                                     timestamp_seconds=settings.wsse_timestamp_seconds)
            if mtom:
                package, package_type = soap.mtom_package(envelope, attachments, action=ACTION_RESPONSE)
        if mtom:
            return SoapResponse(200, package, package_type)
        return SoapResponse(200, envelope, soap.soap_content_type(ACTION_RESPONSE))

    async def _retrieve_one(self, item: DocumentRequest) -> DocumentContent:
        settings = self.settings
        if item.home_community_id is None:
            raise XdsQueryError("XDSMissingHomeCommunityId", "The DocumentRequest has no HomeCommunityId")
        if not same_community(item.home_community_id, settings.home_community_id):
            raise XdsQueryError("XDSUnknownCommunity", "The HomeCommunityId is not this community")
        if item.repository_unique_id != settings.repository_unique_id:
            raise XdsQueryError("XDSUnknownRepositoryId", "The RepositoryUniqueId is not this repository")
        if not item.document_unique_id:
            raise XdsQueryError("XDSDocumentUniqueIdError", "The DocumentRequest has no DocumentUniqueId")
        return await self.records.retrieve_content(item.document_unique_id)


# --- the descriptor (its line in the registry: xhuma.ihe.transactions) -------------------------------------------
ITI_39: Final = Transaction(
    id="ITI-39",
    name="Cross Gateway Retrieve",
    path="/SOAP/iti39",
    request_action=ACTION_REQUEST,
    response_action=ACTION_RESPONSE,
    request_element=REQUEST_ELEMENT,
    response_element=f"{X}RetrieveDocumentSetResponse",
    request_schema=XDS_SCHEMA,
    response_schema=XDS_SCHEMA,
    atna=AtnaEvent("110106", "Export", "R", "Cross Gateway Retrieve"),
    error_form=ErrorForm.REGISTRY_ERROR,
    handler=CrossGatewayRetrieve,
    generic_error="XDSRepositoryError",
    busy_error="XDSRepositoryBusy",
)
