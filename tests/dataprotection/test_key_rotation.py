"""Issue 7: keys rotate without downtime. Old data stays readable after a new key is added; once the old key is
removed its data is a miss and is fetched again, never an error. Run through the application's own wiring
(create_app lifespan: ResilientCache(EncryptedCache(RedisCache))) against the real Redis."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tests.dataprotection.helpers import NHS_NUMBER, key_entry, raw_items

from xhuma.app import Runtime, create_app

PDS_RESULT = b'{"nhs_number": "9434765919", "family": "SMITH", "given": ["Jane"]}'


@asynccontextmanager
async def running(make_settings: Callable[..., Any], **overrides: Any) -> AsyncIterator[Runtime]:
    app = create_app(make_settings(**overrides))
    async with app.router.lifespan_context(app):
        yield app.state.runtime


async def fetch_through(runtime: Runtime, key: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
    """What the use cases do: serve from the cache, else fetch from upstream and cache."""
    cached = await runtime.cache.get(key)
    if cached is not None:
        return cached
    value = await fetch()
    await runtime.cache.set(key, value, runtime.settings.ttl_pds_seconds)
    return value


class Upstream:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return PDS_RESULT


@pytest.fixture
def redis_settings(redis_url: str, redis_namespace: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_namespace": redis_namespace}


def kids_in_redis(items: dict[bytes, bytes]) -> set[str]:
    return {value[2 : 2 + value[1]].decode() for value in items.values()}


@pytest.mark.parametrize("dedicated_hash_key", [True, False], ids=["hash-key-setting", "hash-from-oldest-key"])
async def test_rotation_old_data_readable_after_adding_a_key_then_refetched_after_removing_it(
    make_settings: Callable[..., Any], redis_settings: dict[str, Any], redis_url: str, redis_namespace: str,
    dedicated_hash_key: bool,
) -> None:
    old, new = key_entry("2026-01"), key_entry("2026-06")
    if dedicated_hash_key:
        redis_settings["cache_hash_key"] = base64.b64encode(os.urandom(32)).decode()
    upstream = Upstream()

    # 1. Only the old key: the PDS result is fetched once and cached.
    async with running(make_settings, cache_keys=old, **redis_settings) as runtime:
        key = runtime.keys.pds_patient(NHS_NUMBER)
        assert await fetch_through(runtime, key, upstream) == PDS_RESULT
        assert await fetch_through(runtime, key, upstream) == PDS_RESULT
    assert upstream.calls == 1
    assert kids_in_redis(await raw_items(redis_url, redis_namespace)) == {"2026-01"}

    # 2. New key prepended: the old data is still served (no refetch) and new writes use the new key.
    async with running(make_settings, cache_keys=f"{new},{old}", **redis_settings) as runtime:
        assert runtime.keys.pds_patient(NHS_NUMBER) == key  # the patient hash did not move
        assert await fetch_through(runtime, key, upstream) == PDS_RESULT
        assert upstream.calls == 1
        await runtime.cache.set(runtime.keys.bundle(NHS_NUMBER), b'{"resourceType": "Bundle"}', 60)
    assert kids_in_redis(await raw_items(redis_url, redis_namespace)) == {"2026-01", "2026-06"}

    # 3. Old key removed: its data is a miss, fetched again and re-sealed under the new key; no error.
    async with running(make_settings, cache_keys=new, **redis_settings) as runtime:
        key = runtime.keys.pds_patient(NHS_NUMBER)
        assert await fetch_through(runtime, key, upstream) == PDS_RESULT
        assert upstream.calls == 2
        assert await fetch_through(runtime, key, upstream) == PDS_RESULT
        assert upstream.calls == 2
        assert runtime.cache.last_error is None  # a miss, not a cache failure
        if dedicated_hash_key:  # same key names: data written under the new key is still served
            assert await runtime.cache.get(runtime.keys.bundle(NHS_NUMBER)) == b'{"resourceType": "Bundle"}'
    sealed_with = kids_in_redis(await raw_items(redis_url, redis_namespace))
    assert "2026-06" in sealed_with


async def test_value_under_a_removed_key_is_a_logged_miss_not_an_error(
    make_settings: Callable[..., Any], redis_settings: dict[str, Any]
) -> None:
    import structlog

    hash_key = base64.b64encode(os.urandom(32)).decode()
    async with running(make_settings, cache_keys=key_entry("old"), cache_hash_key=hash_key,
                       **redis_settings) as runtime:
        await runtime.cache.set(runtime.keys.pds_patient(NHS_NUMBER), PDS_RESULT, 60)
    async with running(make_settings, cache_keys=key_entry("new"), cache_hash_key=hash_key,
                       **redis_settings) as runtime:
        with structlog.testing.capture_logs() as logs:
            assert await runtime.cache.get(runtime.keys.pds_patient(NHS_NUMBER)) is None
    assert [(entry["reason"], entry["kid"]) for entry in logs if entry["event"] == "cache_value_rejected"] == [
        ("unknown-key", "old")
    ]
