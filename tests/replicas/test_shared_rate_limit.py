"""Rate limiting shared across replicas (issue 17): XHUMA_RATE_LIMIT_PER_MINUTE holds for the deployment, not per
replica; a refused request on any of the three transactions is HTTP 429 with Retry-After and a SOAP Fault; while
Redis fails the in-process buckets stand in (never refuse everything, never an error)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis_asyncio
from tests.support.exchange import NHS_NUMBER
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    NHS_OID,
    SOAP_CT,
    envelope,
    iti38_body,
    iti39_body,
    iti55_body,
)

from xhuma.errors import RateLimited
from xhuma.security.ratelimit import SharedRateLimiter

REQUESTS = {
    "/SOAP/iti55": lambda: envelope(ACTION_55, iti55_body([[(NHS_OID, NHS_NUMBER)]])),
    "/SOAP/iti38": lambda: envelope(ACTION_38, iti38_body(nhs=NHS_NUMBER)),
    "/SOAP/iti39": lambda: envelope(ACTION_39, iti39_body([("urn:oid:1.2.3", "1.2.3", "1.2.3.4")])),
}


async def call(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.post(path, content=REQUESTS[path](), headers={"content-type": SOAP_CT})


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text[:500])
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["content-type"].startswith("application/soap+xml")
    assert b"Fault" in response.content and b"busy" in response.content


async def test_ten_per_minute_on_two_replicas_lets_ten_of_thirty_through(deployment: Callable[..., Any]) -> None:
    async with deployment(replicas=2, rate_limit_per_minute=10) as replicas:
        paths = list(REQUESTS)
        answers = await asyncio.gather(*(
            call(replicas.clients[index % 2], paths[index % 3]) for index in range(30)
        ))
    refused = [answer for answer in answers if answer.status_code == 429]
    assert len(answers) - len(refused) == 10
    for answer in refused:
        assert_refused(answer)
    assert all(answer.status_code != 500 for answer in answers)


async def test_a_refused_request_is_429_with_retry_after_on_each_transaction(
    deployment: Callable[..., Any],
) -> None:
    async with deployment(replicas=2, rate_limit_per_minute=1) as replicas:
        first = await call(replicas.clients[0], "/SOAP/iti55")
        refused = [await call(replicas.clients[1], path) for path in REQUESTS]
    assert first.status_code == 200
    for answer in refused:
        assert_refused(answer)
        assert int(answer.headers["Retry-After"]) > 30  # one request a minute: the next token is ~60 s away


async def test_with_redis_failing_the_in_process_buckets_stand_in() -> None:
    client = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    limiter = SharedRateLimiter(client, namespace="xhuma-test-unreachable", per_minute=3)
    try:
        for _ in range(3):
            await limiter.take("addr:192.0.2.1")  # neither refused nor an error: the fallback counts
        with pytest.raises(RateLimited):
            await limiter.take("addr:192.0.2.1")
        await limiter.take("addr:192.0.2.2")  # another client has its own bucket
    finally:
        await client.aclose()


async def test_the_shared_bucket_refills_on_the_redis_clock(redis_url: str, redis_namespace: str) -> None:
    client = redis_asyncio.Redis.from_url(redis_url)
    replica_a = SharedRateLimiter(client, namespace=redis_namespace, per_minute=60)  # one token a second
    replica_b = SharedRateLimiter(client, namespace=redis_namespace, per_minute=60)
    try:
        for index in range(60):
            await (replica_a if index % 2 else replica_b).take("cert:epic")
        with pytest.raises(RateLimited) as caught:
            await replica_a.take("cert:epic")
        assert caught.value.retry_after == 1
        with pytest.raises(RateLimited):
            await replica_b.take("cert:epic")
        await asyncio.sleep(1.1)
        await replica_b.take("cert:epic")
    finally:
        await client.aclose()
