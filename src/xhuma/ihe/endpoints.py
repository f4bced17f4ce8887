"""HTTP endpoints of the responding gateway: POST /SOAP/iti55, /SOAP/iti38, /SOAP/iti39.

The paths are kept from the earlier gateway so that existing EHR configurations keep working. The body is
read with a hard limit (``XHUMA_MAX_REQUEST_BYTES``): a larger request gets a SOAP Fault as soon as the limit
is crossed, without reading the rest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
from fastapi import APIRouter, Depends, Request, Response

from xhuma.errors import RateLimited, RequestTooLarge, SecurityError
from xhuma.ihe.gateway import ClientInfo, IheGateway, SoapResponse
from xhuma.records import Records

if TYPE_CHECKING:
    from xhuma.app import Runtime

log = structlog.get_logger(__name__)

router = APIRouter(tags=["ihe"])


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
        cache=runtime.cache,
        keys=runtime.keys,
        converter=ccda_converter,
    )
    return IheGateway(runtime.settings, records, runtime.auditor)


async def get_gateway(request: Request) -> IheGateway:
    """FastAPI dependency: the application's gateway (tests may override it). Async: a plain ``def`` dependency
    would be run on the thread pool for every request."""
    runtime = request.app.state.runtime
    gateway: IheGateway | None = runtime.extras.get("ihe_gateway")
    if gateway is None:
        gateway = build_gateway(runtime)
        runtime.extras["ihe_gateway"] = gateway
    return gateway


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _client(request: Request) -> ClientInfo:
    certificate = getattr(request.state, "client_cert", None)
    subject = getattr(certificate, "subject", None)
    address = getattr(request.state, "client_address", None) or (request.client.host if request.client else None)
    return ClientInfo(cert_subject=str(subject) if subject else None, address=address)


async def _authenticate(request: Request) -> None:
    """Transport-level client authentication (mTLS allow-list) when the security capability provides it."""
    try:
        from xhuma.security.client_auth import authenticate_client
    except ImportError:  # pragma: no cover - the security capability is part of the product
        return
    authenticate_client(request)
    from xhuma.security.ratelimit import check_rate_limit

    check_rate_limit(request)  # RateLimited -> SOAP Fault (Receiver) with Retry-After


async def _handle(request: Request, gateway: IheGateway, transaction: str) -> Response:
    try:
        await _authenticate(request)
        body = await read_body(request, gateway.settings.max_request_bytes)
    except (RequestTooLarge, SecurityError, RateLimited) as error:
        answer = gateway._fault(error, None)
        log.info("ihe_request_refused", transaction=transaction, error_code=error.code)
        # Refused callers are audited too (who knocked, from where, why): one event per transaction attempt.
        await gateway._audit_fault(transaction, error, None, None, _client(request), time.perf_counter())
        return _response(answer, close=isinstance(error, RequestTooLarge))
    content_type = request.headers.get("content-type")
    client = _client(request)
    if transaction == "ITI-55":
        answer = await gateway.patient_discovery(body, content_type, client)
    elif transaction == "ITI-38":
        answer = await gateway.query(body, content_type, client)
    else:
        answer = await gateway.retrieve(body, content_type, client)
    return _response(answer)


def _response(answer: SoapResponse, *, close: bool = False) -> Response:
    headers = dict(answer.headers or {})
    if close:
        headers["Connection"] = "close"  # the rest of an oversized body is not read
    return Response(answer.body, status_code=answer.status_code, media_type=answer.content_type, headers=headers)


@router.post("/SOAP/iti55")
async def iti55(request: Request, gateway: IheGateway = Depends(get_gateway)) -> Response:
    """ITI-55 Cross Gateway Patient Discovery (XCPD)."""
    return await _handle(request, gateway, "ITI-55")


@router.post("/SOAP/iti38")
async def iti38(request: Request, gateway: IheGateway = Depends(get_gateway)) -> Response:
    """ITI-38 Cross Gateway Query (XCA)."""
    return await _handle(request, gateway, "ITI-38")


@router.post("/SOAP/iti39")
async def iti39(request: Request, gateway: IheGateway = Depends(get_gateway)) -> Response:
    """ITI-39 Cross Gateway Retrieve (XCA)."""
    return await _handle(request, gateway, "ITI-39")
