"""HTTP endpoints of the responding gateway: POST on each registered transaction's path (/SOAP/iti55, /SOAP/iti38,
/SOAP/iti39: ``xhuma.ihe.transactions``).

``SoapEndpoints`` is a plain ASGI middleware in front of the FastAPI application. A request to one of those
paths goes from the body bytes to ``IheGateway`` and back without routing, dependency injection or
request/response objects (on a cached ITI-39 those cost as much as the transaction itself; see
docs/benchmarks.md); every other request passes on to the application. The paths are kept from the earlier
gateway so that existing EHR configurations keep working.

The body is read with a hard limit (``XHUMA_MAX_REQUEST_BYTES``): a larger request gets a SOAP Fault as soon as
the limit is crossed, without reading the rest. Whatever happens, the caller gets a SOAP Fault or the
transaction's own error form, never a bare HTTP 500 (LESSONS 7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from xhuma.compression import GzipPolicy, accepts_gzip, request_accept_encoding
from xhuma.config import Settings
from xhuma.errors import RateLimited, RequestTooLarge, SecurityError
from xhuma.ihe.descriptor import Transaction
from xhuma.ihe.gateway import ClientInfo, IheGateway, SoapResponse, fault_response
from xhuma.ihe.saml import SamlVerifier
from xhuma.ihe.soap import SoapFault
from xhuma.ihe.transactions import BY_PATH
from xhuma.observability import Metrics
from xhuma.records import Records
from xhuma.security.client_auth import ClientAuthenticator
from xhuma.security.ratelimit import Limiter, RateLimiter, limit_key
from xhuma.security.tls import PEER_EXTENSION, scope_header

if TYPE_CHECKING:
    from xhuma.app import Runtime

log = structlog.get_logger(__name__)

# The served paths and their transactions: the registry of xhuma.ihe.transactions.
SOAP_PATHS = BY_PATH


def build_gateway(runtime: Runtime) -> IheGateway:
    """The gateway over the runtime's adapters (built once per application)."""
    from xhuma.ihe.conversion import ccda_converter

    if runtime.auditor is None:
        raise RuntimeError("the application has no auditor: nothing may be disclosed")
    records = Records(
        runtime.settings,
        pds=runtime.pds,
        sds=runtime.sds,
        gpconnect=runtime.gpconnect,
        cache=runtime.cache.strict,  # a failed read raises CacheError (busy), never reads as "no document"
        keys=runtime.keys,
        converter=ccda_converter,
        leases=runtime.leases,
        terminology=getattr(runtime.nhs, "terminology", None),  # issue 13; None: fallbacks
    )
    # One use per SAML assertion across replicas: the replay guard keeps used assertion ids in the shared cache.
    verifier = SamlVerifier(runtime.settings, replay_cache=runtime.cache)
    return IheGateway(runtime.settings, records, runtime.auditor, verifier=verifier)


@dataclass(frozen=True, slots=True)
class ClientChecks:
    """Who may call the SOAP endpoints and how often: client authentication (allow-list, client CA, trusted
    proxies) and the rate limit, when configured."""

    authenticator: ClientAuthenticator
    limiter: Limiter
    metrics: Metrics | None = None

    @classmethod
    def configured(cls, settings: Settings, limiter: Limiter | None, metrics: Metrics | None) -> ClientChecks | None:
        """None without any of them: the caller is then simply the transport peer."""
        if not (settings.client_cert_allow_list or settings.tls_client_ca_file or settings.trusted_proxies
                or settings.rate_limit_per_minute > 0):
            return None
        return cls(ClientAuthenticator(settings), limiter or RateLimiter(settings.rate_limit_per_minute), metrics)


@dataclass(frozen=True, slots=True)
class SoapServices:
    """Everything the SOAP endpoints use, typed, built once per application from its runtime."""

    gateway: IheGateway
    gzip: GzipPolicy
    client_checks: ClientChecks | None = None

    @classmethod
    def of(cls, runtime: Runtime) -> SoapServices:
        return cls.around(build_gateway(runtime), limiter=runtime.rate_limiter, metrics=runtime.metrics)

    @classmethod
    def around(
        cls, gateway: IheGateway, *, limiter: Limiter | None = None, metrics: Metrics | None = None
    ) -> SoapServices:
        """The services of ``gateway``, configured by its settings."""
        settings = gateway.settings
        return cls(gateway, GzipPolicy.from_settings(settings), ClientChecks.configured(settings, limiter, metrics))


def services_of(app: Any) -> SoapServices:
    """The application's SOAP services, built from its runtime (``app.state.runtime``) on first use."""
    runtime: Runtime = app.state.runtime
    if runtime.soap is None:
        runtime.soap = SoapServices.of(runtime)
    return runtime.soap


def gateway_of(app: Any) -> IheGateway:
    """The application's gateway (the console's document pages and the replica tests reach its records)."""
    return services_of(app).gateway


