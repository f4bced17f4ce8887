"""Service skeleton: health probes, metrics, and a cache outage that degrades but never fails requests."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from xhuma.app import create_app
from xhuma.config import Settings


def test_live_answers_without_dependencies(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "live"


def test_ready_on_embedded_defaults_reports_memory_cache_and_sqlite(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        response = client.get("/health/ready")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert body["checks"]["cache"]["backend"] == "memory"
    assert (settings.working_dir / "xhuma-audit.db").is_file()  # SQLite migrated automatically


def test_ready_with_real_redis_and_postgresql(
    make_settings: Callable[..., Settings], redis_url: str, pg_database_url: str
) -> None:
    from xhuma.store.audit import upgrade

    upgrade(pg_database_url)  # production: `xhuma db upgrade` before start
    settings = make_settings(redis_url=redis_url, database_url=pg_database_url)
    with TestClient(create_app(settings)) as client:
        body = client.get("/health/ready").json()
    assert body["status"] == "ready"
    assert body["checks"]["cache"]["backend"] == "redis"


def test_unreachable_redis_degrades_readiness_but_service_still_answers(
    make_settings: Callable[..., Settings],
) -> None:
    """Issue 2: stop Redis use mid-run (unreachable URL); the service answers, readiness is 'degraded'."""
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.2)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        live = client.get("/health/live")
        metrics = client.get("/metrics")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["cache"]["ok"] is False
    assert ready.json()["checks"]["cache"]["reason"]
    assert live.status_code == 200
    assert metrics.status_code == 200


def test_unreachable_audit_database_makes_the_service_unready(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(database_url="postgresql://postgres@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as client:
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["audit"]["ok"] is False


def test_metrics_are_prometheus_text(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "xhuma_in_flight_requests" in response.text


def test_every_response_carries_a_request_id(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as client:
        given = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
        minted = client.get("/health/live")
    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(minted.headers["X-Request-ID"]) == 36
