"""``Cache.add``: set-if-absent, the one atomic step the SAML replay guard stands on (issue 15, item 7), on the
in-process cache, the real Redis, the encrypting wrapper and the resilient wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from xhuma.errors import CacheError
from xhuma.ihe.saml import ReplayGuard
from xhuma.ports import Cache
from xhuma.store.cache import MemoryCache, RedisCache, ResilientCache
from xhuma.store.crypto import CacheKeyring, EncryptedCache


@pytest.fixture(params=["memory", "redis", "encrypted-redis", "resilient-redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, redis_namespace: str) -> AsyncIterator[Cache]:
    adapter: Cache
    if request.param == "memory":
        adapter = MemoryCache(max_items=100)
    else:
        adapter = RedisCache(redis_url, namespace=redis_namespace, timeout_seconds=2)
        if request.param == "encrypted-redis":
            adapter = EncryptedCache(adapter, CacheKeyring.generate())
        elif request.param == "resilient-redis":
            adapter = ResilientCache(adapter, name="redis")
    yield adapter
    await adapter.close()


async def test_add_stores_only_when_absent(cache: Cache) -> None:
    assert await cache.add("saml:abc", b"1", 60) is True
    assert await cache.add("saml:abc", b"2", 60) is False
    assert await cache.add("saml:abd", b"3", 60) is True


async def test_add_succeeds_again_once_the_key_has_expired(cache: Cache) -> None:
    assert await cache.add("saml:short", b"1", 1) is True
    await asyncio.sleep(1.2)
    assert await cache.add("saml:short", b"1", 1) is True


async def test_of_many_concurrent_adds_exactly_one_wins(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.add("saml:race", b"1", 60) for _ in range(50)))
    assert results.count(True) == 1


async def test_two_redis_clients_cannot_both_add_the_same_key(redis_url: str, redis_namespace: str) -> None:
    first = RedisCache(redis_url, namespace=redis_namespace)
    second = RedisCache(redis_url, namespace=redis_namespace)
    try:
        results = await asyncio.gather(*(c.add("saml:shared", b"1", 60) for c in (first, second) * 10))
    finally:
        await first.close()
        await second.close()
    assert results.count(True) == 1


async def test_a_failing_redis_add_is_recorded_and_raised_not_guessed() -> None:
    resilient = ResilientCache(RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2), name="redis")
    try:
        with pytest.raises(CacheError):
            await resilient.add("saml:x", b"1", 60)
    finally:
        await resilient.close()
    assert resilient.last_error is not None


async def test_the_replay_guard_falls_back_to_its_in_process_record_when_the_shared_cache_fails() -> None:
    guard = ReplayGuard(ResilientCache(RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2), name="redis"))
    assert await guard.first_use("saml:one", 60) is True
    assert await guard.first_use("saml:one", 60) is False
