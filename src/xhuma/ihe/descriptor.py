"""What a transaction descriptor is: the one description of an IHE transaction that the rest of the gateway reads.

A ``Transaction`` holds the HTTP path it is served on, its WS-Addressing actions, the root elements of its request
and response bodies and the schemas that define them, its ATNA event (ITI TF-2 3.55.5, 3.38.5, 3.39.5), the form its
errors take, and its handler. Each transaction's module (``xcpd.py``, ``xca_query.py``, ``xca_retrieve.py``) defines
its own descriptor beside its handler; ``xhuma.ihe.transactions`` is the registry that lists them (how to add one:
TRANSACTIONS.md).

This module holds types only and imports nothing of the gateway, so that a transaction module can define its
descriptor without importing the registry (which imports the transaction modules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from xhuma.ihe.exchange import Exchange, GatewayServices, SoapResponse

HL7 = "urn:hl7-org:v3"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"


class ErrorForm(StrEnum):
    """How a transaction answers an error inside a well-formed request (outside it: a SOAP Fault, always)."""

    XCPD_ACKNOWLEDGEMENT = "xcpd-acknowledgement"  # AA/NF or AE with a DetectedIssue (ITI TF-2 3.55.4.4.3)
    REGISTRY_ERROR = "registry-error"  # RegistryErrorList in the XDS response (ITI TF-3 4.2.4)


@dataclass(frozen=True, slots=True)
class AtnaEvent:
    """DICOM EventID, its display, EventActionCode and the EventTypeCode's display."""

    code: str
    display: str
    action: str
    type_display: str


class TransactionHandler(Protocol):
    """Answers one request of its transaction once the gateway has parsed the SOAP envelope, checked WS-Addressing
    against the descriptor's request action and admitted the caller (``exchange.request``, ``exchange.caller``).

    It parses the body, runs the use case, audits every outcome exactly once (``exchange.audit``; a refused or
    faulted request through ``exchange.fault``) and answers (``exchange.reply``, or a SOAP Fault, or the
    transaction's error form); never an HTTP 500.
    """

    async def __call__(self, exchange: Exchange, /) -> SoapResponse: ...


# Built once per gateway from its typed runtime services (settings, records, auditor, SAML verifier).
HandlerFactory = Callable[["GatewayServices"], TransactionHandler]


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str  # "ITI-55": the audit trail's transaction, the metrics label, the log field
    name: str  # "Cross Gateway Patient Discovery"
    path: str  # the HTTP path it is served on (POST)
    request_action: str  # wsa:Action of the request
    response_action: str  # wsa:Action of the answer
    request_element: str  # Clark name of the SOAP Body's element in the request
    response_element: str  # ... and in the answer
    request_schema: str  # the XSD (under the vendored IHE schemas, tests/standards/ihe) defining the request body
    response_schema: str  # ... and the answer's
    atna: AtnaEvent
    error_form: ErrorForm
    handler: HandlerFactory  # its handler, built once per gateway: (GatewayServices) -> (Exchange) -> SoapResponse
    # REGISTRY_ERROR only: the XDS codes of a failure of our own and of a transient one (busy).
    generic_error: str | None = None
    busy_error: str | None = None


__all__ = ["HL7", "QUERY", "XDSB", "AtnaEvent", "ErrorForm", "HandlerFactory", "Transaction", "TransactionHandler"]
