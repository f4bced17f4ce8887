"""gzip from the NHS services: asked for, decoded by the transport within ``XHUMA_HTTP_MAX_RESPONSE_BYTES`` (decoded
bytes), and a decompression bomb refused as an invalid answer without being inflated past the limit."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import httpx
import pytest
from tests.nhs.conftest import Nhs
from tests.nhs.test_stale_connections import CALLER

from xhuma.config import Settings
from xhuma.errors import UpstreamInvalidResponse
from xhuma.nhs.gpconnect import breaker_endpoint
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient
from xhuma.nhs.simulator.server import RunningSimulator
from xhuma.nhs.transport import build_upstream
from xhuma.observability import Metrics


def base(simulator: RunningSimulator) -> str:
    assert simulator.urls is not None
    return simulator.urls.base


async def test_the_simulator_gzips_for_clients_that_accept_it_and_httpx_decodes_it(
    simulator: RunningSimulator,
) -> None:
    async with httpx.AsyncClient(base_url=base(simulator)) as client:
        gzipped = await client.get("/simulator/patients", headers={"Accept-Encoding": "gzip"})
        plain = await client.get("/simulator/patients", headers={"Accept-Encoding": "identity"})
    assert gzipped.headers["content-encoding"] == "gzip"
    assert int(gzipped.headers["content-length"]) < len(plain.content) / 3
    assert gzipped.json() == plain.json()  # httpx decodes a gzip body by itself
    assert "content-encoding" not in plain.headers


async def test_nhs_answers_are_asked_for_gzip_and_arrive_gzipped(nhs: Nhs) -> None:
    codings: list[tuple[str, str | None]] = []

    async def note(response: httpx.Response) -> None:
        codings.append((response.request.url.path, response.headers.get("content-encoding")))

    for upstream in nhs.upstreams.values():
        upstream.client.event_hooks["response"] = [note]
    patient = await nhs.pds.get_patient(DEMO_PATIENT)
    route = await nhs.sds.gp_connect_route(patient.gp_ods_code or "")
    record = await nhs.gpconnect.get_structured_record(DEMO_PATIENT, route, CALLER, pds_patient=patient)
    assert nhs.state.pds_requests[-1]["accept-encoding"] == "gzip"
    assert record.bundle["resourceType"] == "Bundle" and record.bundle["entry"]
    structured = [coding for path, coding in codings if path.endswith("$gpc.getstructuredrecord")]
    assert structured == ["gzip"]  # the GP Connect record came compressed, and was decoded


async def test_a_gzip_bomb_is_refused_as_an_invalid_answer_without_inflating_past_the_limit(nhs: Nhs) -> None:
    limit = nhs.settings.http_max_response_bytes
    bomb = fault_patient(Fault.GPC_GZIP_BOMB)
    patient = await nhs.pds.get_patient(bomb)
    route = await nhs.sds.gp_connect_route(patient.gp_ods_code or "")
    with pytest.raises(UpstreamInvalidResponse):  # the simulator makes its bomb on this first request
        await nhs.gpconnect.get_structured_record(bomb, route, CALLER, pds_patient=patient)
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamInvalidResponse) as caught:
            await nhs.gpconnect.get_structured_record(bomb, route, CALLER, pds_patient=patient)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(nhs.state.gzip_bomb) < limit / 20  # a real bomb: small on the wire, twice the limit inflated
    # Inflated in bounded steps: never much more than the limit in memory (httpx's own decoder inflates each
    # network read whole, and the bomb would have been inflated to twice the limit before any check).
    assert peak < limit * 1.3, f"peak {peak} bytes for a limit of {limit}"
    assert caught.value.service == "gpconnect" and caught.value.status == 200
    assert caught.value.detail == f"body larger than {limit} bytes once decoded"
    events = [event for event in nhs.sink.events if event.transaction == "GPC"][-2:]
    assert [event.error_code for event in events] == ["UpstreamInvalidResponse"] * 2
    # A service sending bombs is failing, but one patient's request counts once against its practice's breaker.
    assert nhs.upstreams["gpconnect"].breakers.breaker(breaker_endpoint(route)).failures == 1


async def test_a_plain_answer_larger_than_the_limit_is_refused(
    simulator: RunningSimulator, nhs_settings: Callable[..., Settings]
) -> None:
    upstream = build_upstream("sds", nhs_settings(http_max_response_bytes=1000), mutual_tls=False, metrics=Metrics())
    try:
        with pytest.raises(UpstreamInvalidResponse) as caught:
            await upstream.request("GET", base(simulator) + "/simulator/patients",
                                   headers={"Accept-Encoding": "identity"})
        small = await upstream.request("GET", base(simulator) + "/health", headers={})
    finally:
        await upstream.client.aclose()
    assert caught.value.detail == "body larger than 1000 bytes"
    assert small.response.json() == {"status": "ok"}
