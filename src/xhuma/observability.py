"""Structured logging without PHI, and the Prometheus metrics of the service.

Every log line carries ``request_id`` and ``trace_id`` (from context variables set per request). A final
processor masks anything shaped like an NHS number in every value, as a safety net behind the rule that code
never logs PHI in the first place.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeGuard

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

from xhuma import __version__, ids

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)

# Ten digits, optionally grouped 3-3-4 with spaces or hyphens, not part of a longer number (SPEC §9).
NHS_NUMBER_SHAPE = re.compile(r"(?<![\d.])\d{3}[ -]?\d{3}[ -]?\d{4}(?![\d.])")
REDACTED = "[REDACTED]"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def redact(text: str) -> str:
    return NHS_NUMBER_SHAPE.sub(REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int) and not isinstance(value, bool) and 10**9 <= abs(value) < 10**10:
        return REDACTED
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # The request's own ids are left whole: they are ours or a caller's id admitted only without an NHS number's
    # shape (``admissible_request_id``), and a random hex id holds ten digits in a row in about one line in forty,
    # which redacting would make useless for correlation.
    request_id, trace_id = request_id_var.get(), trace_id_var.get()
    return {key: value if (key == "request_id" and value == request_id) or (key == "trace_id" and value == trace_id)
            else _redact_value(value) for key, value in event_dict.items()}


def admissible_request_id(value: str | None) -> TypeGuard[str]:
    """Whether a caller's X-Request-ID / X-Trace-ID may label this request's logs and audit events: a short plain
    token that could not be an NHS number (those lines are not redacted again)."""
    return value is not None and _SAFE_REQUEST_ID.match(value) is not None and NHS_NUMBER_SHAPE.search(value) is None


def _add_context(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict.setdefault("request_id", request_id_var.get())
    event_dict.setdefault("trace_id", trace_id_var.get())
    return event_dict


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is emitted, not the stream of configuration time (which a
    test runner or a daemoniser may have closed since)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    # Records from stdlib loggers (uvicorn, alembic, ...) pass through the same chain, redaction included.
    # Below the level, a structlog event is dropped before any processor runs (not rendered, then discarded).
    structlog_only: list[Any] = [structlog.stdlib.filter_by_level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*structlog_only, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(formatter)
    # A failing handler must not print "--- Logging error ---" with a stack trace: its frames hold call arguments,
    # which can be patient data.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # No access log (as `xhuma serve` asks uvicorn: access_log=False): uvicorn's protocol writes one line per response
    # when this logger has handlers, through the whole chain above, and each IHE transaction already logs its own.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    # httpx logs full URLs (which carry NHS numbers) at INFO: keep it at WARNING.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def level_enabled(logger_name: str, level: int = logging.INFO) -> Callable[[], bool]:
    """A cheap test for a log call on a per-request path: whether ``logger_name`` logs at ``level`` now.

    structlog's module-level loggers build a bound logger on every call, even for an event below the level that is
    then dropped; on a cached ITI-39 that was a noticeable share of the request. The answer follows the level that
    ``configure_logging`` (or anyone) sets, as ``structlog.stdlib.filter_by_level`` does.
    """
    return partial(logging.getLogger(logger_name).isEnabledFor, level)


def new_request_id() -> str:
    return ids.uuid4()


# --- metrics --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One upstream endpoint's circuit breaker as the console and the metrics show it."""

    service: str
    endpoint: str  # ODS/ASID (GP Connect) or base URL (PDS, SDS): never patient data
    state: str  # closed | open | half-open
    failures: int  # consecutive failed calls counted
    refused: int  # calls refused since it opened
    open_for_seconds: float | None


class BreakerSource(Protocol):
    """The breakers of one service (``xhuma.nhs.transport.BreakerRegistry``)."""

    service: str

    def counts(self) -> dict[str, int]: ...

    def snapshot(self, *, include_closed: bool = False) -> list[BreakerSnapshot]: ...


