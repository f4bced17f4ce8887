"""Shared outbound transport: one pooled ``httpx.AsyncClient`` per NHS service, retries, circuit breaker.

- One client per upstream, created once in the lifespan and closed at shutdown (LESSONS 14: never a client and a
  TLS context per request).
- Connect and read timeouts and Spine mutual TLS come from Settings (LESSONS 15: nothing environment-specific in
  code).
- Retries with exponential backoff and jitter only for transient failures: connect errors, 429 and 502-504. The
  caller fixes the request headers (X-Request-ID, Ssp-TraceID) before the first attempt, so every retry of one
  request carries the same id (PDS: "reuse the same value when retrying", SPEC §5.3).
- A circuit breaker per upstream so that a dead service fails fast (LESSONS 19).
- A pooled keep-alive connection that the service closed while our request was on its way (its idle timeout
  raced the request: "Server disconnected without sending a response", a reset, a failed write) is not a failing
  service: a replayable request (a read) is sent once more on a new connection, counted in
  ``xhuma_upstream_stale_connection_retries_total`` and never against the breaker (docs/nhs.md).
- Answers are asked for gzip (``Accept-Encoding: gzip``) and inflated here, never by httpx: its decoder inflates
  each network read without bound (a 64 KiB read of a gzip bomb is ~64 MiB), so the body is read raw and inflated
  in bounded steps; more than ``XHUMA_HTTP_MAX_RESPONSE_BYTES`` decoded bytes is an invalid answer.
"""

from __future__ import annotations

import enum
import functools
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from xhuma.config import Settings
from xhuma.errors import CircuitOpen, UpstreamInvalidResponse, UpstreamUnavailable
from xhuma.observability import Metrics

log = structlog.get_logger(__name__)

