"""Leases on real Redis and in-process: one holder at a time, only the holder renews or releases, a lease nobody
renews expires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from xhuma.store.lease import Leases, MemoryLeases, RedisLeases


@pytest.fixture(params=["redis", "memory"])
async def leases(request: pytest.FixtureRequest, redis_url: str, redis_namespace: str) -> AsyncIterator[Leases]:
    if request.param == "memory":
        yield MemoryLeases()
        return
    client = redis_asyncio.Redis.from_url(redis_url)
    yield RedisLeases(client, namespace=redis_namespace)
    await client.aclose()


async def test_one_holder_at_a_time_until_it_releases(leases: Leases) -> None:
    token = await leases.acquire("patient:abc:lease", 5000)
    assert token is not None
    assert await leases.acquire("patient:abc:lease", 5000) is None
    assert await leases.acquire("patient:other:lease", 5000) is not None
    assert await leases.release("patient:abc:lease", token)
    assert await leases.acquire("patient:abc:lease", 5000) is not None


async def test_only_the_holder_can_renew_or_release(leases: Leases) -> None:
    token = await leases.acquire("patient:abc:lease", 5000)
    assert token is not None
    assert not await leases.renew("patient:abc:lease", "not-the-token", 5000)
    assert not await leases.release("patient:abc:lease", "not-the-token")
    assert await leases.acquire("patient:abc:lease", 5000) is None  # still held
    assert await leases.renew("patient:abc:lease", token, 5000)


async def test_a_lease_nobody_renews_expires_and_its_old_holder_cannot_release_the_next(leases: Leases) -> None:
    old = await leases.acquire("patient:abc:lease", 200)
    assert old is not None
    await asyncio.sleep(0.3)
    new = await leases.acquire("patient:abc:lease", 5000)
    assert new is not None
    assert not await leases.release("patient:abc:lease", old)
    assert not await leases.renew("patient:abc:lease", old, 5000)
    assert await leases.acquire("patient:abc:lease", 5000) is None


async def test_renewal_keeps_a_lease_past_its_first_time_to_live(leases: Leases) -> None:
    token = await leases.acquire("patient:abc:lease", 300)
    assert token is not None
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await leases.renew("patient:abc:lease", token, 300)
    assert await leases.acquire("patient:abc:lease", 300) is None
