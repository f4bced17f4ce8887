"""Per-client rate limit of the SOAP endpoints (``XHUMA_RATE_LIMIT_PER_MINUTE``; 0 switches it off).

A token bucket per calling system (its certificate fingerprint when authenticated, else its address) holding
up to one minute's allowance and refilling continuously. Over the limit, ``RateLimited`` carries
``retry_after`` (seconds) for the ``Retry-After`` header; the IHE layer answers XCPD ``ResponderBusy`` or a
SOAP Fault. The buckets live in this process: with N replicas a client gets up to N times the limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from xhuma.errors import RateLimited

MAX_TRACKED_CLIENTS = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client_key: str) -> None:
        """Take one token for ``client_key`` or raise ``RateLimited``."""
        if not self.enabled:
            return
        now = self._clock()
        tokens, updated = self._buckets.pop(client_key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[client_key] = (tokens, now)
            retry_after = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited("too many requests from this client", retry_after=retry_after)
        self._buckets[client_key] = (tokens - 1.0, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)


def client_key(request: Request) -> str:
    """The identity the limit applies to: the authenticated certificate, else the caller's address."""
    certificate = getattr(request.state, "client_cert", None)
    if certificate is not None:
        return f"cert:{certificate.fingerprint_sha256}"
    address = getattr(request.state, "client_address", None)
    if address is None:
        from xhuma.security.client_auth import client_address

        address = client_address(request)
    return f"addr:{address or 'unknown'}"


def check_rate_limit(request: Request) -> None:
    """For the SOAP handlers (after ``authenticate_client``): raise ``RateLimited`` when over the limit."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        limiter = RateLimiter(request.app.state.settings.rate_limit_per_minute)
        request.app.state.rate_limiter = limiter
    if not limiter.enabled:
        return
    try:
        limiter.check(client_key(request))
    except RateLimited:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None and hasattr(metrics, "rate_limited"):
            metrics.rate_limited.inc()
        raise
