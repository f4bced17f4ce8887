"""Per-request metrics kept by the request middleware (xhuma.app.RequestContextMiddleware)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.testclient import TestClient

from xhuma.app import create_app


def test_in_flight_gauge_counts_a_request_while_it_is_served_and_not_after(make_settings: Any) -> None:
    app = create_app(make_settings(admin_tokens=["t" * 40]))
    during: list[float | None] = []

    @app.get("/busy")
    async def busy(request: Request) -> dict[str, Any]:
        during.append(request.app.state.runtime.metrics.registry.get_sample_value("xhuma_in_flight_requests"))
        return {}

    with TestClient(app) as client:
        assert client.get("/busy").status_code == 200
        assert client.get("/busy").status_code == 200
        after = app.state.runtime.metrics.registry.get_sample_value("xhuma_in_flight_requests")
    assert during == [1.0, 1.0]
    assert after == 0.0
