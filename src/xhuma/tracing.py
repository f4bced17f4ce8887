"""Optional OpenTelemetry tracing (``pip install xhuma[otel]``); a no-op when it is not installed.

* ``configure_tracing(service_name)`` installs an SDK tracer provider when the SDK is present and none is set
  (exporters are configured the standard way, e.g. ``OTEL_TRACES_EXPORTER``; see docs/operations.md).
* ``span(name, **attributes)`` opens a span (per request, per stage); with no OpenTelemetry it does nothing.
* ``stage(metrics, name)`` is a span plus an observation of ``xhuma_stage_seconds{stage=name}``: the one call
  to wrap the PDS, SDS, GP Connect, convert and serialise stages in.
* ``current_trace_id()`` is the active span's trace id (32 hex), which logs and audit events carry.

Span attributes must be PHI-free: never an NHS number, a name or a birth date.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import Any

try:  # pragma: no branch - depends on the optional extra
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - exercised when the extra is not installed
    _otel_trace = None  # type: ignore[assignment]

TRACER_NAME = "xhuma"

# The app's Metrics for the current request (set by the request middleware), so that code without a metrics
# handle (the use cases, the SOAP layer) can still time its stages: ``stage(None, "convert")``.
metrics_var: ContextVar[Any] = ContextVar("xhuma_metrics", default=None)


def available() -> bool:
    return _otel_trace is not None


def configure_tracing(service_name: str = "xhuma") -> bool:
    """Install an SDK TracerProvider (batch export per ``OTEL_*`` environment) if possible. True if tracing is on."""
    if _otel_trace is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return False
    current = _otel_trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return refresh()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    try:
        import os

        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        if os.environ.get("OTEL_TRACES_EXPORTER", "none").lower() == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except ImportError:
        pass
    _otel_trace.set_tracer_provider(provider)
    return refresh()


# Whether a tracer provider is installed: decided once (asking OpenTelemetry reads the environment each time, and
# every request asked several times), again by ``refresh`` (``xhuma.app.create_app`` calls it), and set when
# ``configure_tracing`` installs ours. A provider, once installed, cannot be replaced or removed.
_enabled: bool | None = None


def _provider_installed() -> bool:
    if _otel_trace is None:
        return False
    return not isinstance(_otel_trace.get_tracer_provider(), _otel_trace.ProxyTracerProvider)


def refresh() -> bool:
    """Look again whether a tracer provider is installed (ours, or one set up by OpenTelemetry auto-instrumentation
    or by a test) and answer ``enabled()`` accordingly from now on."""
    global _enabled
    _enabled = _provider_installed()
    return _enabled


def enabled() -> bool:
    """A tracer provider is installed. Without one, spans are not even opened: a no-op span still costs a few
    microseconds per stage of every request."""
    return _enabled if _enabled is not None else refresh()


def current_trace_id() -> str | None:
    """The active span's trace id as 32 lower-case hex digits, or None (no tracing / no valid span)."""
    if _otel_trace is None or not enabled():
        return None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


_NO_SPAN: AbstractContextManager[Any] = nullcontext(None)


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span named ``name`` (child of the current one), entered with ``with``; yields the span or None."""
    if _otel_trace is None or not enabled():
        return _NO_SPAN
    tracer = _otel_trace.get_tracer(TRACER_NAME)
    clean = {key: value for key, value in attributes.items() if value is not None}
    return tracer.start_as_current_span(name, attributes=clean)


class stage:  # (lower case: used like the context-manager function it replaced)
    """Time one stage (``pds``, ``sds``, ``gpconnect``, ``convert``, ``serialise``) as a span and a histogram.

    ``metrics`` None: the request's metrics from ``metrics_var`` (nothing is observed outside a request)."""

    __slots__ = ("_metrics", "_name", "_span", "_started")

    def __init__(self, metrics: Any, name: str, **attributes: Any) -> None:
        self._metrics = metrics if metrics is not None else metrics_var.get()
        self._name = name
        self._span = span(f"xhuma.{name}", **{"xhuma.stage": name, **attributes}) if enabled() else _NO_SPAN
        self._started = 0.0

    def __enter__(self) -> Any:
        self._started = time.perf_counter()
        return self._span.__enter__()

    def __exit__(self, *exc_info: Any) -> bool | None:
        try:
            return self._span.__exit__(*exc_info)
        finally:
            if self._metrics is not None:
                self._metrics.child(self._metrics.stage_seconds, self._name).observe(
                    time.perf_counter() - self._started)
