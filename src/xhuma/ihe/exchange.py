"""What a transaction handler is given: the gateway's typed runtime services, and one ``Exchange`` per request.

``GatewayServices`` is built once per gateway (settings, the use cases, the audit trail's front door, the SAML
verifier); a handler is built from it once (``Transaction.handler``). ``Exchange`` is the request being answered:
its transaction, the calling system, the parsed SOAP request and the admitted caller, and the steps every
transaction shares: audit an outcome (counted and timed under the transaction's id), answer a SOAP Fault for an
error outside the transaction's error form (audited), and wrap an answer in the SOAP envelope with the transaction's
response action.

This module imports nothing of the registry or of a transaction module: the transaction modules import it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from lxml import etree

from xhuma import errors, tracing
from xhuma.ihe import faults, soap
from xhuma.observability import level_enabled
from xhuma.ports import CallerIdentity

if TYPE_CHECKING:
    from xhuma.audit import Auditor
    from xhuma.config import Settings
    from xhuma.ihe.descriptor import Transaction
    from xhuma.ihe.saml import SamlVerifier
    from xhuma.records import Records

# The gateway's logger: the operator's one line per transaction and its errors keep the name they always had.
LOGGER = "xhuma.ihe.gateway"
log = structlog.get_logger(LOGGER)
_log_info = level_enabled(LOGGER)


@dataclass(frozen=True, slots=True)
class SoapResponse:
    status_code: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Transport-level facts about the caller (mTLS subject, address) for the audit trail."""

    cert_subject: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayServices:
    """The runtime services a transaction handler may use, built once per gateway."""

    settings: Settings
    records: Records
    auditor: Auditor
    verifier: SamlVerifier


def fault_response(error: BaseException, relates_to: str | None) -> SoapResponse:
    """The SOAP Fault answer for an error outside (or before) a transaction's own error form; a defect is logged
    by its type only and answered with neutral text."""
    fault = faults.soap_fault(error)
    if fault.code == "Receiver" and not isinstance(error, soap.SoapFault | errors.XhumaError):
        log.error("ihe_unexpected_error", error_type=type(error).__name__)
    headers = None
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        headers = {"Retry-After": str(retry_after)}
    return SoapResponse(
        fault.http_status, soap.fault_envelope(fault, relates_to=relates_to),
        soap.soap_content_type(soap.WSA_FAULT_ACTION), headers,
    )


def log_unexpected(transaction: Transaction, error: BaseException) -> None:
    """A defect answered in the transaction's error form: logged by its type only (never its text)."""
    if not isinstance(error, errors.XhumaError):
        log.error("ihe_unexpected_error", transaction=transaction.id, error_type=type(error).__name__)


class Exchange:
    """One request of one transaction, from the moment the gateway took it (``started``) to its answer.

    ``request`` and ``caller`` are set by the gateway before the handler runs (the parsed SOAP request, the caller
    it admitted); a handler that narrows the caller (``verifier.check_patient``) stores it back, so that a fault
    is audited with the caller as far as it was established.
    """

    __slots__ = ("_caller", "_request", "client", "services", "started", "transaction")

    def __init__(
        self, services: GatewayServices, transaction: Transaction, client: ClientInfo, started: float | None = None
    ) -> None:
        self.services = services
        self.transaction = transaction
        self.client = client
        self.started = time.perf_counter() if started is None else started
        self._request: soap.SoapRequest | None = None
        self._caller: CallerIdentity | None = None

    @property
    def request(self) -> soap.SoapRequest:
        """The parsed SOAP request (the gateway parses it before the handler runs)."""
        if self._request is None:
            raise RuntimeError("the exchange's SOAP request has not been parsed")
        return self._request

    @request.setter
    def request(self, request: soap.SoapRequest) -> None:
        self._request = request

    @property
    def caller(self) -> CallerIdentity:
        """The caller as admitted by the gateway, narrowed by the handler as it goes."""
        if self._caller is None:
            raise RuntimeError("the exchange's caller has not been admitted")
        return self._caller

    @caller.setter
    def caller(self, caller: CallerIdentity) -> None:
        self._caller = caller

    @property
    def message_id(self) -> str | None:
        """The request's wsa:MessageID (None before the envelope was parsed): what the answer relates to."""
        return self._request.addressing.message_id if self._request is not None else None

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    async def audit(self, outcome: str, **fields: Any) -> bool:
        """Commit one audit event under the transaction's id (which also counts and times it, ``xhuma.audit``);
        False when the audit trail is unavailable (the handler must then not disclose)."""
        transaction = self.transaction.id
        try:
            await self.services.auditor.record(transaction, outcome, **fields)
        except errors.AuditUnavailable:
            log.error("audit_unavailable", transaction=transaction)
            return False
        # The operator's one line per transaction: what and how it ended, never who (the audit trail says that).
        if _log_info():
            log.info("transaction", transaction=transaction, outcome=outcome, error_code=fields.get("error_code"),
                     duration_ms=fields.get("duration_ms"))
        return True

    async def audit_fault(self, error: BaseException) -> None:
        """Audit a request refused or faulted outside the transaction's error form, with the caller as far as it is
        known (else the transport's facts)."""
        outcome, code = faults.audit_outcome(error)
        reason = getattr(error, "reason", None)
        client = self.client
        caller = self._caller or CallerIdentity(client_cert_subject=client.cert_subject, client_address=client.address)
        await self.audit(
            outcome, caller=caller,
            error_code=code, reason=reason if isinstance(error, errors.SecurityError) else None,
            message_id=self.message_id, duration_ms=self.elapsed_ms(),
        )

    async def fault(self, error: BaseException) -> SoapResponse:
        """The audited SOAP Fault answering ``error``."""
        await self.audit_fault(error)
        return fault_response(error, self.message_id)

    def reply(self, body: etree._Element) -> SoapResponse:
        """``body`` in the SOAP envelope of the transaction's answer (its response action, RelatesTo the request)."""
        action = self.transaction.response_action
        with tracing.stage(None, "serialise"):
            data = soap.envelope(action, soap.element_markup(body), relates_to=self.message_id,
                                 timestamp_seconds=self.services.settings.wsse_timestamp_seconds)
        return SoapResponse(200, data, soap.soap_content_type(action))


__all__ = ["ClientInfo", "Exchange", "GatewayServices", "SoapResponse", "fault_response", "log_unexpected"]
