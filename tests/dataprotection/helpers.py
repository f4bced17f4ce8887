"""Shared helpers of the data-protection tests: cache keys and raw Redis access (certificates: tests.support.pki)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis_asyncio

# Valid Modulus 11 NHS numbers from the NHS test ranges.
NHS_NUMBER = "9434765919"
OTHER_NHS_NUMBER = "9434765870"


def key_entry(kid: str, key: bytes | None = None) -> str:
    return f"{kid}:{base64.b64encode(key or os.urandom(32)).decode()}"


@asynccontextmanager
async def raw_redis(url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def raw_items(url: str, namespace: str) -> dict[bytes, bytes]:
    """Every key and value under ``namespace:`` exactly as Redis holds them."""
    async with raw_redis(url) as client:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        values = await client.mget(keys) if keys else []
    return {key: value for key, value in zip(keys, values, strict=True) if value is not None}
