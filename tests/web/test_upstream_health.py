"""Upstream health: a rolling window per NHS service and endpoint (latency percentiles, error rate, last error and
when) read with the breakers' state at /health/upstreams; readiness does not depend on it."""

from __future__ import annotations

from typing import Any

from tests.nhs.test_gpconnect import CALLER
from tests.support.exchange import NHS_NUMBER, app_client, full_exchange

from xhuma.app import create_app
from xhuma.nhs.upstream_health import UpstreamHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_gives_percentiles_error_rate_and_the_last_error_and_forgets_what_is_older() -> None:
    clock = Clock()
    health = UpstreamHealth("gpconnect", window_seconds=60, clock=clock, wall=lambda: 1_700_000_000.0)
    for millis in range(1, 101):  # 1..100 ms
        health.observe("B82617/918999198738", millis / 1000)
    health.observe("A86005/200000000359", 2.0, "UpstreamUnavailable")
    snapshot = health.snapshot(lambda endpoint: "open" if endpoint.startswith("A86005") else "closed")
    assert snapshot["calls"] == 101 and snapshot["errors"] == 1
    assert snapshot["latency_ms"] == {"p50": 51.0, "p95": 96.0, "p99": 100.0}
    assert snapshot["last_error"] == {"code": "UpstreamUnavailable", "at": "2023-11-14T22:13:20+00:00"}
    failing, serving = snapshot["endpoints"]  # an endpoint whose breaker is not closed first
    assert (failing["endpoint"], failing["breaker"], failing["error_rate"]) == ("A86005/200000000359", "open", 1.0)
    assert (serving["calls"], serving["error_rate"], serving["latency_ms"]["p50"]) == (100, 0.0, 50.0)
    clock.now += 61
    later = health.snapshot()
    assert later["calls"] == 0 and later["error_rate"] is None and later["latency_ms"]["p95"] is None
    assert later["last_error"]["code"] == "UpstreamUnavailable"  # the last error is kept with its time


def test_endpoints_held_are_bounded_least_recently_used_first_out() -> None:
    health = UpstreamHealth("gpconnect", max_endpoints=3, max_samples=4)
    for number in range(5):
        for _ in range(10):
            health.observe(f"P{number}/1", 0.01)
    snapshot = health.snapshot()
    assert snapshot["endpoints_total"] == 3
    assert sorted(item["endpoint"] for item in snapshot["endpoints"]) == ["P2/1", "P3/1", "P4/1"]
    assert all(item["calls"] == 4 for item in snapshot["endpoints"])  # at most max_samples per endpoint


async def test_health_upstreams_after_an_exchange_and_a_failing_practice_without_a_token_or_readiness_impact(
    make_settings: Any,
) -> None:
    app = create_app(make_settings(admin_tokens=["upstreams-" + "u" * 40]))
    async with app_client(app) as client:
        await full_exchange(client)
        nhs = app.state.runtime.nhs
        nhs.simulator.app.state.simulator.fail_practice("B82617", 500)
        patient = await nhs.pds.get_patient(NHS_NUMBER)
        route = await nhs.sds.gp_connect_route(patient.gp_ods_code or "")
        try:
            await nhs.gpconnect.get_structured_record(NHS_NUMBER, route, CALLER, pds_patient=patient)
        except Exception as error:  # the failing practice is reported to the caller as unavailable
            assert type(error).__name__ == "UpstreamUnavailable"
        else:
            raise AssertionError("the failing practice answered")
        health = await client.get("/health/upstreams")
        ready = await client.get("/health/ready")
    assert health.status_code == 200 and ready.status_code == 200
    services = health.json()["services"]
    # the simulator profile also serves the NHS England Terminology Server (issue 13), resolved before conversion
    assert set(services) == {"pds", "sds", "gpconnect", "terminology"}
    for name in ("pds", "sds"):
        assert services[name]["calls"] >= 1 and services[name]["errors"] == 0 and services[name]["breaker"] == "closed"
    gpconnect = services["gpconnect"]
    [practice] = gpconnect["endpoints"]
    assert practice["endpoint"].startswith("B82617/") and practice["calls"] == 2 and practice["errors"] == 1
    assert practice["error_rate"] == 0.5 and practice["last_error"]["code"] == "HTTP 500"
    assert practice["latency_ms"]["p50"] is not None and practice["breaker"] == "closed"
    assert NHS_NUMBER not in health.text and "SKELLY" not in health.text