# 429 Too Many Requests (PDS rate limit, SPEC §5.2) and gateway failures are worth another try; a 500 or a 503
# from GP Connect is the provider's answer, but 503 is also what an overloaded proxy says, so it is retried too.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the service itself is failing (they count against the breaker); 4xx are answers.
FAILURE_STATUSES = frozenset({500, 502, 503, 504})
# Safe methods (RFC 9110 §9.2.1) may be sent again; a POST only when its caller says so (a FHIR read operation).
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How a request sent on a pooled connection fails when the service had closed that connection: a FIN before any
# answer (RemoteProtocolError "Server disconnected without sending a response"), a reset (ReadError), or a write
# into the closed socket (WriteError). Timeouts are not among them.
STALE_CONNECTION_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
)
# Request extension read by ShardedTransport: send this request on a connection of its own.
FRESH_CONNECTION = "xhuma.fresh_connection"
# The only content coding we ask for, because it is the only one inflated with a bound (below).
ACCEPT_ENCODING = "gzip"
# Inflated output per step: zlib builds each step's output in blocks and then copies it whole, so a step as large as
# the limit would briefly hold the limit twice.
INFLATE_STEP_BYTES = 256 * 1024


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Consecutive-failure breaker: opens after ``failure_threshold`` failed calls, stays open for
    ``reset_seconds``, then lets one trial call through (half-open) which closes or re-opens it."""

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._metrics = metrics
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._publish()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> None:
        """Raise CircuitOpen while the breaker is open (no request is sent)."""
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._trial_in_flight):
            raise CircuitOpen(service=self.service, detail=f"{self.service} breaker open")
        if state is BreakerState.HALF_OPEN:
            self._trial_in_flight = True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False
        self._publish()

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                log.warning("breaker_opened", service=self.service, failures=self._failures)
            self._opened_at = self._clock()
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state.labels(service=self.service).set(0 if self._opened_at is None else 1)


class _Transient(Exception):
    """Internal: an attempt failed in a way worth retrying."""

    def __init__(self, reason: str, response: httpx.Response | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int
    initial_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.http_retries, settings.http_backoff_initial_seconds, settings.http_backoff_max_seconds)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    response: httpx.Response
    attempts: int


FormFactory = Callable[[], Mapping[str, str]]


class _ConnectionUse:
    """httpcore's ``trace`` extension for one request: whether it opened a connection or was sent on a pooled
    one (only a pooled connection can have been closed by the service while idle)."""

    __slots__ = ("opened",)

    def __init__(self) -> None:
        self.opened = False

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if event in ("connection.connect_tcp.started", "connection.connect_unix_socket.started"):
            self.opened = True


class Upstream:
    """One NHS service: its pooled client, retry policy and breaker."""

    def __init__(
        self,
        service: str,
        client: httpx.AsyncClient,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        metrics: Metrics | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.service = service
        self.client = client
        self.retry = retry
        self.breaker = breaker
        self.max_response_bytes = max_response_bytes
        self._metrics = metrics

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        data: Mapping[str, str] | FormFactory | None = None,
        params: Any = None,
        replayable: bool | None = None,
    ) -> UpstreamResponse:
        """Send one logical request (retried with the same headers). Raises CircuitOpen or UpstreamUnavailable
        when no HTTP answer could be obtained, UpstreamInvalidResponse when the answer is too large or its
        encoding unreadable; any HTTP answer (including 4xx/5xx) is returned to the caller.

        ``replayable``: the request may be sent again after a pooled connection turned out to be closed (default:
        GET, HEAD, OPTIONS). ``data`` may be a function giving the form, called for every attempt (a form that
        must differ each time, such as a signed client assertion with a fresh ``jti``)."""
        self.breaker.before_call()
        if replayable is None:
            replayable = method.upper() in REPLAYABLE_METHODS
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.retries + 1),
            # Exponential backoff plus jitter, so that replicas retrying together do not stampede.
            wait=wait_exponential(multiplier=self.retry.initial_seconds, max=self.retry.max_seconds)
            + wait_random(0, self.retry.initial_seconds),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await self._attempt(method, url, headers, content, data, params, replayable)
        except _Transient as error:
            self.breaker.record_failure()
            if error.response is not None:
                # Retries exhausted on 429/502-504: hand the last answer back so the caller maps its
                # OperationOutcome, but the breaker already counted it.
                return UpstreamResponse(error.response, attempts)
            raise UpstreamUnavailable(
                f"{self.service} unreachable", service=self.service, detail=f"{error.reason} after {attempts} attempts"
            ) from None
        except _Fatal as error:
            self.breaker.record_failure()
            raise UpstreamUnavailable(
                f"{self.service} did not answer in time", service=self.service, detail=error.reason
            ) from None
        except _Unreadable as error:
            # A service sending what it must not (a body beyond any record's size, an encoding we did not ask
            # for) is failing: it counts against the breaker, and the caller learns it as an invalid answer.
            self.breaker.record_failure()
            raise UpstreamInvalidResponse(
                f"{self.service} answer unreadable", service=self.service, status=error.status, detail=error.reason
            ) from None
        if response.status_code in FAILURE_STATUSES:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        return UpstreamResponse(response, attempts)

    async def _attempt(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        data: Mapping[str, str] | FormFactory | None,
        params: Any,
        replayable: bool,
    ) -> httpx.Response:
        def build() -> httpx.Request:
            form = data() if callable(data) else data
            return self.client.build_request(
                method, url, headers=dict(headers), content=content, data=form, params=params
            )

        try:
            response = await self._send(build, replayable)
            try:
                body = await self._read_body(response)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing reached the service: safe to try again.
            raise _Transient(type(error).__name__) from error
        except httpx.TimeoutException as error:
            # A read/write timeout: the service may still be working on it; not retried (the read timeout is
            # already the longest we are prepared to wait), but it counts against the breaker.
            raise _Fatal(type(error).__name__) from error
        except httpx.TransportError as error:
            raise _Fatal(type(error).__name__) from error
        # The body is decoded: the answer is rebuilt without its content coding, so nothing decodes it again.
        answer = httpx.Response(
            response.status_code,
            headers=[(name, value) for name, value in response.headers.multi_items()
                     if name.lower() not in _ENTITY_FRAMING],
            content=body,
            request=response.request,
            extensions=response.extensions,
        )
        if answer.status_code in TRANSIENT_STATUSES:
            raise _Transient(f"HTTP {answer.status_code}", answer)
        return answer

    async def _send(self, build: Callable[[], httpx.Request], replayable: bool) -> httpx.Response:
        """Send the request (headers of the answer read, body not yet); once more, on a new connection, when a
        pooled connection turns out to have been closed by the service and the request is replayable."""
        request = build()
        connection = _ConnectionUse()
        request.extensions["trace"] = connection
        try:
            return await self.client.send(request, stream=True)
        except STALE_CONNECTION_ERRORS as error:
            if connection.opened or not replayable:
                raise
            # The service closed the idle connection as our request went out (its keep-alive timeout raced us):
            # the service is not failing, so this is no breaker failure and no retry of the retry policy.
            log.info("upstream_stale_connection_retried", service=self.service, error=type(error).__name__)
            if self._metrics is not None:
                self._metrics.stale_connection_retries.labels(service=self.service).inc()
            retry = build()
            retry.extensions[FRESH_CONNECTION] = True
            return await self.client.send(retry, stream=True)

    async def _read_body(self, response: httpx.Response) -> bytes:
        """The decoded body, read raw and inflated in steps that never produce more than the limit."""
        limit = self.max_response_bytes
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):  # x-gzip: the same coding (RFC 9110 §8.4.1.3)
            inflater: Any = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif coding in ("", "identity"):
            inflater = None
        else:
            raise _Unreadable(f"content-encoding {coding} was not asked for", response.status_code)
        parts: list[bytes] = []
        size = received = 0
        async for raw in response.aiter_raw():
            received += len(raw)
            if inflater is None:
                size += len(raw)
                if size > limit:
                    raise _Unreadable(f"body larger than {limit} bytes", response.status_code)
                parts.append(raw)
                continue
            pending = raw
            while pending:
                try:
                    piece = inflater.decompress(pending, min(INFLATE_STEP_BYTES, limit - size + 1))
                except zlib.error:
                    raise _Unreadable("gzip body is corrupt", response.status_code) from None
                size += len(piece)
                if size > limit:
                    raise _Unreadable(f"body larger than {limit} bytes once decoded", response.status_code)
                parts.append(piece)
                pending = inflater.unconsumed_tail
        if inflater is not None and received:  # an empty body (a 204, a HEAD) has no gzip member
            rest = inflater.flush(limit - size + 1)
            size += len(rest)
            if size > limit:
                raise _Unreadable(f"body larger than {limit} bytes once decoded", response.status_code)
            if not inflater.eof:
                raise _Unreadable("gzip body is truncated", response.status_code)
            parts.append(rest)
        return b"".join(parts)


# Headers that describe the body as sent, not as decoded.
_ENTITY_FRAMING = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class _Fatal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unreadable(Exception):
    """Internal: an answer whose body we refuse to read (too large once decoded, corrupt, unexpected coding)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@functools.lru_cache(maxsize=1)
