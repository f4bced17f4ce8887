"""Circuit breakers per upstream endpoint (issue 15, item 4): per GP practice (ODS/ASID) for GP Connect, per base URL
for PDS and SDS. A failing practice never refuses another; a caller repeating one failing request, or a request the
service answers about the caller's own input, cannot open a breaker; half-open admits one probe at a time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httpx
import pytest

from xhuma.config import Settings
from xhuma.errors import CircuitOpen, PatientNotFound, UpstreamUnavailable
from xhuma.nhs.gpconnect import GpConnectFhirClient, breaker_endpoint
from xhuma.nhs.pds import PdsFhirClient
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient
from xhuma.nhs.simulator.records import SimulatorData
from xhuma.nhs.transport import BreakerRegistry, BreakerState
from xhuma.ports import PdsPatient, SdsRoute, StructuredRecord
from xhuma.web.api import breaker_status

from .conftest import Nhs
from .test_gpconnect import CALLER

PRACTICE_A = "B82617"  # the default practice: the demo patient and most sample records
PRACTICE_B = "A86005"
# Patients whose PDS trace succeeds and whose request reaches their practice's provider.
REACHES_PROVIDER = (None, Fault.NO_CONSENT, Fault.ACCESS_DENIED, Fault.DEMOGRAPHICS_MISMATCH, Fault.AREA_NOT_SUPPORTED)


def patients_at(data: SimulatorData, ods: str) -> list[str]:
    return sorted(number for number, patient in data.patients.items()
                  if patient.practice_ods == ods and patient.fault in REACHES_PROVIDER)


async def route_of(nhs: Nhs, number: str) -> tuple[PdsPatient, SdsRoute]:
    patient = await nhs.pds.get_patient(number)
    return patient, await nhs.sds.gp_connect_route(patient.gp_ods_code or "")


async def record(nhs: Nhs, number: str) -> StructuredRecord:
    patient, route = await route_of(nhs, number)
    return await nhs.gpconnect.get_structured_record(number, route, CALLER, pds_patient=patient)


def open_endpoints(nhs: Nhs, service: str) -> dict[str, float]:
    return {sample.labels["endpoint"]: sample.value
            for family in nhs.metrics.registry.collect() if family.name == "xhuma_breaker_open"
            for sample in family.samples if sample.labels["service"] == service}


async def test_five_failures_at_one_practice_open_its_breaker_and_another_practice_is_still_served(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> None:
    nhs = make_nhs(settings=nhs_settings(breaker_failure_threshold=5, breaker_reset_seconds=30))
    at_a = patients_at(sample_data, PRACTICE_A)
    assert len(at_a) >= 6
    _, route_a = await route_of(nhs, at_a[0])
    _, route_b = await route_of(nhs, patients_at(sample_data, PRACTICE_B)[0])
    nhs.state.fail_practice(PRACTICE_A, 500)  # the practice's provider system is failing
    for number in at_a[:5]:
        with pytest.raises(UpstreamUnavailable):
            await record(nhs, number)
    sent = nhs.state.requests["gpc"]
    with pytest.raises(CircuitOpen):  # A fails fast: nothing is sent
        await record(nhs, at_a[5])
    assert nhs.state.requests["gpc"] == sent
    served = await record(nhs, patients_at(sample_data, PRACTICE_B)[0])  # B is still served
    assert served.ods_code == PRACTICE_B and served.bundle["resourceType"] == "Bundle"

    registry = nhs.upstreams["gpconnect"].breakers
    assert registry.breaker(breaker_endpoint(route_a)).state is BreakerState.OPEN
    assert registry.breaker(breaker_endpoint(route_b)).state is BreakerState.CLOSED
    # Metrics: one series for the open endpoint (closed ones only counted), and the counts per state.
    assert open_endpoints(nhs, "gpconnect") == {breaker_endpoint(route_a): 1.0}
    samples = {(labels["state"]): value for labels, value in (
        (sample.labels, sample.value) for family in nhs.metrics.registry.collect() if family.name == "xhuma_breakers"
        for sample in family.samples if sample.labels["service"] == "gpconnect")}
    assert samples == {"open": 1.0, "half-open": 0.0, "closed": 2.0}  # practice B and the proxy (the peer)
    assert nhs.metrics.registry.get_sample_value("xhuma_breaker_opened_total", {"service": "gpconnect"}) == 1
    assert nhs.metrics.registry.get_sample_value("xhuma_breaker_refused_total", {"service": "gpconnect"}) == 1
    # The admin API's view (GET /api/status) of the same breakers.
    status = breaker_status(nhs.metrics)
    assert status["services"]["gpconnect"] == "open" and status["services"]["pds"] == "closed"
    assert status["counts"]["gpconnect"] == {"closed": 2, "open": 1, "half-open": 0}
    [endpoint] = status["endpoints"]
    assert endpoint["service"] == "gpconnect" and endpoint["endpoint"] == f"{PRACTICE_A}/{route_a.asid}"
    assert (endpoint["state"], endpoint["failures"], endpoint["refused"]) == ("open", 5, 1)


async def test_one_patient_failing_again_and_again_never_opens_the_practices_breaker(
    nhs: Nhs, sample_data: SimulatorData
) -> None:
    # Any caller could otherwise re-open a practice's breaker at will by asking for a patient whose request fails.
    failing = fault_patient(Fault.GPC_INTERNAL_ERROR)  # GP Connect 500 for this one patient, at practice A
    patient, route = await route_of(nhs, failing)
    for _ in range(3 * nhs.settings.breaker_failure_threshold):
        with pytest.raises(UpstreamUnavailable):
            await nhs.gpconnect.get_structured_record(failing, route, CALLER, pds_patient=patient)
    breaker = nhs.upstreams["gpconnect"].breakers.breaker(breaker_endpoint(route))
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 1
    assert (await record(nhs, DEMO_PATIENT)).ods_code == PRACTICE_A  # the practice's other patients are served
    assert breaker.failures == 0


async def test_answers_about_the_callers_request_and_rate_limits_never_count_against_the_breaker(nhs: Nhs) -> None:
    threshold = nhs.settings.breaker_failure_threshold
    not_found = [fault_patient(Fault.NOT_FOUND), fault_patient(Fault.INVALIDATED)]
    others = [fault_patient(fault) for fault in (Fault.NO_CONSENT, Fault.ACCESS_DENIED, Fault.AREA_NOT_SUPPORTED)]
    breaker = nhs.upstreams["pds"].breakers.breaker(nhs.pds._base_url)
    for number in not_found * threshold:  # 404 RESOURCE_NOT_FOUND / INVALIDATED_RESOURCE
        with pytest.raises(PatientNotFound):
            await nhs.pds.get_patient(number)
    assert breaker.failures == 0
    # PDS's rate limit (429) on every attempt, for more distinct patients than the threshold: the service is alive.
    nhs.state.inject("pds", *[429] * (nhs.settings.http_retries + 1) * len(others))
    for number in others:
        with pytest.raises(UpstreamUnavailable):
            await nhs.pds.get_patient(number)
    assert len(others) >= threshold
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0
    assert (await nhs.pds.get_patient(DEMO_PATIENT)).nhs_number == DEMO_PATIENT


async def test_the_pds_breaker_opens_per_base_url_and_an_unreachable_peer_per_origin(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> None:
    nhs = make_nhs(settings=nhs_settings(breaker_reset_seconds=30))
    threshold = nhs.settings.breaker_failure_threshold
    numbers = patients_at(sample_data, PRACTICE_A)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_origin = f"http://127.0.0.1:{unused.getsockname()[1]}"
    dead = PdsFhirClient(nhs.settings, nhs.upstreams["pds"], nhs.tokens,
                         base_url=dead_origin + "/personal-demographics/FHIR/R4", metrics=nhs.metrics)
    for number in numbers[:threshold]:  # nothing listens there: connection refused
        with pytest.raises(UpstreamUnavailable):
            await dead.get_patient(number)
    with pytest.raises(CircuitOpen):
        await dead.get_patient(DEMO_PATIENT)
    # The same upstream (one pooled client, one registry) still serves the simulator's PDS...
    assert (await nhs.pds.get_patient(DEMO_PATIENT)).nhs_number == DEMO_PATIENT
    # ...until its base URL answers 500 for distinct patients: that base URL's breaker opens, while the token
    # endpoint on the same host (the peer's breaker counts only connections refused) is still served.
    nhs.state.inject("pds", *[500] * threshold)
    for number in numbers[1: threshold + 1]:
        with pytest.raises(UpstreamUnavailable):
            await nhs.pds.get_patient(number)
    with pytest.raises(CircuitOpen):
        await nhs.pds.get_patient(numbers[threshold + 1])
    await nhs.tokens.invalidate()
    assert await nhs.tokens.token()
    assert nhs.simulator.urls is not None
    assert open_endpoints(nhs, "pds") == {dead_origin: 1.0, nhs.simulator.urls.pds_base_url: 1.0}


async def test_an_unreachable_spine_secure_proxy_fails_fast_for_every_practice(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> None:
    nhs = make_nhs(settings=nhs_settings(breaker_reset_seconds=30))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_ssp = f"http://127.0.0.1:{unused.getsockname()[1]}"
    gpconnect = GpConnectFhirClient(nhs.settings, nhs.upstreams["gpconnect"], nhs.pds, ssp_url=dead_ssp + "/ssp",
                                    metrics=nhs.metrics)
    practices = ("A86005", "B82617", "E82665", "O001")
    assert len(practices) > nhs.settings.breaker_failure_threshold
    outcomes = []
    for ods in practices:
        patient, route = await route_of(nhs, patients_at(sample_data, ods)[0])
        try:
            await gpconnect.get_structured_record(patient.nhs_number, route, CALLER, pds_patient=patient)
        except UpstreamUnavailable as error:
            outcomes.append(error.code)
    # A connection refused by the proxy is the proxy's failure, whatever the practice: after the threshold, the
    # next practice fails fast instead of waiting for its own connection attempts.
    assert outcomes == ["UpstreamUnavailable"] * nhs.settings.breaker_failure_threshold + ["CircuitOpen"]
    assert open_endpoints(nhs, "gpconnect") == {dead_ssp: 1.0}


async def test_half_open_admits_one_probe_at_a_time_and_a_cancelled_probe_frees_it(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> None:
    # The probe is cancelled, never timed out, so the read timeout only has to outlast a real record's answer on a
    # loaded CI machine (the suite's 0.6 s did not, once).
    nhs = make_nhs(settings=nhs_settings(breaker_reset_seconds=0.3, http_read_timeout_seconds=5.0))
    at_a = patients_at(sample_data, PRACTICE_A)
    routes = {number: await route_of(nhs, number) for number in at_a}
    breaker = nhs.upstreams["gpconnect"].breakers.breaker(breaker_endpoint(routes[at_a[0]][1]))

    async def fetch(number: str) -> StructuredRecord:
        patient, route = routes[number]
        return await nhs.gpconnect.get_structured_record(number, route, CALLER, pds_patient=patient)

    nhs.state.fail_practice(PRACTICE_A, 500)
    for number in at_a[: nhs.settings.breaker_failure_threshold]:
        with pytest.raises(UpstreamUnavailable):
            await fetch(number)
    assert breaker.state is BreakerState.OPEN
    nhs.state.fail_practice(PRACTICE_A, None)  # the provider now holds requests (a probe that takes its time)
    await asyncio.sleep(0.3)
    assert breaker.state is BreakerState.HALF_OPEN
    sent = nhs.state.requests["gpc"]
    probe = asyncio.create_task(fetch(at_a[0]))
    while nhs.state.requests["gpc"] == sent:
        await asyncio.sleep(0.01)
    others = await asyncio.gather(*(fetch(number) for number in at_a[1:5]), return_exceptions=True)
    assert [type(error) for error in others] == [CircuitOpen] * 4  # one probe at a time
    assert nhs.state.requests["gpc"] == sent + 1
    probe.cancel()  # its caller went away: the probe gave no verdict, and the next call may probe
    with pytest.raises(asyncio.CancelledError):
        await probe
    nhs.state.restore_practice(PRACTICE_A)
    assert (await fetch(at_a[1])).ods_code == PRACTICE_A
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


async def test_a_call_sent_before_the_breaker_opened_cannot_keep_it_open(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> None:
    # The simulator holds a request 1.2 s; this read timeout gives up after 1.0 s, well after the breaker reopens.
    nhs = make_nhs(settings=nhs_settings(breaker_reset_seconds=0.5, http_read_timeout_seconds=1.0))
    at_a = patients_at(sample_data, PRACTICE_A)
    routes = {number: await route_of(nhs, number) for number in at_a}
    breaker = nhs.upstreams["gpconnect"].breakers.breaker(breaker_endpoint(routes[at_a[0]][1]))

    async def fetch(number: str) -> StructuredRecord:
        patient, route = routes[number]
        return await nhs.gpconnect.get_structured_record(number, route, CALLER, pds_patient=patient)

    nhs.state.fail_practice(PRACTICE_A, None)
    sent = nhs.state.requests["gpc"]
    slow = asyncio.create_task(fetch(at_a[-1]))  # admitted while the breaker is closed
    while nhs.state.requests["gpc"] == sent:
        await asyncio.sleep(0.01)
    nhs.state.fail_practice(PRACTICE_A, 500)
    for number in at_a[: nhs.settings.breaker_failure_threshold]:
        with pytest.raises(UpstreamUnavailable):
            await fetch(number)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(UpstreamUnavailable):
        await slow  # its read timeout, after the breaker's reset period
    # Its failure belongs to the closed breaker it was admitted by: the breaker is half-open, not opened again.
    assert breaker.state is BreakerState.HALF_OPEN


def test_the_registry_is_bounded_and_drops_idle_closed_breakers_first() -> None:
    now = [0.0]
    registry = BreakerRegistry("gpconnect", failure_threshold=2, reset_seconds=30, max_endpoints=3, idle_seconds=60,
                               clock=lambda: now[0])
    failing = registry.breaker("A00001/1")
    for patient in ("p1", "p2"):
        failing.admit(patient).failure()
    registry.breaker("A00002/2").admit("p3").failure()  # closed, one failure
    registry.breaker("A00003/3")
    registry.breaker("A00004/4")  # over the bound: the least recently used closed breaker goes, never the open one
    assert sorted(item.endpoint for item in registry.snapshot(include_closed=True)) == [
        "A00001/1", "A00003/3", "A00004/4"]
    assert failing.state is BreakerState.OPEN
    now[0] += 61  # A00003 and A00004 idle and closed: expired when the registry next grows
    registry.breaker("A00005/5")
    assert sorted(item.endpoint for item in registry.snapshot(include_closed=True)) == ["A00001/1", "A00005/5"]
    assert registry.counts() == {"closed": 1, "open": 0, "half-open": 1}
    registry.breaker("A00005/5").admit("p4").failure()
    now[0] += 61
    assert registry.breaker("A00005/5").failures == 0  # an old failure says nothing about now


async def test_the_simulator_takes_a_practice_down_and_back_over_http(nhs: Nhs, sample_data: SimulatorData) -> None:
    # What bench/chaos.py does to a simulator in its own process.
    assert nhs.simulator.urls is not None
    control = f"{nhs.simulator.urls.base}/simulator/practices/{PRACTICE_B.lower()}/failure"
    number = patients_at(sample_data, PRACTICE_B)[0]
    async with httpx.AsyncClient() as client:
        assert (await client.put(control, params={"status": 503})).json() == {"failing": [PRACTICE_B]}
        with pytest.raises(UpstreamUnavailable) as caught:
            await record(nhs, number)
        assert caught.value.status == 503
        assert (await client.delete(control)).json() == {"failing": []}
    assert (await record(nhs, number)).ods_code == PRACTICE_B
