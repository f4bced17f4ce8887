"""Per-client rate limiting (setting): over the limit a caller gets RateLimited with a Retry-After; other
clients are not affected; 0 switches it off."""

from __future__ import annotations

import pytest

from xhuma.errors import RateLimited
from xhuma.security.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_over_its_allowance_is_limited_with_retry_after_and_recovers() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)  # one token every 10 s
    for _ in range(6):
        limiter.check("cert:epic")
    with pytest.raises(RateLimited) as caught:
        limiter.check("cert:epic")
    assert caught.value.retry_after == 10
    limiter.check("cert:other-gateway")  # a different client has its own bucket
    clock.now += 10
    limiter.check("cert:epic")
    with pytest.raises(RateLimited):
        limiter.check("cert:epic")


def test_zero_means_no_limit() -> None:
    limiter = RateLimiter(0)
    for _ in range(1000):
        limiter.check("addr:127.0.0.1")
