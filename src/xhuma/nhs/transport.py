"""Shared outbound transport: one pooled ``httpx.AsyncClient`` per NHS service, retries, circuit breaker.

- One client per upstream, created once in the lifespan and closed at shutdown (LESSONS 14: never a client and a
  TLS context per request).
- Connect and read timeouts and Spine mutual TLS come from Settings (LESSONS 15: nothing environment-specific in
  code).
- Retries with exponential backoff and jitter only for transient failures: connect errors, 429 and 502-504. The
  caller fixes the request headers (X-Request-ID, Ssp-TraceID) before the first attempt, so every retry of one
  request carries the same id (PDS: "reuse the same value when retrying", SPEC §5.3).
- A circuit breaker per upstream endpoint so that a dead service fails fast (LESSONS 19) and a failing GP practice
  never refuses another (``BreakerRegistry``: per practice for GP Connect, per base URL for PDS and SDS), plus one
  per peer (the proxy, the platform's host) that only connections refused or timed out count against.
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
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import certifi
import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from xhuma.config import Settings
from xhuma.errors import CircuitOpen, UpstreamInvalidResponse, UpstreamUnavailable, XhumaError
from xhuma.nhs.upstream_health import UpstreamHealth
from xhuma.observability import BreakerSnapshot, Metrics

log = structlog.get_logger(__name__)

# 429 Too Many Requests (PDS rate limit, SPEC §5.2) and gateway failures are worth another try; a 500 or a 503
# from GP Connect is the provider's answer, but 503 is also what an overloaded proxy says, so it is retried too.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Statuses that say the service itself is failing (they count against the breaker); 4xx are answers, and 429 says
# the service is alive but wants us slower (neutral: a caller's burst must not open the breaker for everyone).
FAILURE_STATUSES = frozenset({500, 502, 503, 504})
RATE_LIMITED = 429
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


class _Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # says nothing about the endpoint's health (cancelled, rate limited, our own error)


class BreakerTicket:
    """One call admitted by a breaker. Settled once: ``success``, ``failure`` or ``release`` (neutral); a ticket
    left unsettled (the caller was cancelled) is released by ``Upstream.request`` so a probe never stays taken."""

    __slots__ = ("_breaker", "generation", "probe", "settled", "subject")

    def __init__(self, breaker: CircuitBreaker, generation: int, probe: bool, subject: int | None) -> None:
        self._breaker = breaker
        self.generation = generation
        self.probe = probe
        self.subject = subject
        self.settled = False

    def success(self) -> None:
        self._breaker._settle(self, _Outcome.SUCCESS)

    def failure(self) -> None:
        self._breaker._settle(self, _Outcome.FAILURE)

    def release(self) -> None:
        self._breaker._settle(self, _Outcome.NEUTRAL)


class CircuitBreaker:
    """The breaker of one upstream endpoint (a GP practice's provider system, the PDS or SDS base URL).

    Opens after ``failure_threshold`` failed calls in a row (no answer, a timeout, a 5xx), counting each request
    subject (the patient, the practice asked about) once: one caller repeating a request that fails cannot open
    it. Refuses calls for ``reset_seconds``, then admits one probe at a time (half-open): the probe's success
    closes it, its failure opens it again, a probe that ends without a verdict (cancelled) lets the next call
    probe. A call's outcome counts only in the breaker generation that admitted it, so a call sent before the
    breaker opened cannot hold it open, nor one sent before it closed re-open it (docs/nhs.md)."""

    def __init__(
        self,
        service: str,
        endpoint: str = "",
        *,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._metrics = metrics
        self.failures = 0  # consecutive failed calls counted (distinct subjects)
        self.refused = 0  # calls refused while open, since the breaker last closed
        self.last_used = clock()
        self._subjects: set[int] = set()
        self._opened_at: float | None = None
        self._generation = 0
        self._probe: BreakerTicket | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def open_for_seconds(self) -> float | None:
        return None if self._opened_at is None else self._clock() - self._opened_at

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def admit(self, subject: str | None = None) -> BreakerTicket:
        """A ticket for one call, or CircuitOpen while the breaker is open or its one probe is out."""
        self.last_used = self._clock()
        state = self.state
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probe is not None):
            self.refused += 1
            if self._metrics is not None:
                self._metrics.breaker_refused.labels(service=self.service).inc()
            raise CircuitOpen(service=self.service, detail=f"{self.service} breaker open for {self.endpoint}")
        # Only a hash of the subject is kept (an NHS number stays out of long-lived state).
        ticket = BreakerTicket(self, self._generation, state is BreakerState.HALF_OPEN,
                               None if subject is None else hash(subject))
        if ticket.probe:
            self._probe = ticket
        return ticket

    def forget_if_idle(self, idle_seconds: float) -> None:
        """A closed breaker unused for ``idle_seconds`` forgets its failures (they say nothing about now)."""
        if self._opened_at is None and self.failures and self._clock() - self.last_used >= idle_seconds:
            self._close()

    def _settle(self, ticket: BreakerTicket, outcome: _Outcome) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        if self._probe is ticket:
            self._probe = None
        if ticket.generation != self._generation or outcome is _Outcome.NEUTRAL:
            return  # admitted before the breaker last changed state, or no verdict
        if outcome is _Outcome.SUCCESS:
            if self._opened_at is not None:
                log.info("breaker_closed", service=self.service, endpoint=self.endpoint)
                self._generation += 1
            self._close()
            return
        if ticket.probe:
            self.failures += 1
            self._open()
            return
        if ticket.subject is not None:
            if ticket.subject in self._subjects:
                return  # the same request failing again: one vote per subject
            self._subjects.add(ticket.subject)
        self.failures += 1
        if self.failures >= self.failure_threshold:
            log.warning("breaker_opened", service=self.service, endpoint=self.endpoint, failures=self.failures)
            if self._metrics is not None:
                self._metrics.breaker_opened.labels(service=self.service).inc()
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._generation += 1
        self._subjects.clear()

    def _close(self) -> None:
        self.failures = 0
        self.refused = 0
        self._subjects.clear()
        self._opened_at = None

    def snapshot(self) -> BreakerSnapshot:
        opened = self.open_for_seconds
        return BreakerSnapshot(self.service, self.endpoint, self.state.value, self.failures, self.refused,
                               None if opened is None else round(opened, 3))


class BreakerRegistry:
    """The breakers of one service, one per upstream endpoint, so that a failing GP practice never refuses another.

    Keys are endpoint names that carry no patient data (``ODS/ASID`` for GP Connect, the base URL for PDS and
    SDS). At most ``max_endpoints`` are held, least recently used first out: closed breakers unused for
    ``idle_seconds``, then any closed one, then (only when that many endpoints are failing at once) the oldest."""

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int,
        reset_seconds: float,
        max_endpoints: int = 10_000,
        idle_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.service = service
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.max_endpoints = max_endpoints
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._metrics = metrics
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        if metrics is not None:
            metrics.watch_breakers(self)

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, endpoint: str) -> CircuitBreaker | None:
        return self._breakers.get(endpoint)

    def breaker(self, endpoint: str) -> CircuitBreaker:
        """The endpoint's breaker, made on first use."""
        found = self._breakers.get(endpoint)
        if found is not None:
            self._breakers.move_to_end(endpoint)
            found.forget_if_idle(self.idle_seconds)
            return found
        found = self._breakers[endpoint] = CircuitBreaker(
            self.service, endpoint, failure_threshold=self.failure_threshold, reset_seconds=self.reset_seconds,
            clock=self._clock, metrics=self._metrics,
        )
        self._prune()
        return found

    def admit(self, endpoint: str, subject: str | None = None) -> BreakerTicket:
        return self.breaker(endpoint).admit(subject)

    def _prune(self) -> None:
        now = self._clock()
        # Expired: closed breakers idle for idle_seconds (a fresh one would behave the same). The registry is in order
        # of last use, so the scan stops at the first one used since.
        expired = []
        for key, item in self._breakers.items():
            if now - item.last_used < self.idle_seconds:
                break
            if item.state is BreakerState.CLOSED and not item.probing:
                expired.append(key)
        for key in expired:
            del self._breakers[key]
        if len(self._breakers) <= self.max_endpoints:
            return
        closed = next((key for key, item in self._breakers.items()
                       if item.state is BreakerState.CLOSED and not item.probing), None)
        if closed is None:
            log.warning("breaker_registry_full", service=self.service, endpoints=len(self._breakers))
        self._breakers.pop(closed) if closed is not None else self._breakers.popitem(last=False)

    def counts(self) -> dict[str, int]:
        """Endpoints per state (closed: the endpoints held)."""
        counts = dict.fromkeys((state.value for state in BreakerState), 0)
        for item in self._breakers.values():
            counts[item.state.value] += 1
        return counts

    def snapshot(self, *, include_closed: bool = False) -> list[BreakerSnapshot]:
        """The breakers that are open or half-open (all of them with ``include_closed``)."""
        return [item.snapshot() for item in self._breakers.values()
                if include_closed or item.state is not BreakerState.CLOSED]


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
    """One NHS service: its pooled client, retry policy and its endpoints' breakers."""

    def __init__(
        self,
        service: str,
        client: httpx.AsyncClient,
        *,
        retry: RetryPolicy,
        breakers: BreakerRegistry,
        metrics: Metrics | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.service = service
        self.client = client
        self.retry = retry
        self.breakers = breakers
        self.max_response_bytes = max_response_bytes
        self._metrics = metrics
        self.health = UpstreamHealth(service)  # recent latency and errors per endpoint (/health/upstreams)

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
        endpoint: str | None = None,
        subject: str | None = None,
    ) -> UpstreamResponse:
        """Send one logical request (retried with the same headers). Raises CircuitOpen or UpstreamUnavailable
        when no HTTP answer could be obtained, UpstreamInvalidResponse when the answer is too large or its
        encoding unreadable; any HTTP answer (including 4xx/5xx) is returned to the caller.

        ``replayable``: the request may be sent again after a pooled connection turned out to be closed (default:
        GET, HEAD, OPTIONS). ``data`` may be a function giving the form, called for every attempt (a form that
        must differ each time, such as a signed client assertion with a fresh ``jti``).

        ``endpoint``: whose breaker admits the call (default: the URL's origin; never a path, which may hold an NHS
        number); ``subject``: what the request is about (a patient, a practice), counted once among failures."""
        origin = url_origin(url)
        endpoint = endpoint or origin
        # The peer we connect to (the Spine Secure Proxy, the API platform) has a breaker of its own, which only
        # connection failures count against: a dead proxy fails fast for every practice behind it, and nothing a
        # practice or a patient does can open it.
        peer = self.breakers.admit(origin) if endpoint != origin else None
        try:
            ticket = self.breakers.admit(endpoint, subject)
        except CircuitOpen:
            if peer is not None:
                peer.release()
            raise
        started = time.perf_counter()
        try:
            answer = await self._request(ticket, peer, method, url, headers, content, data, params, replayable)
        except XhumaError as error:
            self.health.observe(endpoint, time.perf_counter() - started, error.code)
            raise
        finally:
            ticket.release()  # no verdict reached (cancelled, an unexpected error): the probe is free again
            if peer is not None:
                peer.release()
        status = answer.response.status_code
        failed = status in FAILURE_STATUSES or status == RATE_LIMITED
        self.health.observe(endpoint, time.perf_counter() - started, f"HTTP {status}" if failed else None)
        return answer

    async def _request(
        self,
        ticket: BreakerTicket,
        peer: BreakerTicket | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        data: Mapping[str, str] | FormFactory | None,
        params: Any,
        replayable: bool | None,
    ) -> UpstreamResponse:
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
            if error.response is not None:
                # Retries exhausted on 429/502-504: hand the last answer back so the caller maps its
                # OperationOutcome; a 502-504 counts against the breaker.
                if peer is not None:
                    peer.success()
                if error.response.status_code == RATE_LIMITED:
                    ticket.release()
                else:
                    ticket.failure()
                return UpstreamResponse(error.response, attempts)
            if error.reason == "PoolTimeout":
                ticket.release()  # our own connection pool was full: no verdict on anyone
            elif peer is not None:
                peer.failure()  # nothing reached the peer: its failure, not the endpoint's behind it
                ticket.release()
            else:
                ticket.failure()
            raise UpstreamUnavailable(
                f"{self.service} unreachable", service=self.service, detail=f"{error.reason} after {attempts} attempts"
            ) from None
        except _Fatal as error:
            ticket.failure()  # connected, then no answer in time: the endpoint's (the peer has no verdict)
            raise UpstreamUnavailable(
                f"{self.service} did not answer in time", service=self.service, detail=error.reason
            ) from None
        except _Unreadable as error:
            # A service sending what it must not (a body beyond any record's size, an encoding we did not ask
            # for) is failing: it counts against the breaker, and the caller learns it as an invalid answer.
            if peer is not None:
                peer.success()
            ticket.failure()
            raise UpstreamInvalidResponse(
                f"{self.service} answer unreadable", service=self.service, status=error.status, detail=error.reason
            ) from None
        if peer is not None:
            peer.success()
        if response.status_code in FAILURE_STATUSES:
            ticket.failure()
        elif response.status_code == RATE_LIMITED:
            ticket.release()
        else:
            ticket.success()  # any other answer, 4xx included: the endpoint is serving
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


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the default breaker key (no path, no credentials)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def build_upstream(
    service: str, settings: Settings, *, mutual_tls: bool, metrics: Metrics | None = None,
    client: httpx.AsyncClient | None = None,
) -> Upstream:
    return Upstream(
        service,
        client or build_http_client(settings, mutual_tls=mutual_tls),
        retry=RetryPolicy.from_settings(settings),
        breakers=BreakerRegistry(
            service,
            failure_threshold=settings.breaker_failure_threshold,
            reset_seconds=settings.breaker_reset_seconds,
            max_endpoints=settings.breaker_max_endpoints,
            idle_seconds=settings.breaker_idle_seconds,
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
    "BreakerRegistry",
    "BreakerState",
    "BreakerTicket",
    "CircuitBreaker",
    "RetryPolicy",
    "Upstream",
    "UpstreamResponse",
    "build_http_client",
    "build_upstream",
    "spine_ssl_context",
    "url_origin",
]
