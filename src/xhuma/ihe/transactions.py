"""The IHE transactions this responding gateway serves: one descriptor each, one registry (how to add one:
TRANSACTIONS.md beside this module).

A descriptor holds what the rest of the gateway needs to know about a transaction: the HTTP path it is served on,
its WS-Addressing actions, the root elements of its request and response bodies and the schemas that define them,
its ATNA event (ITI TF-2 3.55.5, 3.38.5, 3.39.5), and the form its errors take. The endpoints route by path, the
gateway checks and answers with the actions, faults pick the XDS error codes, the audit trail and the metrics
label events with the id, and the ATNA exporter codes them; none of them spells a transaction out.

This module imports nothing of the gateway, so that the audit trail, the ATNA exporter and the application can
read it without loading the IHE code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

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
    handler: str  # the IheGateway coroutine answering it: (body, content type, client) -> SoapResponse
    # REGISTRY_ERROR only: the XDS codes of a failure of our own and of a transient one (busy).
    generic_error: str | None = None
    busy_error: str | None = None


_XCPD_SCHEMAS = "hl7v3/HL7V3/NE2008/multicacheschemas"
_XDS_SCHEMA = "xds/IHE/IHEXDSB.xsd"

ITI_55: Final = Transaction(
    id="ITI-55",
    name="Cross Gateway Patient Discovery",
    path="/SOAP/iti55",
    request_action="urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
    response_action="urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery",
    request_element=f"{{{HL7}}}PRPA_IN201305UV02",
    response_element=f"{{{HL7}}}PRPA_IN201306UV02",
    request_schema=f"{_XCPD_SCHEMAS}/PRPA_IN201305UV02.xsd",
    response_schema=f"{_XCPD_SCHEMAS}/PRPA_IN201306UV02.xsd",
    atna=AtnaEvent("110112", "Query", "E", "Cross Gateway Patient Discovery"),
    error_form=ErrorForm.XCPD_ACKNOWLEDGEMENT,
    handler="patient_discovery",
)
ITI_38: Final = Transaction(
    id="ITI-38",
    name="Cross Gateway Query",
    path="/SOAP/iti38",
    request_action="urn:ihe:iti:2007:CrossGatewayQuery",
    response_action="urn:ihe:iti:2007:CrossGatewayQueryResponse",
    request_element=f"{{{QUERY}}}AdhocQueryRequest",
    response_element=f"{{{QUERY}}}AdhocQueryResponse",
    request_schema=_XDS_SCHEMA,
    response_schema=_XDS_SCHEMA,
    atna=AtnaEvent("110112", "Query", "E", "Cross Gateway Query"),
    error_form=ErrorForm.REGISTRY_ERROR,
    handler="query",
    generic_error="XDSRegistryError",
    busy_error="XDSRegistryBusy",
)
ITI_39: Final = Transaction(
    id="ITI-39",
    name="Cross Gateway Retrieve",
    path="/SOAP/iti39",
    request_action="urn:ihe:iti:2007:CrossGatewayRetrieve",
    response_action="urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
    request_element=f"{{{XDSB}}}RetrieveDocumentSetRequest",
    response_element=f"{{{XDSB}}}RetrieveDocumentSetResponse",
    request_schema=_XDS_SCHEMA,
    response_schema=_XDS_SCHEMA,
    atna=AtnaEvent("110106", "Export", "R", "Cross Gateway Retrieve"),
    error_form=ErrorForm.REGISTRY_ERROR,
    handler="retrieve",
    generic_error="XDSRepositoryError",
    busy_error="XDSRepositoryBusy",
)

# The registry: a transaction is served once it is listed here.
TRANSACTIONS: Final[tuple[Transaction, ...]] = (ITI_55, ITI_38, ITI_39)

BY_ID: Final[Mapping[str, Transaction]] = MappingProxyType({t.id: t for t in TRANSACTIONS})
BY_PATH: Final[Mapping[str, Transaction]] = MappingProxyType({t.path: t for t in TRANSACTIONS})
IHE_TRANSACTION_IDS: Final = frozenset(BY_ID)


__all__ = [
    "BY_ID",
    "BY_PATH",
    "IHE_TRANSACTION_IDS",
    "ITI_38",
    "ITI_39",
    "ITI_55",
    "TRANSACTIONS",
    "AtnaEvent",
    "ErrorForm",
    "Transaction",
]
