"""One contract, run against both cache adapters: the in-process MemoryCache and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from xhuma.errors import CacheError
from xhuma.ports import Cache
from xhuma.store.cache import MemoryCache, RedisCache, ResilientCache


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, redis_namespace: str) -> AsyncIterator[Cache]:
    adapter: Cache
    if request.param == "memory":
        adapter = MemoryCache(max_items=100)
    else:
        adapter = RedisCache(redis_url, namespace=redis_namespace, timeout_seconds=2)
    yield adapter
    await adapter.close()


async def test_value_set_is_value_got(cache: Cache) -> None:
    await cache.set("document:1.2.3", b"\x00<ClinicalDocument/>\xff", 60)
    assert await cache.get("document:1.2.3") == b"\x00<ClinicalDocument/>\xff"


async def test_missing_key_is_none(cache: Cache) -> None:
    assert await cache.get("document:absent") is None


async def test_value_expires_after_its_ttl(cache: Cache) -> None:
    await cache.set("short", b"v", 1)
    assert await cache.get("short") == b"v"
    await asyncio.sleep(1.2)
    assert await cache.get("short") is None


async def test_delete_removes_and_counts(cache: Cache) -> None:
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.delete("a", "b", "never-set") == 2
    assert await cache.get("a") is None


async def test_keys_lists_by_prefix_only(cache: Cache) -> None:
    await cache.set("patient:abc:pds", b"1", 60)
    await cache.set("patient:abc:bundle", b"2", 60)
    await cache.set("patient:abd:pds", b"3", 60)
    await cache.set("sds:X26:gpc", b"4", 60)
    assert sorted(await cache.keys("patient:abc:")) == ["patient:abc:bundle", "patient:abc:pds"]


async def test_keys_prefix_with_glob_characters_is_literal(cache: Cache) -> None:
    await cache.set("odd*[x]:1", b"1", 60)
    await cache.set("oddity:1", b"2", 60)
    assert await cache.keys("odd*[x]:") == ["odd*[x]:1"]


async def test_non_positive_ttl_is_refused(cache: Cache) -> None:
    with pytest.raises(CacheError):
        await cache.set("k", b"v", 0)


async def test_ping_reports_healthy(cache: Cache) -> None:
    assert await cache.ping() is True


async def test_memory_cache_evicts_least_recently_used_beyond_its_bound() -> None:
    cache = MemoryCache(max_items=2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # a is now the most recently used
    await cache.set("c", b"3", 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1"
    assert await cache.get("c") == b"3"


async def test_unreachable_redis_raises_cache_error() -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2)
    with pytest.raises(CacheError):
        await cache.get("k")
    assert await cache.ping() is False
    await cache.close()


async def test_resilient_cache_bypasses_an_unreachable_redis() -> None:
    """DESIGN: a cache failure is logged and bypassed, never fatal (MHS adaptor pattern)."""
    cache = ResilientCache(RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2), name="redis")
    assert await cache.get("k") is None
    await cache.set("k", b"v", 60)  # no exception
    assert cache.last_error is not None and "redis" in cache.last_error
    assert await cache.ping() is False
    await cache.close()
