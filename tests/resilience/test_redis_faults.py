"""Issue 15, items 1-3: Redis killed, frozen, or swamped under the application as create_app builds it, with the
NHS simulator behind it. Each test runs its own redis-server on a spare loopback port (tests.support.redis_server)
and two replicas where it matters ("A" ran the ITI-38, "B" is another replica of the same deployment: same Redis,
same cache keys, nothing in process)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
from fastapi import FastAPI
from tests.resilience.conftest import Replica
from tests.support.exchange import DocumentRef, discover, find_document, post, retrieve
from tests.support.redis_server import RedisServer
from tests.support.soap import RIM, RS, iti38_body, retrieved_document, soap_parts

from xhuma.store.tiers import TieredCache

pytestmark = pytest.mark.redis


def tiers_of(app: FastAPI) -> TieredCache:
    tiered = app.state.runtime.cache.inner.inner
    assert isinstance(tiered, TieredCache)
    return tiered


def registry_error_codes(response: httpx.Response) -> list[str]:
    env, _ = soap_parts(response)
    return [error.get("errorCode") for error in env.iter(f"{{{RS}}}RegistryError")]


def assert_document(response: httpx.Response, expected: bytes) -> None:
    assert response.status_code == 200, response.text[:2000]
    assert not registry_error_codes(response), response.text[:2000]
    assert retrieved_document(response) == expected


def commands_processed(server: RedisServer) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


async def test_300_simultaneous_retrieves_on_one_replica_all_return_the_document(
    replica: Replica,
) -> None:
    """Item 1: beyond the pool a read waits for a connection; it never reads as "no such document". Replica B
    holds nothing in process, so every one of the 300 reads goes to Redis."""
    async with replica("a") as (_, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        document = await find_document(client_a)
        expected = retrieved_document(await retrieve(client_a, document))
        responses = await asyncio.gather(*(retrieve(client_b, document) for _ in range(300)))
    denied = [registry_error_codes(response) for response in responses if registry_error_codes(response)]
    assert denied == []
    for response in responses:
        assert_document(response, expected)


async def test_redis_killed_after_iti38_the_replica_that_stored_the_document_still_returns_it(
    replica: Replica, redis_server: RedisServer
) -> None:
    async with replica("a") as (_, client):
        await discover(client)
        document = await find_document(client)
        expected = retrieved_document(await retrieve(client, document))
        redis_server.kill()
        for _ in range(3):
            assert_document(await retrieve(client, document), expected)


async def test_redis_killed_after_a_retrieve_the_replica_that_served_the_document_still_returns_it(
    replica: Replica, redis_server: RedisServer
) -> None:
    async with replica("a") as (_, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        document = await find_document(client_a)
        expected = retrieved_document(await retrieve(client_b, document))  # B serves it once, from Redis
        redis_server.kill()
        assert_document(await retrieve(client_b, document), expected)


async def test_redis_killed_a_replica_holding_nothing_answers_busy_not_unknown_document(
    replica: Replica, redis_server: RedisServer
) -> None:
    """"Not found" only when it is true: B cannot read Redis and holds nothing, so it does not know."""
    async with replica("a") as (_, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        document = await find_document(client_a)
        redis_server.kill()
        response = await retrieve(client_b, document)
    assert response.status_code == 200
    assert registry_error_codes(response) == ["XDSRepositoryBusy"]


@pytest.mark.parametrize("tier_bytes", [0, 4096], ids=["tier-off", "tier-too-small"])
async def test_redis_down_before_iti38_a_document_held_nowhere_is_not_advertised(
    replica: Replica, redis_server: RedisServer, tier_bytes: int
) -> None:
    async with replica("a", local_tier_max_bytes=tier_bytes) as (_, client):
        await discover(client)
        redis_server.kill()
        response = await post(client, "ITI-38", iti38_body(nhs="9690937286"))
    assert response.status_code == 200
    env, _ = soap_parts(response)
    assert env.find(f".//{{{RIM}}}ExtrinsicObject") is None, response.text[:3000]
    assert registry_error_codes(response) == ["XDSRegistryBusy"]


async def test_redis_down_before_iti38_the_document_is_held_in_process_and_given_back_to_redis_when_it_returns(
    replica: Replica, redis_server: RedisServer
) -> None:
    """Nothing needs a restart: once Redis answers again, the document this replica alone held is handed back,
    and another replica finds it there."""
    async with replica("a", cache_bypass_seconds=0.5) as (app_a, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        redis_server.kill()
        document = await find_document(client_a)  # advertised: held in A's in-process tier
        expected = retrieved_document(await retrieve(client_a, document))
        redis_server.start()  # same port, empty
        await asyncio.sleep(0.6)  # the bypass runs out; the next operation probes Redis
        assert_document(await retrieve(client_a, document), expected)
        assert not tiers_of(app_a).bypassed
        assert_document(await retrieve(client_b, document), expected)


async def test_redis_restarted_empty_documents_advertised_before_are_never_unknown_and_return_on_every_replica(
    replica: Replica, redis_server: RedisServer
) -> None:
    """A restart without persistence loses Redis's keys. A, which stored the document, still holds it and hands it
    back; B, which holds nothing, answers busy (not "unknown document") until it can read it again."""
    async with replica("a", cache_bypass_seconds=0.5) as (app_a, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        document = await find_document(client_a)
        expected = retrieved_document(await retrieve(client_a, document))
        never_stored = DocumentRef(document.home, document.repository, "1.2.3.4.5.6.7")
        # This Redis is younger than a document's lifetime: it cannot vouch that an unknown document never existed.
        assert registry_error_codes(await retrieve(client_b, never_stored)) == ["XDSRepositoryBusy"]
        redis_server.kill()
        redis_server.start()  # same port, empty
        assert (await client_a.get("/health/ready")).json()["checks"]["cache"]["ok"] is True
        codes = []
        for _ in range(60):
            response = await retrieve(client_b, document)
            codes.append(registry_error_codes(response))
            if not codes[-1]:
                assert retrieved_document(response) == expected
                break
            await asyncio.sleep(0.05)
        assert codes[-1] == [] and all(code == ["XDSRepositoryBusy"] for code in codes[:-1]), codes
        assert tiers_of(app_a).generation == 1
        assert_document(await retrieve(client_a, document), expected)


async def test_pds_token_requests_during_a_redis_outage_are_at_most_one_per_replica(
    replica: Replica, redis_server: RedisServer
) -> None:
    async with replica("a") as (app, client):
        redis_server.kill()  # before the first token: it can only be held in process
        simulator = app.state.runtime.nhs.simulator
        before = simulator.state.requests["token"]
        ends = time.monotonic() + 2.0
        while time.monotonic() < ends:
            await asyncio.gather(*(discover(client) for _ in range(5)))
        assert simulator.state.requests["token"] - before == 1


async def test_frozen_redis_adds_about_one_timeout_to_a_request_and_readiness_answers_within_2_seconds(
    replica: Replica, redis_server: RedisServer
) -> None:
    timeout = 0.5
    async with replica("a", redis_timeout_seconds=timeout, cache_bypass_seconds=1.0) as (_, client):
        await discover(client)
        document = await find_document(client)
        expected = retrieved_document(await retrieve(client, document))
        redis_server.freeze()
        try:
            started = time.monotonic()
            response = await retrieve(client, document)
            retrieve_seconds = time.monotonic() - started
            started = time.monotonic()
            ready = await client.get("/health/ready")
            ready_seconds = time.monotonic() - started
        finally:
            redis_server.thaw()
        assert_document(response, expected)
        assert retrieve_seconds < timeout * 3, retrieve_seconds
        assert ready_seconds < 2.0, ready_seconds
        assert ready.json()["checks"]["cache"]["ok"] is False
        # Thawed: after the bypass, requests use Redis again (no restart).
        await asyncio.sleep(1.1)
        before = commands_processed(redis_server)
        assert_document(await retrieve(client, document), expected)
        assert commands_processed(redis_server) > before + 1  # the read, beside INFO itself
        assert (await client.get("/health/ready")).json()["status"] == "ready"


async def test_frozen_redis_before_a_cold_iti38_the_whole_request_waits_about_one_timeout(
    replica: Replica, redis_server: RedisServer
) -> None:
    """All the cache operations of one request together (patient index, PDS, SDS, token, three writes) wait about
    one timeout, not one each; the document is still advertised (held in process) and retrievable."""
    timeout = 1.0
    async with replica("a", redis_timeout_seconds=timeout, cache_bypass_after_failures=100) as (_, client):
        await discover(client)
        redis_server.freeze()
        try:
            started = time.monotonic()
            document = await find_document(client)
            elapsed = time.monotonic() - started
            response = await retrieve(client, document)
        finally:
            redis_server.thaw()
    assert isinstance(document, DocumentRef)
    assert elapsed < timeout * 3, elapsed
    assert response.status_code == 200 and not registry_error_codes(response)
