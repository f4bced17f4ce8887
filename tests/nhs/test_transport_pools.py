"""Outbound connection pools: requests to one service are spread over several small pools (ShardedTransport).

httpcore's pool re-examines all its connections for every request it queues or finishes, so one pool of a
hundred busy connections cost more CPU than the requests themselves; the shards keep each pool small.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from xhuma.nhs.transport import MAX_CONNECTIONS, POOL_SHARDS, ShardedTransport, build_http_client


class HeldShard(httpx.AsyncBaseTransport):
    """Answers only when released: requests stay in flight on this shard until then."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release = release
        self.seen = 0
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        await self.release.wait()
        return httpx.Response(200, json={"ok": True})

    async def aclose(self) -> None:
        self.closed = True


async def test_each_request_goes_to_the_pool_with_the_fewest_in_flight() -> None:
    release = asyncio.Event()
    shards = [HeldShard(release) for _ in range(3)]
    client = httpx.AsyncClient(transport=ShardedTransport(shards), base_url="http://upstream.test")
    pending = [asyncio.ensure_future(client.get("/x")) for _ in range(9)]
    while sum(shard.seen for shard in shards) < 9:
        await asyncio.sleep(0)
    assert [shard.seen for shard in shards] == [3, 3, 3]  # none piles up while others are free
    release.set()
    responses = await asyncio.gather(*pending)
    assert all(response.json() == {"ok": True} for response in responses)
    await client.aclose()
    assert all(shard.closed for shard in shards)


async def test_a_pool_freed_early_takes_the_next_request() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    fast, slow = HeldShard(first), HeldShard(second)
    transport = ShardedTransport([fast, slow])
    client = httpx.AsyncClient(transport=transport, base_url="http://upstream.test")
    held = [asyncio.ensure_future(client.get("/x")) for _ in range(2)]  # one on each
    while fast.seen + slow.seen < 2:
        await asyncio.sleep(0)
    first.set()
    await held[0]
    following = asyncio.ensure_future(client.get("/y"))
    while fast.seen + slow.seen < 3:
        await asyncio.sleep(0)
    assert (fast.seen, slow.seen) == (2, 1)
    second.set()
    await asyncio.gather(held[1], following)
    await client.aclose()


def test_the_nhs_clients_keep_their_connection_limit_across_the_pools(make_settings: Any) -> None:
    client = build_http_client(make_settings(), mutual_tls=False)
    shards = client._transport.shards  # type: ignore[attr-defined]
    assert len(shards) == POOL_SHARDS
    assert sum(shard._pool._max_connections for shard in shards) == MAX_CONNECTIONS
    asyncio.run(client.aclose())


async def test_a_request_holds_its_pool_until_its_body_is_closed() -> None:
    released = asyncio.Event()
    released.set()
    first, second = HeldShard(released), HeldShard(released)
    client = httpx.AsyncClient(transport=ShardedTransport([first, second]), base_url="http://upstream.test")
    async with client.stream("GET", "/open") as response:  # answered, body not yet read: its connection is busy
        assert response.status_code == 200
        await client.get("/next")
        assert (first.seen, second.seen) == (1, 1)
    await client.get("/after")  # the first body is closed: both pools are free again, the first is chosen
    assert (first.seen, second.seen) == (2, 1)
    await client.aclose()