def public_tls_context() -> ssl.SSLContext:
    """One verifying TLS context (public CAs) shared by the clients: building one costs ~80 ms."""
    return ssl.create_default_context(cafile=certifi.where())


def spine_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS verification for NHS upstreams: Spine CA bundle and mutual-TLS client certificate when configured.

    The simulator profile talks plain HTTP on loopback; INT/DEP/LIVE go through the Spine Secure Proxy over HSCN
    with Spine-issued certificates (SPEC §7.1)."""
    if settings.spine_client_cert is None and settings.spine_ca_bundle is None:
        return public_tls_context()
    context = ssl.create_default_context(cafile=str(settings.spine_ca_bundle) if settings.spine_ca_bundle else None)
    if settings.spine_client_cert is not None:
        context.load_cert_chain(
            str(settings.spine_client_cert),
            str(settings.spine_client_key) if settings.spine_client_key else None,
        )
    return context


class _Released(httpx.AsyncByteStream):
    """A response body that calls ``release`` once, when it is closed."""

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Requests spread over several connection pools, each request to the one with the fewest in flight.

    httpcore re-examines every connection of a pool each time a request is queued or finishes (and, for each idle
    one, counts them all again): a request's cost grows with the square of the pool. With a hundred requests in
    flight to one service (the Spine Secure Proxy, during a burst of ITI-38) that was most of the gateway's CPU.
    Pools a quarter of the size do the same work at a fraction of the cost.

    A request marked ``FRESH_CONNECTION`` (a retry after a stale pooled connection) goes to ``fresh``, a transport
    that keeps no idle connection: it opens a new one and closes it after the answer.
    """

    def __init__(
        self, shards: Sequence[httpx.AsyncBaseTransport], *, fresh: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not shards:
            raise ValueError("a sharded transport needs at least one shard")
        self._shards = list(shards)
        self._in_flight = [0] * len(self._shards)
        self._fresh = fresh

    @property
    def shards(self) -> tuple[httpx.AsyncBaseTransport, ...]:
        return tuple(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._fresh is not None and request.extensions.get(FRESH_CONNECTION):
            return await self._fresh.handle_async_request(request)
        index = min(range(len(self._shards)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._in_flight[index] -= 1
            raise
        # A request holds its connection until its body has been read and closed.
        response.stream = _Released(response.stream, lambda: self._release(index))
        return response

    def _release(self, index: int) -> None:
        self._in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()
        if self._fresh is not None:
            await self._fresh.aclose()


POOL_SHARDS = 4
MAX_CONNECTIONS = 100  # per upstream, across its shards
MAX_KEEPALIVE_CONNECTIONS = 20


def build_http_client(settings: Settings, *, mutual_tls: bool) -> httpx.AsyncClient:
    """A pooled client with the configured timeouts. ``mutual_tls`` for the Spine Secure Proxy (GP Connect);
    the API platform (PDS, SDS) is server-authenticated TLS only."""
    timeout = httpx.Timeout(
        connect=settings.http_connect_timeout_seconds,
        read=settings.http_read_timeout_seconds,
        write=settings.http_read_timeout_seconds,
        pool=settings.http_connect_timeout_seconds,
    )
    # The API platform (PDS, SDS) presents public certificates; only Spine endpoints use the Spine CA bundle.
    verify: ssl.SSLContext = spine_ssl_context(settings) if mutual_tls else public_tls_context()
    # Idle connections are dropped before the usual 5 s idle timeout of servers and proxies (Apache, uvicorn)
    # would close them under us; the stale-connection retry covers the races that remain.
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS // POOL_SHARDS,
                          max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS // POOL_SHARDS,
                          keepalive_expiry=settings.http_keepalive_expiry_seconds)
    shards = [httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False) for _ in range(POOL_SHARDS)]
    fresh = httpx.AsyncHTTPTransport(
        verify=verify, trust_env=False,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS // POOL_SHARDS, max_keepalive_connections=0),
    )
    return httpx.AsyncClient(
        timeout=timeout,
        transport=ShardedTransport(shards, fresh=fresh),
        headers={"Accept-Encoding": ACCEPT_ENCODING},
        follow_redirects=False,
        trust_env=False,
    )


def build_upstream(
    service: str, settings: Settings, *, mutual_tls: bool, metrics: Metrics | None = None,
    client: httpx.AsyncClient | None = None,
) -> Upstream:
    return Upstream(
        service,
        client or build_http_client(settings, mutual_tls=mutual_tls),
        retry=RetryPolicy.from_settings(settings),
        breaker=CircuitBreaker(
            service,
            failure_threshold=settings.breaker_failure_threshold,
            reset_seconds=settings.breaker_reset_seconds,
            metrics=metrics,
        ),
        metrics=metrics,
        max_response_bytes=settings.http_max_response_bytes,
    )


__all__ = [
    "ACCEPT_ENCODING",
    "FAILURE_STATUSES",
    "FRESH_CONNECTION",
    "REPLAYABLE_METHODS",
    "STALE_CONNECTION_ERRORS",
    "TRANSIENT_STATUSES",
    "BreakerState",
    "CircuitBreaker",
    "RetryPolicy",
    "Upstream",
    "UpstreamResponse",
    "build_http_client",
    "build_upstream",
    "spine_ssl_context",
]