class ClientDisconnected(Exception):
    """The caller went away before its request was complete: there is nobody to answer."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, or ``RequestTooLarge`` as soon as it (or its declared length) exceeds ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _peer(scope: Scope) -> ClientInfo:
    """The caller as the transport saw it (no client authentication, no proxy configured)."""
    peer = (scope.get("extensions") or {}).get(PEER_EXTENSION)
    address = peer.get("address") if peer else None
    if address is None and scope.get("client"):
        address = scope["client"][0]
    return ClientInfo(address=address)


class ClientRefused(Exception):
    """A caller the client checks turned away (``error``), as far as they identified it (``client``)."""

    def __init__(self, error: SecurityError | RateLimited, client: ClientInfo) -> None:
        super().__init__(error.code)
        self.error = error
        self.client = client


async def _identify_client(scope: Scope, receive: Receive, checks: ClientChecks | None) -> ClientInfo:
    """The calling system; ``ClientRefused`` when it is not a known system (SecurityError) or over its rate limit
    (RateLimited: a SOAP Fault with Retry-After)."""
    if checks is None:
        return _peer(scope)
    request = Request(scope, receive)  # what the client-authentication and rate-limit checks read
    seen = checks.authenticator.client_address(request)
    address = seen or (request.client.host if request.client else None)
    try:
        certificate = checks.authenticator.authenticate(request)
    except SecurityError as error:
        if checks.metrics is not None:
            checks.metrics.client_auth_failures.inc()
        raise ClientRefused(error, ClientInfo(address=address)) from None
    client = ClientInfo(cert_subject=certificate.subject if certificate and certificate.subject else None,
                        address=address)
    if checks.limiter.enabled:
        try:
            await checks.limiter.take(limit_key(certificate, seen))
        except RateLimited as error:
            if checks.metrics is not None:
                checks.metrics.rate_limited.inc()
            raise ClientRefused(error, client) from None
    return client


async def _send(send: Send, answer: SoapResponse, *, extra: list[tuple[bytes, bytes]] | None = None,
                gzip: GzipPolicy | None = None, accept_encoding: bytes | None = None) -> None:
    """The one place SOAP answers are sent: gzip-compressed (the whole entity, MTOM parts included) when ``gzip``
    is on, the caller accepts gzip and the answer is large enough (docs/operations.md)."""
    body = answer.body
    headers = [(b"content-type", answer.content_type.encode("latin-1"))]
    if gzip is not None and gzip.enabled:
        headers.append((b"vary", b"accept-encoding"))
        if accepts_gzip(accept_encoding) and (compressed := await gzip.encode(body)) is not None:
            body = compressed
            headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    for name, value in (answer.headers or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SoapEndpoints:
    """ASGI middleware: serves POST on the registered transactions' paths (``SOAP_PATHS``), passes everything else on
    to ``app`` (None: nothing else is served here; ``xhuma.app.XhumaApp`` sends only the SOAP paths).

    ``gateway`` fixes the gateway (tests), the rest then follows its settings; otherwise everything is the
    application's (``services_of(scope["app"])``).
    """

    def __init__(self, app: ASGIApp | None, *, gateway: IheGateway | None = None) -> None:
        self.app = app
        self._gateway = gateway
        self._services: SoapServices | None = None

    def services(self, scope: Scope) -> SoapServices:
        if self._gateway is None:
            return services_of(scope["app"])
        if self._services is None:
            self._services = SoapServices.around(self._gateway)
        return self._services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transaction = SOAP_PATHS.get(scope["path"]) if scope["type"] == "http" else None
        if transaction is None:
            if self.app is None:
                raise RuntimeError("SoapEndpoints without an application was sent a request it does not serve")
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            fault = fault_response(SoapFault("Sender", "This endpoint accepts SOAP 1.2 requests by HTTP POST"), None)
            await _send(send, SoapResponse(405, fault.body, fault.content_type), extra=[(b"allow", b"POST")])
            return
        services: SoapServices | None = None
        try:
            services = self.services(scope)
            answer, close = await self._answer(scope, receive, services, transaction)
        except ClientDisconnected:
            return
        except Exception as error:
            # A defect before the transaction was reached (the gateway, the client checks): still a Receiver Fault
            # with neutral text, never a bare 500 or a traceback (LESSONS 7).
            answer, close = fault_response(error, None), False
        await _send(send, answer, extra=[(b"connection", b"close")] if close else None,
                    gzip=services.gzip if services is not None else None,
                    accept_encoding=request_accept_encoding(scope))

    async def _answer(
        self, scope: Scope, receive: Receive, services: SoapServices, transaction: Transaction
    ) -> tuple[SoapResponse, bool]:
        """(the answer, whether to close the connection)."""
        started = time.perf_counter()
        gateway = services.gateway
        client: ClientInfo | None = None
        try:
            client = await _identify_client(scope, receive, services.client_checks)
            body = await read_body(scope, receive, gateway.settings.max_request_bytes)
        except (ClientRefused, RequestTooLarge) as refusal:
            error = refusal.error if isinstance(refusal, ClientRefused) else refusal
            log.info("ihe_request_refused", transaction=transaction.id, error_code=error.code)
            # Refused callers are audited too (who knocked, from where, why): one event per transaction attempt.
            if isinstance(refusal, ClientRefused):  # who it was, as far as the checks found out
                client = refusal.client
            assert client is not None
            await gateway.refused(transaction, error, client, started)
            # The rest of an oversized body is not read, so the connection cannot be reused.
            return fault_response(error, None), isinstance(error, RequestTooLarge)
        try:
            return await gateway.answer(transaction, body, scope_header(scope, b"content-type"), client), False
        except Exception as error:
            # The gateway answers every failure in the transaction's own form; this is the last net, for a defect
            # (a Receiver fault with neutral text, logged by ``fault_response``).
            return fault_response(error, None), False
