"""The operator console: reachable at /console, shows nothing without the admin token, takes the token typed into
the page and sends it only as an Authorization header; its data endpoints need the token."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from xhuma.app import create_app

TOKEN = "console-" + "q" * 40


def test_console_page_is_a_shell_with_strict_headers_and_no_data(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(admin_tokens=[TOKEN]))) as client:
        page = client.get("/console")
        script = client.get("/console/static/console.js")
        style = client.get("/console/static/console.css")
        missing = client.get("/console/static/../../config.py")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert 'type="password"' in page.text and "<script>" not in page.text  # no inline script under the CSP
    assert script.status_code == 200 and style.status_code == 200
    assert missing.status_code == 404
    # The token goes into the Authorization header and sessionStorage, never into a URL.
    assert '"Bearer " + token()' in script.text and "sessionStorage" in script.text
    assert "localStorage" not in script.text and "?token" not in script.text and "access_token" not in script.text
    assert "innerHTML" not in script.text  # audit content is rendered as text only


def test_console_data_status_and_counters(make_settings: Any) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    with TestClient(app) as client:
        assert client.get("/api/status").status_code == 401
        assert client.get("/api/metrics/summary").status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        app.state.metrics.requests.labels("ITI-55", "success").inc(3)
        app.state.metrics.requests.labels("ITI-39", "error").inc()
        app.state.metrics.cache_lookups.labels("document", "hit").inc(3)
        app.state.metrics.cache_lookups.labels("document", "miss").inc()
        practice = app.state.runtime.nhs.upstreams["gpconnect"].breakers.breaker("A86005/918999198738")
        for number in range(practice.failure_threshold):  # failures for distinct patients open it
            practice.admit(str(number)).failure()
        status = client.get("/api/status", headers=headers).json()
        summary = client.get("/api/metrics/summary", headers=headers).json()
    assert status["profile"] == "simulator" and status["ready"] is True
    assert status["checks"]["audit"] == {"ok": True, "backend": "sqlite"}
    assert status["checks"]["cache"]["ok"] is True
    assert status["breakers"]["gpconnect"] == "open"
    assert {state for name, state in status["breakers"].items() if name != "gpconnect"} <= {"closed"}
    assert status["breaker_counts"]["gpconnect"]["open"] == 1
    assert [(item["endpoint"], item["state"], item["failures"]) for item in status["breaker_endpoints"]] == [
        ("A86005/918999198738", "open", 5)]
    assert summary["requests"] == {"ITI-55": {"success": 3.0}, "ITI-39": {"error": 1.0}}
    assert summary["cache"]["hit_ratio"] == 0.75
