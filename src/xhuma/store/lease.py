"""Leases: at most one holder of a name at a time, across every replica sharing the Redis (docs/operations.md).

A lease is ``SET name token NX PX ttl``: the token is random and known only to its holder, so only the holder
can renew it or give it back (compare-and-set Lua scripts; a holder whose lease expired cannot delete a
successor's). If the holder dies its lease simply expires after ``ttl``. Without Redis the leases live in this
process (``MemoryLeases``): with one process that is all there is to coordinate.

Failures raise ``CacheError``; the caller decides what a lease it could not get means.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from xhuma.errors import CacheError

# KEYS[1] the lease, ARGV[1] the holder's token, ARGV[2] the new time to live (ms)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] the lease, ARGV[1] the holder's token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases(Protocol):
    async def acquire(self, name: str, ttl_ms: int) -> str | None:
        """The holder's token, or None when someone else holds ``name``."""
        ...

    async def renew(self, name: str, token: str, ttl_ms: int) -> bool:
        """Extend a lease still held under ``token``; False when it was lost (expired, taken over)."""
        ...

    async def release(self, name: str, token: str) -> bool:
        """Give the lease back if it is still ours."""
        ...


def new_token() -> str:
    return secrets.token_hex(16)


class RedisLeases:
    """Leases in Redis under ``{namespace}:`` (same namespace as the cache, so purge and ACLs cover them)."""

    def __init__(self, client: redis_asyncio.Redis, *, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._renew: AsyncScript = client.register_script(_RENEW)
        self._release: AsyncScript = client.register_script(_RELEASE)

    def _key(self, name: str) -> str:
        return f"{self._namespace}:{name}"

    async def acquire(self, name: str, ttl_ms: int) -> str | None:
        token = new_token()
        try:
            taken = await self._client.set(self._key(name), token, nx=True, px=ttl_ms)
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis lease failed: {type(error).__name__}") from error
        return token if taken else None

    async def renew(self, name: str, token: str, ttl_ms: int) -> bool:
        try:
            return bool(await self._renew(keys=[self._key(name)], args=[token, ttl_ms]))
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis lease renewal failed: {type(error).__name__}") from error

    async def release(self, name: str, token: str) -> bool:
        try:
            return bool(await self._release(keys=[self._key(name)], args=[token]))
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis lease release failed: {type(error).__name__}") from error


class MemoryLeases:
    """Leases of this process only (the embedded default: one process, in-process cache)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, tuple[str, float]] = {}  # name -> (token, expires at)
        self._clock = clock

    def _holder(self, name: str) -> str | None:
        held = self._held.get(name)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._held[name]
            return None
        return held[0]

    async def acquire(self, name: str, ttl_ms: int) -> str | None:
        if self._holder(name) is not None:
            return None
        token = new_token()
        self._held[name] = (token, self._clock() + ttl_ms / 1000)
        return token

    async def renew(self, name: str, token: str, ttl_ms: int) -> bool:
        if self._holder(name) != token:
            return False
        self._held[name] = (token, self._clock() + ttl_ms / 1000)
        return True

    async def release(self, name: str, token: str) -> bool:
        if self._holder(name) != token:
            return False
        del self._held[name]
        return True


__all__ = ["Leases", "MemoryLeases", "RedisLeases", "new_token"]
