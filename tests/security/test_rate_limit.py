"""Per-client rate limiting (setting): over the limit a caller gets RateLimited with a Retry-After; other
clients are not affected; 0 switches it off."""

from __future__ import annotations

from typing import Any

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


async def test_soap_endpoint_over_the_limit_answers_a_fault_with_retry_after_and_audits_it(make_settings: Any) -> None:
    import sqlalchemy as sa
    from tests.support.exchange import app_client
    from tests.support.soap import ACTION_55, SOAP_CT, envelope, iti55_body

    from xhuma.app import create_app
    from xhuma.store.audit import audit_event

    app = create_app(make_settings(rate_limit_per_minute=2))
    async with app_client(app) as client:
        answers = [await client.post("/SOAP/iti55", content=envelope(ACTION_55, iti55_body()),
                                     headers={"content-type": SOAP_CT}) for _ in range(3)]
        metrics_text = (await client.get("/metrics")).text
        async with app.state.runtime.audit.engine.connect() as connection:
            codes = [row.error_code for row in await connection.execute(
                sa.select(audit_event.c.error_code).where(audit_event.c.transaction == "ITI-55"))]
    busy = answers[2]
    assert "Retry-After" not in answers[0].headers
    assert busy.headers["Retry-After"] == "30"
    assert b"Fault" in busy.content and b"busy" in busy.content
    assert codes.count("RateLimited") == 1
    assert "xhuma_rate_limited_total 1.0" in metrics_text
