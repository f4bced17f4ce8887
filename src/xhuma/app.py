"""Application factory: the only module that knows which adapters are plugged in."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xhuma import __version__, tracing
from xhuma.audit import Auditor, audit_key
from xhuma.compression import GzipMiddleware, GzipPolicy
from xhuma.config import Settings, load_settings
from xhuma.ihe.endpoints import SOAP_PATHS, SoapEndpoints
from xhuma.observability import (
    Metrics,
    admissible_request_id,
    configure_logging,
    new_request_id,
    request_id_var,
    trace_id_var,
)
from xhuma.ports import Cache, GpConnectClient, PdsClient, SdsClient
from xhuma.security.admin import require_admin
from xhuma.store.audit import SqlAuditStore
from xhuma.store.cache import STALL_CAP_FACTOR, MemoryCache, RedisCache, ResilientCache
from xhuma.store.crypto import CacheKeyring, EncryptedCache
from xhuma.store.keys import CacheKeys
from xhuma.store.lease import Leases, MemoryLeases, RedisLeases
from xhuma.store.tiers import LocalTier, TieredCache

if TYPE_CHECKING:
    from xhuma.ihe.endpoints import SoapServices
    from xhuma.nhs.wiring import NhsClients
    from xhuma.security.ratelimit import Limiter

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    """Everything a request handler may use, built in the lifespan and closed at shutdown."""

    settings: Settings
    metrics: Metrics
    cache: ResilientCache
    audit: SqlAuditStore
    keys: CacheKeys  # cache key names; patient keys use the keyring's keyed hash, never an NHS number
    pds: PdsClient  # NHS adapters (xhuma.nhs.wiring): real services, or the in-process simulator
    sds: SdsClient
    gpconnect: GpConnectClient
    auditor: Auditor | None = None  # the one front door of the audit trail (xhuma.audit)
    leases: Leases = field(default_factory=MemoryLeases)  # one ITI-38 pipeline per patient across replicas
    rate_limiter: Limiter | None = None  # SOAP callers' limit (shared by the replicas through Redis)
    nhs: NhsClients | None = None  # the NHS clients' wiring: upstream health, the in-process simulator
    soap: SoapServices | None = None  # what the SOAP endpoints use, built on their first request




class RequestContextMiddleware:
    """Request id and trace id for every log line and audit event, in-flight gauge, optional OTel server span.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware runs each request through an extra task and stream
    wrapper, which cost about a fifth of an ITI-39's CPU in bench/iti39_throughput.py.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_request_id = given_trace_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_request_id = value.decode("latin-1")
            elif name == b"x-trace-id":
                given_trace_id = value.decode("latin-1")
        # A caller-supplied id goes into logs and the audit trail: accept only a short, plain token.
        request_id = given_request_id if admissible_request_id(given_request_id) else new_request_id()
        if not admissible_request_id(given_trace_id):
            given_trace_id = request_id.replace("-", "")[:32]
        request_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), request_header]}
            await send(message)

        request_token = request_id_var.set(request_id)
        trace_token = trace_id_var.set(given_trace_id)
        metrics_token = tracing.metrics_var.set(self.metrics)  # stage timings of this request (tracing.stage)
        in_progress = self.metrics.requests_in_progress
        in_progress.append(None)
        try:
            if tracing.enabled():
                # Optional OpenTelemetry: one server span per request; its trace id then labels logs and audit.
                method = scope.get("method", "")
                with tracing.span(f"{method} {scope.get('path', '')}", **{"http.method": method}):
                    otel_trace_id = tracing.current_trace_id()
                    if otel_trace_id:
                        trace_id_var.set(otel_trace_id)
                    await self.app(scope, receive, send_with_request_id)
            else:
                await self.app(scope, receive, send_with_request_id)
        finally:
            in_progress.pop()
            tracing.metrics_var.reset(metrics_token)
            request_id_var.reset(request_token)
            trace_id_var.reset(trace_token)


