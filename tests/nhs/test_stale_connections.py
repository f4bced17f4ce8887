"""Pooled keep-alive connections that the service closed while idle (issue 17: ~1 in 1,000 upstream calls failed
with RemoteProtocolError after idle periods).

The simulator is served with ``close_idle_after_seconds``: a request arriving on a connection idle that long is
dropped unanswered (closed, or reset), as by a proxy whose idle timeout fires just as the request arrives. A
connection closed earlier is no trouble: httpcore sees it closed before reusing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from tests.nhs.conftest import API_KEY, KID, Nhs

from xhuma.config import Settings
from xhuma.errors import UpstreamUnavailable
from xhuma.nhs.simulator.patients import DEMO_PATIENT
from xhuma.nhs.simulator.records import SimulatorData
from xhuma.nhs.simulator.server import ClientCredentials, RunningSimulator, simulator_config
from xhuma.nhs.transport import BreakerState, build_upstream
from xhuma.observability import Metrics
from xhuma.ports import CallerIdentity
from xhuma.store.cache import MemoryCache, ResilientCache

IDLE_CLOSE = 0.4  # the simulator drops a request on a connection idle this long
IDLE = 0.6  # how long the tests leave the connection idle
CALLER = CallerIdentity(user_id="EPIC-1234", user_name="SMITH, Jane", role_code="224608005",
                        organization="Example Hospital", organization_id="urn:oid:1.2.3", purpose_of_use="TREATMENT",
                        verified=True)


@pytest.fixture(params=["close", "reset"])
async def idle_simulator(request: pytest.FixtureRequest, nhs_settings: Callable[..., Settings],
                         sample_data: SimulatorData) -> AsyncIterator[RunningSimulator]:
    settings = nhs_settings()
    config, _ = simulator_config(
        settings, data=sample_data,
        credentials=ClientCredentials(Path(settings.pds_private_key_file).read_bytes(), KID, API_KEY),  # type: ignore[arg-type]
        close_idle_after_seconds=IDLE_CLOSE, close_idle_reset=request.param == "reset",
    )
    async with RunningSimulator(config) as running:
        yield running


def url(simulator: RunningSimulator, path: str) -> str:
    assert simulator.urls is not None
    return simulator.urls.base + path


async def test_the_idle_closing_simulator_fails_a_plain_pooled_client(idle_simulator: RunningSimulator) -> None:
    # The failure of the issue, reproduced: without the retry, the second request fails on the reused connection.
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(idle_simulator, "/health"))).status_code == 200
        await asyncio.sleep(IDLE)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            await client.get(url(idle_simulator, "/health"))
    assert idle_simulator.state.requests["dropped-idle"] == 1


async def test_a_read_on_a_connection_the_service_closed_is_sent_once_more_on_a_new_connection(
    idle_simulator: RunningSimulator, nhs_settings: Callable[..., Settings]
) -> None:
    metrics = Metrics()
    upstream = build_upstream("sds", nhs_settings(), mutual_tls=False, metrics=metrics)
    try:
        first = await upstream.request("GET", url(idle_simulator, "/health"), headers={})
        assert first.response.status_code == 200
        await asyncio.sleep(IDLE)
        second = await upstream.request("GET", url(idle_simulator, "/health"), headers={})
    finally:
        await upstream.client.aclose()
    assert second.response.status_code == 200 and second.response.json() == {"status": "ok"}
    assert second.attempts == 1  # not a retry of the retry policy
    counts = idle_simulator.state.requests
    assert counts["dropped-idle"] == 1
    assert counts["connections"] == 2  # the pooled one, then exactly one new one
    assert metrics.stale_connection_retries.labels(service="sds")._value.get() == 1
    breaker = upstream.breakers.breaker(url(idle_simulator, ""))
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


async def test_a_request_not_declared_replayable_is_not_sent_again(
    idle_simulator: RunningSimulator, nhs_settings: Callable[..., Settings]
) -> None:
    metrics = Metrics()
    upstream = build_upstream("gpconnect", nhs_settings(), mutual_tls=False, metrics=metrics)
    try:
        await upstream.request("GET", url(idle_simulator, "/health"), headers={})
        await asyncio.sleep(IDLE)
        with pytest.raises(UpstreamUnavailable):
            await upstream.request("POST", url(idle_simulator, "/health"), headers={}, content=b"{}")
    finally:
        await upstream.client.aclose()
    counts = idle_simulator.state.requests
    assert counts["dropped-idle"] == 1
    assert counts["connections"] == 1  # no second connection: the POST was not sent again
    assert metrics.stale_connection_retries.labels(service="gpconnect")._value.get() == 0


async def test_gp_connect_and_the_pds_token_survive_connections_closed_while_idle(
    idle_simulator: RunningSimulator, nhs_settings: Callable[..., Settings]
) -> None:
    # The whole NHS path after an idle period: a new PDS token (a POST with a freshly signed assertion), PDS, SDS
    # and the GP Connect structured record (a POST that is a read), each on a connection the simulator drops.
    nhs = Nhs(nhs_settings(), idle_simulator, ResilientCache(MemoryCache(), name="memory"))
    try:
        patient = await nhs.pds.get_patient(DEMO_PATIENT)
        route = await nhs.sds.gp_connect_route(patient.gp_ods_code or "")
        await nhs.gpconnect.get_structured_record(DEMO_PATIENT, route, CALLER, pds_patient=patient)
        await asyncio.sleep(IDLE)
        await nhs.tokens.invalidate()  # the token is asked for again, on the pds connection left idle
        patient = await nhs.pds.get_patient(DEMO_PATIENT)
        record = await nhs.gpconnect.get_structured_record(DEMO_PATIENT, route, CALLER, pds_patient=patient)
    finally:
        await nhs.close()
    assert record.bundle["resourceType"] == "Bundle"
    retries = nhs.metrics.stale_connection_retries
    assert retries.labels(service="pds")._value.get() >= 1  # the token POST on the idle connection
    assert retries.labels(service="gpconnect")._value.get() == 1
    assert nhs.tokens.fetches == 2
    assert all(item.failures == 0 for upstream in nhs.upstreams.values()
               for item in upstream.breakers.snapshot(include_closed=True))


async def test_the_second_try_never_takes_another_pooled_connection(
    idle_simulator: RunningSimulator, nhs_settings: Callable[..., Settings]
) -> None:
    # After a burst every pool holds several idle connections, all as stale as the first: the second try must
    # open its own, not take the next idle one from the pool.
    upstream = build_upstream("sds", nhs_settings(), mutual_tls=False, metrics=Metrics())
    try:
        burst = await asyncio.gather(*(upstream.request("GET", url(idle_simulator, "/health"), headers={})
                                       for _ in range(8)))
        assert all(result.response.status_code == 200 for result in burst)
        opened = idle_simulator.state.requests["connections"]
        assert opened == 8  # two idle connections in each of the four pools
        await asyncio.sleep(IDLE)
        result = await upstream.request("GET", url(idle_simulator, "/health"), headers={})
    finally:
        await upstream.client.aclose()
    assert result.response.status_code == 200
    assert idle_simulator.state.requests["dropped-idle"] == 1
    assert idle_simulator.state.requests["connections"] == opened + 1