class _BreakerCollector:
    """Breaker state read at scrape time (half-open is a matter of the clock, not of an event).

    Label cardinality stays bounded: ``xhuma_breakers`` has one series per service and state, and
    ``xhuma_breaker_open`` one per endpoint whose breaker is open or half-open (at most
    ``XHUMA_BREAKER_MAX_ENDPOINTS``, in practice the endpoints failing now); closed endpoints are only counted."""

    def __init__(self, sources: weakref.WeakSet[Any]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        counts = GaugeMetricFamily("xhuma_breakers", "Upstream endpoints by circuit breaker state (closed: endpoints "
                                   "held)", labels=["service", "state"])
        opened = GaugeMetricFamily("xhuma_breaker_open", "1 while the circuit breaker of an upstream endpoint is open "
                                   "or half-open", labels=["service", "endpoint"])
        totals: dict[tuple[str, str], int] = {}
        endpoints: set[tuple[str, str]] = set()
        for source in list(self._sources):
            for state, count in source.counts().items():
                totals[(source.service, state)] = totals.get((source.service, state), 0) + count
            endpoints.update((item.service, item.endpoint) for item in source.snapshot())
        for (service, state), count in sorted(totals.items()):
            counts.add_metric([service, state], count)
        for service, endpoint in sorted(endpoints):
            opened.add_metric([service, endpoint], 1)
        yield counts
        yield opened


class Metrics:
    """All Prometheus metrics of one app instance, on its own registry (so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (CPU, memory, open files) and python_info on this registry, and what is running: the
        # revision comes from the image build (XHUMA_BUILD_REVISION, set by the Containerfile), else "unknown".
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge("xhuma_build_info", "Version and source revision of the running Xhuma (always 1)",
              ["version", "revision"], registry=r).labels(
            version=__version__, revision=os.environ.get("XHUMA_BUILD_REVISION", "unknown")).set(1)
        self.requests = Counter(
            "xhuma_requests_total", "Transactions by kind and outcome", ["transaction", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "xhuma_request_seconds", "Transaction latency", ["transaction"], registry=r
        )
        self.stage_seconds = Histogram(
            "xhuma_stage_seconds",
            "Latency per stage (pds, sds, gpconnect, convert, serialise)",
            ["stage"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.cache_lookups = Counter(
            "xhuma_cache_lookups_total", "Cache lookups by kind and result", ["kind", "result"], registry=r
        )
        self.upstream_errors = Counter(
            "xhuma_upstream_errors_total", "Upstream errors by service and code", ["service", "code"], registry=r
        )
        self.breaker_opened = Counter(
            "xhuma_breaker_opened_total", "Circuit breakers of upstream endpoints opened, by service", ["service"],
            registry=r,
        )
        self.breaker_refused = Counter(
            "xhuma_breaker_refused_total", "Calls refused by an open circuit breaker, by service", ["service"],
            registry=r,
        )
        self._breaker_sources: weakref.WeakSet[Any] = weakref.WeakSet()
        r.register(_BreakerCollector(self._breaker_sources))
        self.stale_connection_retries = Counter(
            "xhuma_upstream_stale_connection_retries_total",
            "Requests sent again on a new connection after a pooled one had been closed by the service",
            ["service"], registry=r,
        )
        # Requests being served: one item each in this deque while it is (xhuma.app.RequestContextMiddleware), read
        # at scrape time. Appending and popping are atomic, and take no lock as a gauge's inc and dec would.
        self.requests_in_progress: deque[None] = deque()
        self.in_flight = Gauge("xhuma_in_flight_requests", "Requests being served", registry=r)
        self.in_flight.set_function(self.requests_in_progress.__len__)
        self.audit_failures = Counter(
            "xhuma_audit_failures_total", "Audit events that could not be written", registry=r
        )
        self.audit_events = Counter(
            "xhuma_audit_events_total", "Audit events committed, by transaction", ["transaction"], registry=r
        )
        self.audit_voids = Counter(
            "xhuma_audit_voids_total",
            "Events voiding a disclosure whose audit write timed out, by result (queued, written, dropped)",
            ["result"], registry=r,
        )
        self.atna_messages = Counter(
            "xhuma_atna_messages_total", "ATNA syslog messages by result (sent, dropped, failed)", ["result"],
            registry=r,
        )
        self.client_auth_failures = Counter(
            "xhuma_client_auth_failures_total", "SOAP callers refused by client authentication", registry=r
        )
        self.admin_auth_failures = Counter(
            "xhuma_admin_auth_failures_total", "Admin/console requests refused by bearer authentication", registry=r
        )
        self.rate_limited = Counter(
            "xhuma_rate_limited_total", "Requests refused by the per-client rate limit", registry=r
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def watch_breakers(self, source: BreakerSource) -> None:
        """Publish a service's breakers (held weakly: they go with their upstream)."""
        self._breaker_sources.add(source)

    def breaker_counts(self) -> dict[str, dict[str, int]]:
        """Endpoints per breaker state, per service."""
        counts: dict[str, dict[str, int]] = {}
        for source in list(self._breaker_sources):
            into = counts.setdefault(source.service, {})
            for state, count in source.counts().items():
                into[state] = into.get(state, 0) + count
        return counts

    def breaker_snapshots(self) -> list[BreakerSnapshot]:
        """The open and half-open breakers of every service."""
        return sorted((item for source in list(self._breaker_sources) for item in source.snapshot()),
                      key=lambda item: (item.service, item.endpoint))

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: prometheus_client validates the values and takes a lock on every
        ``labels`` call, which the per-request counters and histograms need not repeat. For label values from a
        small fixed set (transactions, outcomes, stages, cache kinds) only."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
