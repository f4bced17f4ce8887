"""The responding gateway's shared steps, and the dispatch to the transaction's handler.

For every transaction alike, ``IheGateway.answer`` parses the SOAP request (Fault on failure), checks WS-Addressing
against the descriptor's request action and admits the caller (XUA), then hands the ``Exchange`` to the handler the
descriptor names (``xhuma.ihe.transactions``): it parses the body, runs the use case in ``xhuma.records``, renders
the answer in the transaction's own form and audits the outcome through the exchange (which counts and times it
under the transaction's id). Whatever goes wrong, the caller gets a SOAP Fault or the transaction's error form;
never a bare HTTP 500 (LESSONS 7).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from xhuma.ihe import soap
from xhuma.ihe.descriptor import Transaction, TransactionHandler
from xhuma.ihe.exchange import ClientInfo, Exchange, GatewayServices, SoapResponse, fault_response
from xhuma.ihe.saml import UNIDENTIFIED, SamlVerifier
from xhuma.ihe.transactions import TRANSACTIONS
from xhuma.ports import CallerIdentity
from xhuma.store.keys import CacheKeys

if TYPE_CHECKING:
    from xhuma.audit import Auditor
    from xhuma.config import Settings
    from xhuma.records import Records


class IheGateway:
    """The registered transactions over one set of runtime services; a handler is built once per transaction, the
    first time it is needed (so a transaction registered after the gateway was built is served too)."""

    def __init__(
        self,
        settings: Settings,
        records: Records,
        auditor: Auditor,
        *,
        verifier: SamlVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.auditor = auditor
        self.verifier = verifier or SamlVerifier(settings)
        self.services = GatewayServices(settings, records, auditor, self.verifier)
        self._handlers: dict[str, TransactionHandler] = {}
        for transaction in TRANSACTIONS:
            self.handler(transaction)

    def handler(self, transaction: Transaction) -> TransactionHandler:
        """The handler answering ``transaction`` over this gateway's services."""
        handler = self._handlers.get(transaction.id)
        if handler is None:
            handler = self._handlers[transaction.id] = transaction.handler(self.services)
        return handler

    async def answer(
        self, transaction: Transaction, body: bytes, content_type: str | None, client: ClientInfo
    ) -> SoapResponse:
        """The answer to one request of ``transaction``: the shared SOAP steps, then its handler."""
        exchange = Exchange(self.services, transaction, client)
        try:
            request = exchange.request = soap.parse_request(body, content_type)
            exchange.caller = await self._open(request, transaction.request_action, client)
        except Exception as error:
            return await exchange.fault(error)
        handler = self._handlers.get(transaction.id) or self.handler(transaction)
        return await handler(exchange)

    async def refused(self, transaction: Transaction, error: BaseException, client: ClientInfo, started: float) -> None:
        """Audit a caller turned away before its request was read (client checks, body limit): who knocked, from
        where, why; one event per transaction attempt."""
        await Exchange(self.services, transaction, client, started).audit_fault(error)

    async def _open(self, request: soap.SoapRequest, action: str, client: ClientInfo) -> CallerIdentity:
        """Addressing and XUA checks of a parsed request (which the exchange already holds, so that a refusal here
        is audited with its MessageID and answered with RelatesTo)."""
        soap.check_addressing(
            request.addressing, expected_actions=(action,), reply_to_allow_list=self.settings.reply_to_allow_list
        )
        caller = await self.verifier.admit(request.security)
        if caller is UNIDENTIFIED:  # no assertion (optional mode): only the transport's facts
            return CallerIdentity(client_cert_subject=client.cert_subject, client_address=client.address)
        return replace(caller, client_cert_subject=client.cert_subject, client_address=client.address)


__all__ = ["CacheKeys", "ClientInfo", "IheGateway", "SoapResponse", "fault_response"]
