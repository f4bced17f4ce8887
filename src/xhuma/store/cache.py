"""Cache adapters: Redis (shared between replicas) and a bounded in-process LRU with TTL.

Both raise ``CacheError`` on failure. ``ResilientCache`` wraps either one so that a failing cache is logged
and bypassed, never fatal, and remembers the last failure for the readiness probe. In front of Redis,
``xhuma.store.tiers.TieredCache`` adds the time limit, the bypass and the in-process tier.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as redis_asyncio
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from xhuma.errors import CacheError
from xhuma.ports import Cache
from xhuma.store.tls import redis_tls_options

STALL_CAP_FACTOR = 15  # behind TieredCache, no wait on Redis, however busy this process, exceeds this many timeouts

log = structlog.get_logger(__name__)


class MemoryCache:
    """In-process cache: least-recently-used eviction beyond ``max_items``, per-item TTL."""

    def __init__(self, max_items: int = 2048, *, clock: Callable[[], float] | None = None) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_items = max_items
        self._clock = clock or time.monotonic

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise CacheError("TTL must be positive")
        self._items[key] = (self._clock() + ttl_seconds, bytes(value))
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        # One event loop, no await between the look-up and the store: atomic within the process.
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_seconds)
        return True

    async def delete(self, *keys: str) -> int:
        return sum(1 for key in keys if self._items.pop(key, None) is not None)

    async def keys(self, prefix: str) -> list[str]:
        now = self._clock()
        return [key for key, (expires_at, _) in self._items.items() if key.startswith(prefix) and expires_at > now]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    """Redis adapter: one bounded pool, every key under ``{namespace}:``, socket timeouts, no hidden retries.

    The pool blocks: beyond ``max_connections`` a command waits for a free connection instead of failing at once
    (a burst of ITI-39s must not read as "no such document"). redis-py's own retries (three with backoff by
    default) and its health-check round trips are off: they multiplied a stalled Redis into many timeouts per
    command. Each command is bounded by ``timeout_seconds`` (connection wait, connect, read); behind
    ``xhuma.store.tiers.TieredCache``, which tells a silent Redis from a busy event loop, the socket limits are
    loosened with ``socket_timeout_seconds`` so that a burst is not mistaken for a stall.

    ``client`` is a second, small pool for the replicas' coordination (leases, rate limit), whose commands are
    bounded by ``timeout_seconds`` at the socket.
    """

    def __init__(
        self, url: str, *, namespace: str = "xhuma", timeout_seconds: float = 1.0, max_connections: int = 64,
        socket_timeout_seconds: float | None = None,
    ) -> None:
        self._namespace = namespace
        self._url = url
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._client = self._new_client(max_connections, socket_timeout_seconds or timeout_seconds)
        self._coordination: redis_asyncio.Redis | None = None

    def _new_client(self, max_connections: int, timeout_seconds: float) -> redis_asyncio.Redis:
        pool = redis_asyncio.BlockingConnectionPool.from_url(
            self._url,
            max_connections=max_connections,
            timeout=timeout_seconds,  # the longest wait for a free connection
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            **redis_tls_options(self._url),  # rediss://: verified, TLS 1.2 minimum
        )
        return redis_asyncio.Redis.from_pool(pool)  # owns the pool: closed with the client

    @property
    def client(self) -> redis_asyncio.Redis:
        """A pooled client for the replicas' coordination (leases, rate limit) on the same Redis."""
        if self._coordination is None:
            self._coordination = self._new_client(max(8, self._max_connections // 4), self._timeout)
        return self._coordination

    @property
    def namespace(self) -> str:
        return self._namespace

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(self._key(key))
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis get failed: {type(error).__name__}") from error
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def server_identity(self) -> tuple[str, float]:
        """The Redis instance's run_id (new at every restart) and uptime in seconds (INFO server)."""
        try:
            info = await self._client.info("server")
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis info failed: {type(error).__name__}") from error
        return str(info.get("run_id", "")), float(info.get("uptime_in_seconds", 0))

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, float | None]:
        """The value and the seconds Redis keeps it for (GET and PTTL in one round trip)."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._key(key))
                pipe.pttl(self._key(key))
                value, ttl_ms = await pipe.execute()
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis get failed: {type(error).__name__}") from error
        if value is None:
            return None, None
        value = value.encode() if isinstance(value, str) else bytes(value)
        return value, (ttl_ms / 1000 if isinstance(ttl_ms, int) and ttl_ms > 0 else None)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise CacheError("TTL must be positive")
        try:
            await self._client.set(self._key(key), value, ex=ttl_seconds)
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis set failed: {type(error).__name__}") from error

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        if ttl_seconds <= 0:
            raise CacheError("TTL must be positive")
        try:
            # SET NX EX: one atomic command, so two replicas can never both store the key.
            return bool(await self._client.set(self._key(key), value, ex=ttl_seconds, nx=True))
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis add failed: {type(error).__name__}") from error

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        try:
            return int(await self._client.delete(*(self._key(key) for key in keys)))
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis delete failed: {type(error).__name__}") from error

    async def keys(self, prefix: str) -> list[str]:
        pattern = self._key(_escape_glob(prefix)) + "*"
        strip = len(self._namespace) + 1
        try:
            found = [bytes(key).decode()[strip:] async for key in self._client.scan_iter(match=pattern, count=500)]
        except (TimeoutError, RedisError, OSError) as error:
            raise CacheError(f"redis scan failed: {type(error).__name__}") from error
        return found

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (TimeoutError, RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()
        if self._coordination is not None:
            await self._coordination.aclose()


def _escape_glob(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


class ResilientCache:
    """Wraps a cache so that its failures are logged and bypassed (a miss, a skipped write).

    ``strict`` is the same cache for a caller to whom a failed read is not a miss (``xhuma.records``: a document
    whose read failed is "busy", never "not found"): its failures are recorded the same way, then raised.
    """

    def __init__(self, inner: Cache, *, name: str) -> None:
        self.inner = inner
        self.name = name
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.strict: Cache = _StrictCache(self)

    def _failed(self, operation: str, error: CacheError, *, event: str = "cache_bypassed") -> None:
        self.last_error = str(error)
        self.last_error_at = time.time()
        log.warning(event, cache=self.name, operation=operation, error=str(error))

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.inner.get(key)
        except CacheError as error:
            self._failed("get", error)
            return None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            await self.inner.set(key, value, ttl_seconds)
        except CacheError as error:
            self._failed("set", error)

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        # Whether the key was absent cannot be made up: the failure is recorded (readiness) and raised, so that
        # the caller decides (e.g. the SAML replay guard falls back to its in-process record).
        try:
            return await self.inner.add(key, value, ttl_seconds)
        except CacheError as error:
            self._failed("add", error)
            raise

    async def delete(self, *keys: str) -> int:
        # A failed delete must be visible to the operator (purge): it is not swallowed.
        return await self.inner.delete(*keys)

    async def keys(self, prefix: str) -> list[str]:
        return await self.inner.keys(prefix)

    async def ping(self) -> bool:
        healthy = await self.inner.ping()
        if healthy:
            self.last_error = None
        else:
            self.last_error = self.last_error or "cache unreachable"
        return healthy

    async def close(self) -> None:
        await self.inner.close()


class _StrictCache:
    """``ResilientCache.strict``: failures recorded (readiness) and raised as ``CacheError``."""

    def __init__(self, owner: ResilientCache) -> None:
        self._owner = owner

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._owner.inner.get(key)
        except CacheError as error:
            self._owner._failed("get", error, event="cache_failed")
            raise

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            await self._owner.inner.set(key, value, ttl_seconds)
        except CacheError as error:
            self._owner._failed("set", error, event="cache_failed")
            raise

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        return await self._owner.add(key, value, ttl_seconds)

    async def delete(self, *keys: str) -> int:
        return await self._owner.delete(*keys)

    async def keys(self, prefix: str) -> list[str]:
        return await self._owner.keys(prefix)

    async def ping(self) -> bool:
        return await self._owner.ping()

    async def close(self) -> None:
        await self._owner.close()
