"""Redis behind a time limit, a bypass and an in-process tier (docs/operations.md, "Cache tiers").

``TieredCache(remote, local)`` sits between the encryption layer and Redis, so everything it holds is an
already-sealed envelope. It guarantees three things:

* **Bounded stalls.** An operation (pool wait included) is given up once Redis has answered nothing, to it or
  to any other operation, for ``timeout_seconds``; one whose wait is this process's own (a burst queueing for
  the pool while Redis keeps answering) may run longer, up to ``STALL_CAP_FACTOR`` timeouts. The Redis trouble of
  one request is charged to that request: once its operations have spent the timeout on failures, its remaining
  operations skip Redis. A frozen Redis adds about one timeout to a request, not one per operation.
* **Bypass.** After ``bypass_after`` consecutive failures Redis is not called for ``bypass_seconds``; then one
  operation at a time probes it (or a readiness ping does) and the first success closes the bypass. Nothing needs
  a restart when Redis returns.
* **In-process tier.** The keys of what ITI-38 advertises and ITI-39 retrieves (``CacheKeys.held_in_process``)
  are also held here, bounded in bytes, for their TTL: written by this replica, or read from Redis (with the TTL
  Redis has left). Redis stays the source of truth: a read asks Redis first, and a key Redis no longer has
  (expired, purged) is dropped here too. When Redis fails, reads fall back to this tier, and a write that Redis
  refused is held here alone ("only here", never evicted before its TTL), as is a copy of a key that a restarted
  Redis lost (its run_id changed since the copy was seen there), and handed back to Redis (set if absent)
  when it answers again: at the next read of it here, and by a background task once per bypass period. A write
  that neither Redis nor this tier can hold raises ``CacheError``, so that the gateway never advertises a document
  it holds nowhere.

A failure that this tier cannot cover raises ``CacheError``: a read that failed is not a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import structlog

from xhuma.errors import CacheError
from xhuma.ports import Cache
from xhuma.store.cache import STALL_CAP_FACTOR

log = structlog.get_logger(__name__)

T = TypeVar("T")

ENTRY_OVERHEAD_BYTES = 96  # rough per-entry bookkeeping, so that many tiny entries still count against the cap
MIN_REMOTE_BUDGET_SECONDS = 0.02  # less than this left for a request: not worth a round trip
LOOP_LAG_TOLERANCE_SECONDS = 0.05  # a stall check this late means the event loop, not Redis, was busy


@runtime_checkable
class RemainingTtl(Protocol):
    """A remote cache that can tell how long a value has left (Redis PTTL), so a copy never outlives it."""

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, float | None]: ...


@runtime_checkable
class ServerIdentity(Protocol):
    """A remote cache that names the server instance it talks to and its age (Redis run_id, new at every restart,
    and uptime in seconds)."""

    async def server_identity(self) -> tuple[str, float]: ...


@dataclass(slots=True)
class Held:
    value: bytes
    expires_at: float  # on the tier's monotonic clock
    only_here: bool  # Redis refused it: the only copy, not evicted before it expires
    generation: int = 0  # the Redis instance (TieredCache.generation) last seen holding it


class LocalTier:
    """In-process values by key, least recently used first out, bounded by ``max_bytes`` (0: holds nothing)."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, Held] = OrderedDict()
        self.bytes = 0

    @staticmethod
    def _size(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD_BYTES

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Held | None:
        held = self._items.get(key)
        if held is None:
            return None
        if held.expires_at <= self._clock():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return held

    def hold(self, key: str, value: bytes, ttl_seconds: float, *, only_here: bool, generation: int = 0) -> bool:
        """Hold ``value`` for ``ttl_seconds``; False when it cannot fit beside the entries that may not go."""
        self._remove(key)
        size = self._size(key, value)
        if ttl_seconds <= 0 or size > self.max_bytes:
            return False
        now = self._clock()
        if self.bytes + size > self.max_bytes:
            # Oldest first; an "only here" entry goes only once expired (it is the one copy of something advertised).
            for old_key, old in list(self._items.items()):
                if old.only_here and old.expires_at > now:
                    continue
                self._remove(old_key)
                if self.bytes + size <= self.max_bytes:
                    break
        if self.bytes + size > self.max_bytes:
            return False
        self._items[key] = Held(value, now + ttl_seconds, only_here, generation)
        self.bytes += size
        return True

    def remaining(self, held: Held) -> float:
        return held.expires_at - self._clock()

    def only_here(self) -> list[tuple[str, Held]]:
        """The unexpired values Redis refused, oldest first."""
        now = self._clock()
        return [(key, held) for key, held in self._items.items() if held.only_here and held.expires_at > now]

    def lost_before(self, generation: int) -> int:
        """Every copy last seen in an earlier Redis instance becomes an only copy (that Redis lost it); how many."""
        now, lost = self._clock(), 0
        for held in self._items.values():
            if held.generation < generation and not held.only_here and held.expires_at > now:
                held.only_here, lost = True, lost + 1
        return lost

    def settle(self, key: str, generation: int) -> None:
        """Redis holds ``key`` again: this copy may be evicted like any other."""
        held = self._items.get(key)
        if held is not None:
            held.only_here = False
            held.generation = generation

    def drop(self, *keys: str) -> None:
        for key in keys:
            self._remove(key)

    def _remove(self, key: str) -> None:
        held = self._items.pop(key, None)
        if held is not None:
            self.bytes -= self._size(key, held.value)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


# The Redis waiting of the current request: [window start, seconds spent on failed operations]. A context variable
# is per task, and each request runs in its own task (uvicorn), so one request's stall never shortens another's.
_request_wait: ContextVar[list[float] | None] = ContextVar("xhuma_cache_request_wait", default=None)


class TieredCache:
    """Redis (``remote``) with a time limit, a bypass and an in-process tier; see the module docstring."""

    def __init__(
        self,
        remote: Cache,
        local: LocalTier | None,
        *,
        holds: Callable[[str], bool],
        vouched: Callable[[str], bool] | None = None,
        timeout_seconds: float,
        bypass_after: int = 3,
        bypass_seconds: float = 5.0,
        lost_window_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote = remote
        self._ttl_remote = remote if isinstance(remote, RemainingTtl) else None
        self._identity = remote if isinstance(remote, ServerIdentity) else None
        self._run_id: str | None = None  # the Redis instance last identified
        self._identified = False  # no failure since: the instance cannot have changed unseen
        self.generation = 0  # counts the Redis instances seen: a restart may have lost every key
        self._lost_window = lost_window_seconds
        self._suspect_until = 0.0  # until then, a key Redis lacks may be one its restart lost
        self.local = local if local is not None and local.max_bytes > 0 else None
        self._holds = holds
        self._vouched = vouched or holds  # keys whose absence a caller is told ("unknown document")
        self._timeout = timeout_seconds
        self._bypass_after = max(1, bypass_after)
        self._bypass_seconds = bypass_seconds
        self._clock = clock
        # One "request" window: a request that waited on Redis failures then runs long (a GP Connect fetch) gets a
        # fresh budget for the writes at its end.
        self._window = max(10 * timeout_seconds, bypass_seconds)
        self._failures = 0
        self._bypass_until = 0.0  # 0: Redis is called; otherwise bypassed until then, then probed
        self._probing = False
        self._last_answer = 0.0  # event-loop time of Redis's latest answer to any operation
        self.last_error: str | None = None
        self.served_locally = 0  # reads answered by the in-process tier because Redis could not (tests, metrics)
        self.held_only_here = 0  # writes Redis refused and this tier kept
        self._hand_back_task: asyncio.Task[None] | None = None

    # --- state ------------------------------------------------------------------------------------------------
    @property
    def bypassed(self) -> bool:
        return self._bypass_until > 0

    def _budget(self) -> float:
        """Seconds this request may still wait on Redis."""
        wait = _request_wait.get()
        if wait is None or self._clock() - wait[0] > self._window:
            return self._timeout
        return self._timeout - wait[1]

    def _charge(self, seconds: float) -> None:
        wait = _request_wait.get()
        now = self._clock()
        if wait is None or now - wait[0] > self._window:
            wait = [now, 0.0]
            _request_wait.set(wait)
        wait[1] += seconds

    def _admit(self) -> tuple[float, bool] | None:
        """(time limit, is a probe) for a Redis call now, or None to skip Redis."""
        budget = min(self._timeout, self._budget())
        if budget < MIN_REMOTE_BUDGET_SECONDS:
            return None
        if self._bypass_until == 0:
            return budget, False
        if self._clock() < self._bypass_until or self._probing:
            return None
        self._probing = True  # the bypass has run out: this one call finds out whether Redis is back
        return budget, True

    def _succeeded(self) -> None:
        if self._bypass_until:
            log.info("cache_bypass_closed", cache="redis")
        self._failures = 0
        self._bypass_until = 0.0

    def _failed(self, operation: str, error: BaseException, probe: bool) -> None:
        self.last_error = f"redis {operation} failed: {type(error).__name__}"
        self._identified = False  # a restart always breaks the connections first
        if self.local is not None and len(self.local):
            self._keep_handing_back()
        self._failures += 1
        if probe or (not self._bypass_until and self._failures >= self._bypass_after):
            log.warning("cache_bypass_opened", cache="redis", seconds=self._bypass_seconds,
                        failures=self._failures, error=self.last_error)
            self._bypass_until = self._clock() + self._bypass_seconds

    async def _remote(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        admitted = self._admit()
        if admitted is None:
            raise CacheError(f"redis {operation} skipped: bypassed")
        limit, probe = admitted
        loop = asyncio.get_running_loop()
        started = loop.time()
        watch: list[asyncio.TimerHandle] = []
        try:
            async with asyncio.timeout(started + limit * STALL_CAP_FACTOR) as scope:
                first = started + limit
                watch.append(loop.call_at(first, self._watch, scope, started, limit, watch, first, 0.0))
                result = await call()
        except (CacheError, TimeoutError, OSError) as error:
            self._charge(loop.time() - started)
            self._failed(operation, error, probe)
            if isinstance(error, CacheError):
                raise
            raise CacheError(f"redis {operation} failed: {type(error).__name__}") from error
        else:
            self._last_answer = loop.time()
            self._succeeded()
            return result
        finally:
            if watch:
                watch[-1].cancel()
            if probe:
                self._probing = False

    def _watch(
        self, scope: asyncio.Timeout, started: float, limit: float, watch: list[asyncio.TimerHandle], when: float,
        lag: float,
    ) -> None:
        """Give the operation up once Redis has answered nothing, to it or to anyone, for ``limit`` seconds.

        Under a burst the wait is this process's own (a queue for the pool, an event loop busy with other requests)
        while Redis keeps answering: that is not a stall, and reading it as one would deny documents that exist. So
        the time this check itself ran late (the event loop was busy) does not count as Redis's silence, and a late
        check first lets the answers that arrived meanwhile be delivered (asyncio runs timers before it resumes the
        tasks whose data came in the same turn). A frozen Redis answers no one: the operation ends ``limit`` after
        it began, give or take the loop's own delays.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = max(0.0, now - when)
        lag += late
        deadline = max(started, self._last_answer) + limit + lag
        if late > LOOP_LAG_TOLERANCE_SECONDS:
            deadline = max(deadline, now + LOOP_LAG_TOLERANCE_SECONDS)
        if now >= deadline:
            scope.reschedule(now)
        else:
            watch.append(loop.call_at(deadline, self._watch, scope, started, limit, watch, deadline, lag))

    # --- the Cache port ---------------------------------------------------------------------------------------
    async def _identify(self, *, again: bool = False) -> None:
        """Identify the Redis instance (INFO: run_id, uptime) after any failure, or now when ``again``. Raises
        CacheError when Redis cannot say.

        A Redis that restarted empty lost its keys, which is not the same as a key deleted (purged) or expired: a
        new run_id turns the copies held here into only copies, handed back. A Redis younger than a document's
        lifetime (restarted, or new) cannot vouch that an advertised key it lacks was never stored: until it is
        that old, such a key is answered busy, not unknown.
        """
        if self._identity is None or (self._identified and not again):
            return
        run_id, uptime = await self._remote("info", self._identity.server_identity)
        if uptime < self._lost_window:
            self._suspect_until = max(self._suspect_until, self._clock() + self._lost_window - uptime)
        if self._run_id is not None and run_id != self._run_id:
            self.generation += 1
            log.warning("cache_redis_restarted", generation=self.generation)
            if self.local is not None and self.local.lost_before(self.generation):
                self._keep_handing_back()  # the other replicas find them again without a read here
        self._run_id, self._identified = run_id, True

    async def _generation(self) -> int:
        """The current generation for a copy being confirmed in Redis (identified first when in doubt)."""
        with contextlib.suppress(CacheError):
            await self._identify()
        return self.generation

    async def get(self, key: str) -> bytes | None:
        local = self.local if self._holds(key) else None
        held = local.get(key) if local is not None else None
        remote, ttl_remote = self.remote, self._ttl_remote
        try:
            if local is not None and held is None and ttl_remote is not None:
                value, ttl = await self._remote("get", lambda: ttl_remote.get_with_ttl(key))
                if value is not None:
                    if ttl:  # served here recently: kept for the TTL Redis had left
                        local.hold(key, value, ttl, only_here=False, generation=await self._generation())
                    return value
            else:
                value = await self._remote("get", lambda: remote.get(key))
        except CacheError:
            if held is None:
                raise
            self.served_locally += 1
            return held.value
        if value is not None:
            if held is not None and local is not None and value != held.value:
                local.hold(key, value, local.remaining(held), only_here=False, generation=held.generation)
            return value
        if local is None or (held is None and not self._vouched(key)):
            return None
        # Redis lacks a key of what ITI-38 advertises: rare enough to ask whether Redis restarted meanwhile (a
        # pooled connection reconnects unseen, so a restart need not have failed an operation here).
        try:
            await self._identify(again=True)
            identified = True
        except CacheError:
            identified = False
        if held is None:
            if not identified or self._clock() < self._suspect_until:
                # Another replica may hold the only copy and hand it back within a bypass period.
                raise CacheError("redis get: Redis cannot vouch that the key was never stored")
            return None
        if identified and not held.only_here and held.generation == self.generation:
            local.drop(key)  # expired or purged in Redis: not served from here either
            return None
        # Redis never had it, or lost it in a restart since it was seen there: this copy goes back.
        held.only_here = True
        self.served_locally += 1
        await self._hand_back(key, held)
        return held.value

    async def _hand_back(self, key: str, held: Held) -> None:
        """A value only this replica holds goes back to Redis once Redis answers again (best effort). Set only if
        absent: a value another replica stored meanwhile is newer and stays."""
        assert self.local is not None
        ttl = int(self.local.remaining(held))
        if ttl <= 0:
            return
        try:
            await self._remote("add", lambda: self.remote.add(key, held.value, ttl))
        except CacheError:
            return
        self.local.settle(key, self.generation)

    def _keep_handing_back(self) -> None:
        """Recover as soon as Redis answers, without waiting for a read here, so that the other replicas find what
        only this replica holds: once per bypass period, identify the Redis instance (a restart lost its keys: the
        copies held here become only copies) and hand back every only copy, until Redis is identified and nothing
        is held only here."""
        if self.local is not None and (self._hand_back_task is None or self._hand_back_task.done()):
            self._hand_back_task = asyncio.get_running_loop().create_task(self._hand_back_all())

    async def _hand_back_all(self) -> None:
        _request_wait.set(None)  # a task of its own, not charged to the request that started it
        assert self.local is not None
        while True:
            with contextlib.suppress(CacheError):
                await self._identify()
            for key, held in self.local.only_here():
                await self._hand_back(key, held)
            if self._identified and not self.local.only_here():
                return
            await asyncio.sleep(self._bypass_seconds)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise CacheError("TTL must be positive")
        local = self.local if self._holds(key) else None
        try:
            await self._remote("set", lambda: self.remote.set(key, value, ttl_seconds))
        except CacheError:
            if local is not None and local.hold(key, value, ttl_seconds, only_here=True):
                self.held_only_here += 1
                log.info("cache_held_in_process", entry=key.split(":", 1)[0])
                self._keep_handing_back()
                return
            raise
        if local is not None:
            local.hold(key, value, ttl_seconds, only_here=False, generation=await self._generation())

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        # Set-if-absent is only meaningful in the shared store: no in-process stand-in (the caller decides).
        return await self._remote("add", lambda: self.remote.add(key, value, ttl_seconds))

    async def delete(self, *keys: str) -> int:
        if self.local is not None:
            self.local.drop(*keys)
        return await self._remote("delete", lambda: self.remote.delete(*keys))

    async def keys(self, prefix: str) -> list[str]:
        return await self._remote("keys", lambda: self.remote.keys(prefix))

    async def ping(self) -> bool:
        """Redis answers within the timeout (readiness). A success also ends a bypass early, and identifies the
        Redis instance: a restart found here starts the hand-back of what only this replica holds."""
        try:
            async with asyncio.timeout(self._timeout):
                healthy = await self.remote.ping()
        except TimeoutError:
            healthy = False
        if healthy:
            self._succeeded()
            if self.local is not None:
                with contextlib.suppress(CacheError):
                    await self._identify(again=True)
        return healthy

    async def close(self) -> None:
        if self._hand_back_task is not None:
            self._hand_back_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._hand_back_task
        if self.local is not None:
            self.local.clear()
        await self.remote.close()


__all__ = ["Held", "LocalTier", "RemainingTtl", "ServerIdentity", "TieredCache"]
