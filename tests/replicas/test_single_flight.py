"""ITI-38 single flight across replicas (issue 17): concurrent cold queries for one patient on several replicas
make one PDS → SDS → GP Connect pipeline run and one document; a lease left by a dead holder expires and a waiting
query takes over; a Redis failure while leasing still answers (never "not found")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis.asyncio as redis_asyncio
from tests.support.exchange import NHS_NUMBER
from tests.support.soap import ACTION_38, RIM, SOAP_CT, envelope, iti38_body, soap_parts, unique_id_of

from xhuma.app import create_app
from xhuma.store.lease import RedisLeases

CONCURRENT_PER_REPLICA = 10


async def find_documents(client: httpx.AsyncClient) -> list[str]:
    """ITI-38 FindDocuments for the demo patient: the uniqueIds it lists (the answer must be a success)."""
    response = await client.post("/SOAP/iti38", content=envelope(ACTION_38, iti38_body(nhs=NHS_NUMBER)),
                                 headers={"content-type": SOAP_CT})
    assert response.status_code == 200, response.text[:2000]
    env, _ = soap_parts(response)
    assert not env.findall(f".//{{{RIM}}}RegistryError") or "Warning" in response.text, response.text[:2000]
    return [unique_id_of(entry) for entry in env.iterfind(f".//{{{RIM}}}ExtrinsicObject")]


async def test_concurrent_cold_queries_on_two_replicas_run_one_pipeline_and_share_one_document(
    deployment: Callable[..., Any],
) -> None:
    async with deployment(replicas=2, gpc_latency_ms=300) as replicas:
        answers = await asyncio.gather(*(
            find_documents(client) for client in replicas.clients for _ in range(CONCURRENT_PER_REPLICA)
        ))
        assert len(answers) == 2 * CONCURRENT_PER_REPLICA
        assert all(len(listed) == 1 for listed in answers), answers
        assert len({listed[0] for listed in answers}) == 1
        assert replicas.pipeline_runs() == 1
        assert replicas.simulator.requests["gpc"] == 1
        assert replicas.simulator.requests["pds"] == 1


async def test_three_replicas_share_one_pipeline_run(deployment: Callable[..., Any]) -> None:
    async with deployment(replicas=3, gpc_latency_ms=300) as replicas:
        answers = await asyncio.gather(*(
            find_documents(client) for client in replicas.clients for _ in range(CONCURRENT_PER_REPLICA)
        ))
        assert len({tuple(listed) for listed in answers}) == 1 and len(answers[0]) == 1
        assert replicas.pipeline_runs() == 1
        assert replicas.simulator.requests["gpc"] == 1


async def test_a_lease_left_by_a_dead_holder_expires_and_a_waiting_query_takes_over(
    deployment: Callable[..., Any],
) -> None:
    async with deployment(replicas=2, pipeline_lease_seconds=2) as replicas:
        runtime = replicas.apps[0].state.runtime
        client = redis_asyncio.Redis.from_url(replicas.settings.redis_url)
        dead_holder = RedisLeases(client, namespace=replicas.settings.redis_namespace)
        # A replica took the lease and died: nobody renews or releases it.
        assert await dead_holder.acquire(runtime.keys.pipeline_lease(NHS_NUMBER), 2000) is not None
        await client.aclose()
        started = time.monotonic()
        answers = await asyncio.gather(*(find_documents(client) for client in replicas.clients))
        waited = time.monotonic() - started
        assert waited >= 1.5  # nothing ran until the dead holder's lease expired
        assert len({tuple(listed) for listed in answers}) == 1 and len(answers[0]) == 1
        assert replicas.pipeline_runs() == 1
        assert replicas.simulator.requests["gpc"] == 1


async def test_a_holder_whose_pipeline_fails_gives_the_lease_back_and_a_waiter_answers(
    deployment: Callable[..., Any],
) -> None:
    async with deployment(replicas=2, gpc_latency_ms=200, http_retries=0) as replicas:
        replicas.simulator.inject("gpc", 500)  # the first GP Connect call fails, the next succeeds
        answers = await asyncio.gather(*(find_documents(client) for client in replicas.clients))
        listed = [ids for ids in answers if ids]
        assert len(listed) == 1, answers  # the failed holder answered an error, the waiter got the document
        assert replicas.simulator.requests["gpc"] == 2
        assert replicas.pipeline_runs() == 2


def test_the_lease_key_holds_no_nhs_number(deployment: Callable[..., Any]) -> None:
    from xhuma.store.crypto import CacheKeyring
    from xhuma.store.keys import CacheKeys

    from .conftest import CACHE_KEYS

    name = CacheKeys(CacheKeyring.from_text(CACHE_KEYS).patient_hash).pipeline_lease(NHS_NUMBER)
    assert NHS_NUMBER not in name and name.startswith("patient:") and name.endswith(":lease")


async def test_redis_failing_while_leasing_still_answers_with_the_document(make_settings: Callable[..., Any]) -> None:
    from tests.support.exchange import app_client

    app = create_app(make_settings())
    async with app_client(app) as client:
        # The cache works, the lease store does not answer (a Redis at a closed port).
        dead = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
        app.state.runtime.leases = RedisLeases(dead, namespace="xhuma-test-unreachable")
        listed = await find_documents(client)
        await dead.aclose()
    assert len(listed) == 1  # the pipeline ran without the lease: an answer, not "no documents"


async def test_a_pipeline_longer_than_the_lease_keeps_it_by_renewal(deployment: Callable[..., Any]) -> None:
    async with deployment(replicas=2, pipeline_lease_seconds=2, gpc_latency_ms=3000) as replicas:
        answers = await asyncio.gather(*(find_documents(client) for client in replicas.clients for _ in range(3)))
        assert len({tuple(listed) for listed in answers}) == 1 and len(answers[0]) == 1
        assert replicas.pipeline_runs() == 1  # the waiting replica never saw the lease lapse
        assert replicas.simulator.requests["gpc"] == 1


async def test_prefetch_on_one_replica_and_a_query_on_another_share_one_pipeline_run(
    deployment: Callable[..., Any],
) -> None:
    from tests.support.soap import ACTION_55, NHS_OID, iti55_body

    async with deployment(replicas=2, gpc_latency_ms=300, prefetch_on_match=True) as replicas:
        match = await replicas.clients[0].post(
            "/SOAP/iti55", content=envelope(ACTION_55, iti55_body([[(NHS_OID, NHS_NUMBER)]])),
            headers={"content-type": SOAP_CT},
        )
        assert match.status_code == 200 and b"OK" in match.content  # the match started the prefetch on replica A
        listed = await find_documents(replicas.clients[1])  # while it runs, replica B is asked
        assert len(listed) == 1
        assert replicas.pipeline_runs() == 1
        assert replicas.simulator.requests["gpc"] == 1
