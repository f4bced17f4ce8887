"""Per-client rate limit of the SOAP endpoints (``XHUMA_RATE_LIMIT_PER_MINUTE``; 0 switches it off).

A token bucket per calling system (its certificate fingerprint when authenticated, else its address) holding
up to one minute's allowance and refilling continuously. Over the limit, ``RateLimited`` carries
``retry_after`` (seconds) for the ``Retry-After`` header; the IHE layer answers HTTP 429 with a SOAP Fault.

With Redis (``XHUMA_REDIS_URL``) the buckets are shared by every replica (``SharedRateLimiter``: one Lua script
on the Redis clock), so N replicas still let a client through at the configured rate. Without Redis they live in
this process (``RateLimiter``, the embedded default). While Redis fails the in-process buckets stand in: the limit
is then per replica, never "refuse everything" and never an error (docs/operations.md, Replicas).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import redis.asyncio as redis_asyncio
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from xhuma.errors import RateLimited

if TYPE_CHECKING:
    from xhuma.security.client_auth import ClientCertificate

log = structlog.get_logger(__name__)

MAX_TRACKED_CLIENTS = 10_000
REDIS_RETRY_SECONDS = 5.0  # after a Redis failure, the in-process buckets answer alone for this long

# Token bucket of one client, refilled continuously to one minute's allowance, on the Redis server's clock (the
# replicas' clocks need not agree). KEYS[1] the bucket; ARGV[1] requests per minute.
# Returns {1, 0} when a token was taken, else {0, milliseconds until the next token}.
_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 61000)
return {allowed, wait_ms}
"""


class Limiter(Protocol):
    @property
    def enabled(self) -> bool: ...

    async def take(self, client_key: str) -> None:
        """Take one token for ``client_key`` or raise ``RateLimited``."""
        ...


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client_key: str) -> None:
        """Take one token for ``client_key`` or raise ``RateLimited``."""
        if not self.enabled:
            return
        now = self._clock()
        tokens, updated = self._buckets.pop(client_key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[client_key] = (tokens, now)
            retry_after = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimited("too many requests from this client", retry_after=retry_after)
        self._buckets[client_key] = (tokens - 1.0, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)

    async def take(self, client_key: str) -> None:
        self.check(client_key)


class SharedRateLimiter:
    """The token buckets in Redis (under ``{namespace}:ratelimit:``), shared by every replica."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        namespace: str,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.fallback = RateLimiter(per_minute, clock=clock)
        self._namespace = namespace
        self._script: AsyncScript = client.register_script(_BUCKET_SCRIPT)
        self._clock = clock
        self._redis_down_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def take(self, client_key: str) -> None:
        if not self.enabled:
            return
        if self._clock() >= self._redis_down_until:
            try:
                allowed, wait_ms = await self._script(
                    keys=[f"{self._namespace}:ratelimit:{client_key}"], args=[self.per_minute]
                )
            except (TimeoutError, RedisError, OSError) as error:
                log.warning("rate_limit_shared_unavailable", error=type(error).__name__)
                self._redis_down_until = self._clock() + REDIS_RETRY_SECONDS
            else:
                if not int(allowed):
                    raise RateLimited("too many requests from this client", retry_after=math.ceil(int(wait_ms) / 1000))
                return
        self.fallback.check(client_key)


def limit_key(certificate: ClientCertificate | None, address: str | None) -> str:
    """The identity the limit applies to: the authenticated certificate, else the caller's address."""
    if certificate is not None:
        return f"cert:{certificate.fingerprint_sha256}"
    return f"addr:{address or 'unknown'}"
