"""Shared outbound transport: one pooled ``httpx.AsyncClient`` per NHS service, retries, circuit breaker.

- One client per upstream, created once in the lifespan and closed at shutdown (LESSONS 14: never a client and a
  TLS context per request).
- Connect and read timeouts and Spine mutual TLS come from Settings (LESSONS 15: nothing environment-specific in
  code).
- Retries with exponential backoff and jitter only for transient failures: connect errors, 429 and 502-504. The
  caller fixes the request headers (X-Request-ID, Ssp-TraceID) before the first attempt, so every retry of one
  request carries the same id (PDS: "reuse the same value when retrying", SPEC §5.3).
- A circuit breaker per upstream so that a dead service fails fast (LESSONS 19).
"""

from __future__ import annotations

import enum
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from xhuma.config import Settings
from xhuma.errors import CircuitOpen, UpstreamUnavailable
from xhuma.observability import Metrics

log = structlog.get_logger(__name__)

# 429 Too Many Requests (PDS rate limit, SPEC §5.2) and gateway failures are worth another try; a 500 or a 503
# from GP Connect is the provider's answer, but 503 is also what an overloaded proxy says, so it is retried too.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the service itself is failing (they count against the breaker); 4xx are answers.
FAILURE_STATUSES = frozenset({500, 502, 503, 504})


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
    ) -> None:
        self.service = service
        self.client = client
        self.retry = retry
        self.breaker = breaker
        self._metrics = metrics

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        params: Any = None,
    ) -> UpstreamResponse:
        """Send one logical request (retried with the same headers). Raises CircuitOpen or UpstreamUnavailable
        when no HTTP answer could be obtained; any HTTP answer (including 4xx/5xx) is returned to the caller."""
        self.breaker.before_call()
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
                    response = await self._attempt(method, url, headers, content, data, params)
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
        data: Mapping[str, str] | None,
        params: Any,
    ) -> httpx.Response:
        try:
            response = await self.client.request(
                method, url, headers=dict(headers), content=content, data=data, params=params
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing reached the service: safe to try again.
            raise _Transient(type(error).__name__) from error
        except httpx.TimeoutException as error:
            # A read/write timeout: the service may still be working on it; not retried (the read timeout is
            # already the longest we are prepared to wait), but it counts against the breaker.
            raise _Fatal(type(error).__name__) from error
        except httpx.TransportError as error:
            raise _Fatal(type(error).__name__) from error
        if response.status_code in TRANSIENT_STATUSES:
            await response.aread()
            raise _Transient(f"HTTP {response.status_code}", response)
        return response


class _Fatal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
    """

    def __init__(self, shards: Sequence[httpx.AsyncBaseTransport]) -> None:
        if not shards:
            raise ValueError("a sharded transport needs at least one shard")
        self._shards = list(shards)
        self._in_flight = [0] * len(self._shards)

    @property
    def shards(self) -> tuple[httpx.AsyncBaseTransport, ...]:
        return tuple(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
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
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS // POOL_SHARDS,
                          max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS // POOL_SHARDS)
    shards = [httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False) for _ in range(POOL_SHARDS)]
    return httpx.AsyncClient(
        timeout=timeout,
        transport=ShardedTransport(shards),
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
    )


__all__ = [
    "FAILURE_STATUSES",
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