class XhumaApp(FastAPI):
    """The FastAPI application (console, /api, probes, metrics), with the SOAP endpoints answered in front of it.

    A request to one of the three SOAP paths goes to ``soap`` (the request context around ``SoapEndpoints``) and
    never through FastAPI's own middleware stack and router, which cost a cached ITI-39 more than the transaction;
    ``SoapEndpoints`` answers every failure itself (a SOAP Fault, never a bare 500).
    """

    soap: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.soap is not None and scope["type"] == "http" and scope["path"] in SOAP_PATHS:
            scope["app"] = self
            await self.soap(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class ReadinessChecks:
    """The readiness checks, each run under its own time limit.

    A check that overruns is reported as failed and left to finish in the background rather than cancelled and
    awaited (cancelling a call into a frozen server can itself wait on that server); until it finishes, the next
    probe waits on the same call instead of starting another, so a frozen dependency never piles up checks.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._running: dict[str, asyncio.Future[bool]] = {}

    async def run(self, name: str, check: Callable[[], Awaitable[bool]]) -> tuple[bool, str | None]:
        """(ok, reason when not ok and known)."""
        running = self._running.get(name)
        if running is None:
            running = self._running[name] = asyncio.ensure_future(check())
            running.add_done_callback(lambda done: self._finished(name, done))
        finished, _ = await asyncio.wait({running}, timeout=self.timeout_seconds)
        if not finished:
            return False, f"no answer within {self.timeout_seconds:g} s"
        if running.cancelled() or running.exception() is not None:
            return False, "check failed"
        return bool(running.result()), None

    def _finished(self, name: str, done: asyncio.Future[bool]) -> None:
        if self._running.get(name) is done:
            del self._running[name]
        if not done.cancelled():
            done.exception()  # retrieved: an overrun check's failure is not an "exception never retrieved"


def build_cache(settings: Settings) -> Cache:
    if settings.redis_url:
        return RedisCache(
            settings.redis_url, namespace=settings.redis_namespace, timeout_seconds=settings.redis_timeout_seconds,
            max_connections=settings.redis_max_connections,
            # with_tiers bounds every cache operation by Redis's silence: the socket only caps a busy process's wait
            socket_timeout_seconds=settings.redis_timeout_seconds * STALL_CAP_FACTOR,
        )
    return MemoryCache(settings.memory_cache_max_items)


def with_tiers(backend: Cache, settings: Settings) -> Cache:
    """Redis behind a time limit, a bypass and the in-process tier (docs/operations.md, Cache tiers); the
    in-process cache needs none of them."""
    if not isinstance(backend, RedisCache):
        return backend
    return TieredCache(
        backend, LocalTier(settings.local_tier_max_bytes), holds=CacheKeys.held_in_process,
        vouched=CacheKeys.answered_when_absent,
        timeout_seconds=settings.redis_timeout_seconds, bypass_after=settings.cache_bypass_after_failures,
        bypass_seconds=settings.cache_bypass_seconds, lost_window_seconds=settings.ttl_document_seconds,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    # Strict profiles refuse to start without client auth, SAML verification, audit key and admin auth.
    from xhuma.security.startup import check_startup

    check_startup(settings)
    metrics = Metrics()
    if os.environ.get("OTEL_TRACES_EXPORTER", "none").lower() != "none":
        tracing.configure_tracing()  # the xhuma[otel] extra: spans per request and stage, exported per OTEL_*
    tracing.refresh()  # or a provider OpenTelemetry's auto-instrumentation installed: decided once, here
    pseudonym_key = audit_key(settings)
    # Encryption at rest (docs/data-protection.md): strict profiles refuse to start without XHUMA_CACHE_KEYS
    # (ConfigurationError); the simulator makes an ephemeral key. Subkeys are derived once, here.
    keyring = CacheKeyring.from_settings(settings)
    if keyring.ephemeral:
        log.warning("cache_key_ephemeral", detail="XHUMA_CACHE_KEYS unset: cached data is unreadable after restart")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Every value sealed (memory too: one code path); a value that does not open is a logged miss.
            backend = build_cache(settings)
            cache = ResilientCache(
                EncryptedCache(with_tiers(backend, settings), keyring, context=settings.redis_namespace),
                name="redis" if settings.redis_url else "memory",
            )
            # Replicas coordinate through the same Redis: pipeline leases and rate-limit buckets
            # (docs/operations.md, Replicas); without Redis both live in this process.
            from xhuma.security.ratelimit import RateLimiter, SharedRateLimiter

            leases: Leases
            rate_limiter: Limiter
            if isinstance(backend, RedisCache):
                leases = RedisLeases(backend.client, namespace=backend.namespace)
                rate_limiter = SharedRateLimiter(
                    backend.client, namespace=backend.namespace, per_minute=settings.rate_limit_per_minute
                )
            else:
                leases = MemoryLeases()
                rate_limiter = RateLimiter(settings.rate_limit_per_minute)
            stack.push_async_callback(cache.close)
            audit = SqlAuditStore(
                settings.effective_database_url, write_timeout_seconds=settings.audit_write_timeout_seconds
            )
            stack.push_async_callback(audit.close)
            if audit.is_sqlite:
                # Embedded default: the SQLite audit file is created and migrated on start-up.
                await audit.migrate()
            exporter = None
            if settings.atna_syslog_url:
                from xhuma.atna import AtnaExporter

                exporter = AtnaExporter(settings.atna_syslog_url, source_id=settings.home_community_urn,
                                        ca_file=settings.atna_ca_file, metrics=metrics,
                                        queue_size=settings.atna_queue_size)
                exporter.start()
                stack.push_async_callback(exporter.close)
            keys = CacheKeys(keyring.patient_hash)
            auditor = Auditor(audit, hmac_key=pseudonym_key, metrics=metrics, exporter=exporter)
            stack.push_async_callback(auditor.close)  # queued voids committed before the store closes
            # NHS clients: one pooled HTTP client per upstream, closed at shutdown; in the simulator profile the
            # simulator is served on loopback and the clients point at it (xhuma.nhs.wiring).
            from xhuma.nhs.wiring import nhs_clients

            nhs = await stack.enter_async_context(
                nhs_clients(settings, cache=cache, auditor=auditor, metrics=metrics, keys=keys)
            )
            runtime = Runtime(
                settings=settings, metrics=metrics, cache=cache, audit=audit, keys=keys,
                pds=nhs.pds, sds=nhs.sds, gpconnect=nhs.gpconnect, auditor=auditor, leases=leases,
                rate_limiter=rate_limiter, nhs=nhs,
            )
            app.state.runtime = runtime
            log.info("xhuma_started", profile=settings.profile.value, version=__version__,
                     cache=cache.name, audit="sqlite" if audit.is_sqlite else "postgresql")
            yield
            log.info("xhuma_stopping")

    # The API description names every admin route and parameter: not for anonymous callers (issue 16). FastAPI's
    # own public /openapi.json is off; the same document is served below behind the admin authentication.
    app = XhumaApp(title="Xhuma", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                   openapi_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    from xhuma.web import mount as mount_web

    mount_web(app)  # /api/* (admin bearer auth) and the operator console
    # The IHE responding gateway, POST /SOAP/iti55, /SOAP/iti38, /SOAP/iti39, is served ahead of FastAPI; the
    # request context (ids, in-flight gauge, server span) wraps it and everything else.
    app.soap = RequestContextMiddleware(SoapEndpoints(None), metrics=metrics)
    # The SOAP endpoints compress their own answers; the console, /api and /metrics go through this.
    app.add_middleware(GzipMiddleware, policy=GzipPolicy.from_settings(settings))
    app.add_middleware(RequestContextMiddleware, metrics=metrics)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_admin)])
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "live", "version": __version__}

    checks = ReadinessChecks(settings.health_check_timeout_seconds)

    @app.get("/health/ready", tags=["health"])
    async def ready(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        started = time.perf_counter()
        # Both checks at once, each under its own time limit: the probe answers within 2 s whatever hangs.
        (cache_ok, cache_reason), (audit_ok, audit_reason) = await asyncio.gather(
            checks.run("cache", runtime.cache.ping), checks.run("audit", runtime.audit.ping)
        )
        results: dict[str, dict[str, Any]] = {"cache": {"ok": cache_ok, "backend": runtime.cache.name}}
        if not cache_ok:
            results["cache"]["reason"] = cache_reason or runtime.cache.last_error or "cache unreachable"
        results["audit"] = {"ok": audit_ok}
        if not audit_ok:
            results["audit"]["reason"] = audit_reason or runtime.audit.last_error or "audit store unreachable"
        results["configuration"] = {"ok": True, "profile": settings.profile.value}
        # The audit store is essential (no disclosure without audit); the cache is not (bypassed).
        if not audit_ok:
            status, code = "unavailable", 503
        elif not cache_ok:
            status, code = "degraded", 200
        else:
            status, code = "ready", 200
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        return JSONResponse({"status": status, "checks": results, "elapsed_ms": elapsed_ms}, status_code=code)

    @app.get("/metrics", tags=["health"])
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_factory() -> FastAPI:
    """Entry point for uvicorn (``factory=True``): settings from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    from xhuma.config import ConfigurationError
    from xhuma.replicas import replica_problem

    problem = replica_problem(settings)  # `xhuma serve` refuses first; this covers other process managers
    if problem:
        raise ConfigurationError(problem)
    return create_app(settings)
