"""How an NHS service has been answering lately: a small rolling window per service and per endpoint.

``Upstream.request`` (xhuma.nhs.transport) times every logical call (retries included) and reports it here with
its failure, if any: no HTTP answer, an unreadable one, or a 5xx/429 answer. A 4xx answer is the service
serving (a patient not found is not the service failing). The console and ``/health/upstreams`` read
``snapshot``: calls, error rate and latency percentiles over the last ``window_seconds``, and the last error
with its time. Endpoints are base URLs (PDS, SDS) or ``ODS/ASID`` (GP Connect): never patient data. Memory is
bounded: at most ``max_samples`` calls per endpoint and ``max_endpoints`` endpoints (least recently used go).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOW_SECONDS = 300.0
MAX_SAMPLES = 512
MAX_ENDPOINTS = 200


@dataclass(slots=True)
class _Window:
    samples: deque[tuple[float, float, bool]]  # (monotonic time, seconds, failed)
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock (time.time)
    calls_total: int = 0
    errors_total: int = 0

    def add(self, now: float, seconds: float, error: str | None, wall: float) -> None:
        self.samples.append((now, seconds, error is not None))
        self.calls_total += 1
        if error is not None:
            self.errors_total += 1
            self.last_error, self.last_error_at = error, wall


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass(slots=True)
class UpstreamHealth:
    """The recent calls of one service (``pds``, ``sds``, ``gpconnect``)."""

    service: str
    window_seconds: float = WINDOW_SECONDS
    max_samples: int = MAX_SAMPLES
    max_endpoints: int = MAX_ENDPOINTS
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _service: _Window = field(init=False)
    _endpoints: OrderedDict[str, _Window] = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._service = _Window(deque(maxlen=self.max_samples * 8))

    def observe(self, endpoint: str, seconds: float, error: str | None = None) -> None:
        """One call to ``endpoint`` that took ``seconds``; ``error`` a code when it failed."""
        now, wall = self.clock(), self.wall()
        with self._lock:  # conversions run in worker threads; calls come from the event loop, but be safe
            window = self._endpoints.get(endpoint)
            if window is None:
                window = self._endpoints[endpoint] = _Window(deque(maxlen=self.max_samples))
                while len(self._endpoints) > self.max_endpoints:
                    self._endpoints.popitem(last=False)
            else:
                self._endpoints.move_to_end(endpoint)
            window.add(now, seconds, error, wall)
            self._service.add(now, seconds, error, wall)

    def _summary(self, window: _Window, now: float) -> dict[str, Any]:
        recent = [(seconds, failed) for at, seconds, failed in window.samples if now - at <= self.window_seconds]
        latencies = sorted(seconds for seconds, _ in recent)
        errors = sum(1 for _, failed in recent if failed)
        summary: dict[str, Any] = {
            "calls": len(recent),
            "errors": errors,
            "error_rate": round(errors / len(recent), 4) if recent else None,
            "latency_ms": {name: round(_percentile(latencies, fraction) * 1000, 1) if latencies else None
                           for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
            "last_error": None,
        }
        if window.last_error is not None and window.last_error_at is not None:
            summary["last_error"] = {"code": window.last_error,
                                     "at": datetime.fromtimestamp(window.last_error_at, UTC).isoformat()}
        return summary

    def snapshot(self, breaker_state: Callable[[str], str] | None = None, *, max_endpoints: int = 50
                 ) -> dict[str, Any]:
        """The service and its endpoints (the failing ones first, then the busiest; at most ``max_endpoints``)."""
        now = self.clock()
        with self._lock:
            service = self._summary(self._service, now)
            endpoints = [{"endpoint": name, **self._summary(window, now)} for name, window in self._endpoints.items()]
        for item in endpoints:
            item["breaker"] = breaker_state(item["endpoint"]) if breaker_state else None
        endpoints.sort(key=lambda item: (item["breaker"] in (None, "closed"), -item["errors"], -item["calls"],
                                         item["endpoint"]))
        return {"service": self.service, "window_seconds": self.window_seconds, **service,
                "endpoints": endpoints[:max_endpoints], "endpoints_total": len(endpoints)}
