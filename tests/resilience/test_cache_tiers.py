"""The cache in front of Redis (xhuma.store.tiers and the Redis client), against a private redis-server that the
tests kill or freeze: no hidden retries, a bounded pool, the bypass, the per-request budget, and an in-process
tier that holds what it may, for as long as it may, and never hides a purge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio
from tests.support.redis_server import RedisServer

from xhuma.errors import CacheError
from xhuma.store.cache import RedisCache
from xhuma.store.keys import CacheKeys
from xhuma.store.tiers import LocalTier, TieredCache

pytestmark = pytest.mark.redis

DOCUMENT_KEY = CacheKeys.document("1.2.826.0.1285.1")


@pytest.fixture
async def remote(redis_server: RedisServer) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_server.url, namespace="tiers", timeout_seconds=0.3, max_connections=8)
    yield cache
    await cache.close()


def tiered(remote: RedisCache, *, tier_bytes: int = 1 << 20, **options: float) -> TieredCache:
    options.setdefault("timeout_seconds", 0.3)
    return TieredCache(remote, LocalTier(tier_bytes), holds=CacheKeys.held_in_process, **options)  # type: ignore[arg-type]


async def in_own_task(coroutine: object) -> float:
    """Seconds an operation took, run in a task of its own (a request of its own: its own Redis budget)."""

    async def timed() -> float:
        started = time.monotonic()
        try:
            await coroutine  # type: ignore[misc]
        except CacheError:
            pass
        return time.monotonic() - started

    return await asyncio.create_task(timed())


# --- the Redis client ---------------------------------------------------------------------------------------------
async def test_a_frozen_redis_costs_one_timeout_per_command_no_hidden_retries(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    await remote.set("k", b"v", 60)  # the connection is open before the freeze
    redis_server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(CacheError):
            await remote.get("k")
        elapsed = time.monotonic() - started
    finally:
        redis_server.thaw()
    assert elapsed < 0.3 * 2, elapsed


async def test_commands_beyond_the_pool_wait_for_a_connection_instead_of_failing(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, namespace="pool", timeout_seconds=2.0, max_connections=4)
    try:
        await cache.set("k", b"v", 60)
        values = await asyncio.gather(*(cache.get("k") for _ in range(200)))
    finally:
        await cache.close()
    assert values == [b"v"] * 200


# --- reads and writes through the tiers ------------------------------------------------------------------------------
async def test_a_failed_read_of_a_value_not_held_here_raises_and_is_not_a_miss(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote)
    redis_server.kill()
    with pytest.raises(CacheError):
        await cache.get(DOCUMENT_KEY)


async def test_a_value_written_here_is_read_from_the_tier_while_redis_is_down(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote)
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    redis_server.kill()
    assert await cache.get(DOCUMENT_KEY) == b"sealed document"
    assert cache.served_locally == 1


async def test_only_what_iti38_advertises_is_held_in_process(redis_server: RedisServer, remote: RedisCache) -> None:
    cache = tiered(remote)
    await cache.set("patient:abc:pds", b"demographics", 60)
    redis_server.kill()
    with pytest.raises(CacheError):
        await cache.get("patient:abc:pds")


async def test_a_value_redis_no_longer_has_is_not_served_from_the_tier(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    """A purge (`xhuma cache purge`, straight to Redis) or an expiry in Redis is honoured by the tier."""
    cache = tiered(remote)
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    raw = redis_asyncio.Redis.from_url(redis_server.url)
    await raw.delete(f"tiers:{DOCUMENT_KEY}")
    await raw.aclose()
    assert await cache.get(DOCUMENT_KEY) is None
    redis_server.kill()
    with pytest.raises(CacheError):
        await cache.get(DOCUMENT_KEY)


async def test_a_copy_read_from_redis_keeps_only_the_ttl_redis_had_left(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    writer = tiered(remote)
    await writer.set(DOCUMENT_KEY, b"sealed document", 1)
    reader = tiered(remote)  # another replica
    assert await reader.get(DOCUMENT_KEY) == b"sealed document"
    redis_server.kill()
    assert await reader.get(DOCUMENT_KEY) == b"sealed document"
    await asyncio.sleep(1.1)
    with pytest.raises(CacheError):
        await reader.get(DOCUMENT_KEY)


async def test_a_write_neither_redis_nor_the_tier_can_hold_raises(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote, tier_bytes=0)
    redis_server.kill()
    with pytest.raises(CacheError):
        await cache.set(DOCUMENT_KEY, b"sealed document", 60)


async def test_a_write_redis_refused_is_handed_back_once_redis_answers(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote, bypass_seconds=0.2)
    redis_server.kill()
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    redis_server.start()
    await asyncio.sleep(0.25)
    assert await cache.get(DOCUMENT_KEY) == b"sealed document"
    other_replica = tiered(remote)
    assert await other_replica.get(DOCUMENT_KEY) == b"sealed document"


async def test_a_write_redis_refused_reaches_the_other_replicas_when_redis_returns_without_a_read_here(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote, bypass_seconds=0.2)
    redis_server.kill()
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    redis_server.start()
    other_replica = tiered(remote)
    deadline = time.monotonic() + 2.0
    while (found := await other_replica.get(DOCUMENT_KEY)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert found == b"sealed document"
    await cache.close()


async def test_copies_of_keys_a_restarted_redis_lost_are_served_and_handed_back_to_the_other_replicas(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    """A Redis restarted empty lost its keys; that is not a purge: the replica that held them hands them back."""
    cache = tiered(remote, bypass_seconds=0.2, lost_window_seconds=60)
    other_replica = tiered(remote, lost_window_seconds=60)
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    assert await other_replica.get(DOCUMENT_KEY) == b"sealed document"  # it knows this Redis instance
    redis_server.kill()
    redis_server.start()  # same port, empty, a new run_id
    await in_own_task(cache.get("entry:unrelated"))  # the holder meets the restart (a broken connection)
    deadline = time.monotonic() + 3.0
    answers = []
    while time.monotonic() < deadline:
        try:
            answers.append(await other_replica.get(DOCUMENT_KEY))
        except CacheError:
            answers.append("busy")  # the other replica saw the restart too: unknown is not "none"
        if answers[-1] == b"sealed document":
            break
        await asyncio.sleep(0.05)
    assert answers[-1] == b"sealed document"
    assert None not in answers
    assert await cache.get(DOCUMENT_KEY) == b"sealed document"
    await cache.close()


# --- the bypass and the per-request budget --------------------------------------------------------------------------
async def test_after_repeated_timeouts_redis_is_bypassed_then_probed_and_used_again(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote, bypass_after=2, bypass_seconds=0.5)
    await cache.set(DOCUMENT_KEY, b"sealed document", 60)
    redis_server.freeze()
    try:
        waits = [await in_own_task(cache.get("entry:x")) for _ in range(2)]
        bypassed = await in_own_task(cache.get("entry:x"))
        assert cache.bypassed
    finally:
        redis_server.thaw()
    assert all(0.25 < wait < 0.6 for wait in waits), waits
    assert bypassed < 0.05, bypassed
    await asyncio.sleep(0.55)
    assert await cache.get(DOCUMENT_KEY) == b"sealed document"
    assert not cache.bypassed


async def test_one_request_waits_on_a_frozen_redis_about_once_whatever_its_number_of_operations(
    redis_server: RedisServer, remote: RedisCache
) -> None:
    cache = tiered(remote, bypass_after=1000)  # the bypass never opens: only the budget bounds the request

    async def request_with_many_cache_operations() -> None:
        for number in range(8):
            with pytest.raises(CacheError):
                await cache.get(f"patient:p{number}:pds")

    await cache.set("warm", b"v", 60)
    redis_server.freeze()
    try:
        elapsed = await in_own_task(request_with_many_cache_operations())
    finally:
        redis_server.thaw()
    assert elapsed < 0.3 * 2, elapsed


# --- the in-process tier on its own ----------------------------------------------------------------------------------
def test_the_tier_evicts_least_recently_used_but_never_an_only_copy_before_it_expires() -> None:
    now = [0.0]
    tier = LocalTier(3 * (100 + 6 + 96), clock=lambda: now[0])  # room for three 100-byte values under 6-char keys
    assert tier.hold("key:01", b"a" * 100, 60, only_here=True)
    assert tier.hold("key:02", b"b" * 100, 60, only_here=False)
    assert tier.hold("key:03", b"c" * 100, 60, only_here=False)
    assert tier.hold("key:04", b"d" * 100, 60, only_here=False)  # key:02 goes, not the only copy key:01
    assert tier.get("key:01") is not None and tier.get("key:02") is None
    assert tier.hold("key:05", b"e" * 100, 60, only_here=True)
    assert tier.hold("key:06", b"f" * 100, 60, only_here=True)
    assert not tier.hold("key:07", b"g" * 100, 60, only_here=True)  # full of only copies: refused, not evicted
    now[0] = 61.0
    assert tier.hold("key:07", b"g" * 100, 60, only_here=True)  # the expired ones make room
    assert tier.bytes <= tier.max_bytes


def test_a_value_larger_than_the_tier_is_refused() -> None:
    tier = LocalTier(1000)
    assert not tier.hold("document:1", b"x" * 1000, 60, only_here=True)
    assert len(tier) == 0 and tier.bytes == 0
