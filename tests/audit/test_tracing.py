"""Optional OpenTelemetry: a span per request and per stage, and the trace id of the span in the log lines and the
audit events of that request. The stage helper also feeds the stage latency histogram."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from fastapi import Request
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from xhuma import tracing
from xhuma.app import create_app
from xhuma.observability import Metrics


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; OpenTelemetry refuses to replace it
    tracing.refresh()  # tracing decides once whether a provider is installed (create_app decides again)
    return exporter


def test_stage_records_a_span_and_the_histogram(spans: InMemorySpanExporter) -> None:
    spans.clear()
    metrics = Metrics()
    with tracing.span("parent"), tracing.stage(metrics, "pds", **{"xhuma.service": "PDS"}):
        inner_trace_id = tracing.current_trace_id()
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {"parent", "xhuma.pds"}
    assert finished["xhuma.pds"].parent.span_id == finished["parent"].context.span_id
    assert format(finished["parent"].context.trace_id, "032x") == inner_trace_id
    assert metrics.registry.get_sample_value("xhuma_stage_seconds_count", {"stage": "pds"}) == 1


def test_request_span_trace_id_reaches_logs_and_audit(spans: InMemorySpanExporter, make_settings: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from xhuma.observability import configure_logging

    configure_logging("INFO", "json")
    app = create_app(make_settings(admin_tokens=["t" * 40]))

    @app.get("/traced")
    async def traced(request: Request) -> dict[str, Any]:
        structlog.get_logger("test").info("inside_request")
        event = await request.app.state.runtime.auditor.record("ITI-55", "success")
        return {"trace_id": event.trace_id}

    spans.clear()
    with TestClient(app) as client:
        answer = client.get("/traced").json()
    request_span = next(s for s in spans.get_finished_spans() if s.name == "GET /traced")
    expected = format(request_span.context.trace_id, "032x")
    assert answer["trace_id"] == expected
    log_line = next(line for line in capsys.readouterr().err.splitlines() if "inside_request" in line)
    assert f'"trace_id": "{expected}"' in log_line
