"""``GET /health/upstreams``: how each NHS service has been answering lately (xhuma.nhs.upstream_health).

Per service (PDS, SDS, GP Connect; no terminology server client exists yet) and per endpoint (base URL, or
``ODS/ASID`` for a practice): calls, error rate and latency percentiles over the recent window, the last error
and when, and the circuit breaker's state. Like ``/metrics`` it is open to the monitoring system without a token:
it holds no patient data, only endpoint names and error codes that ``/metrics`` already shows. Readiness does not
depend on it: an NHS service in trouble is the EHR's to retry, not a reason to take replicas out of service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


def upstream_health(runtime: Any) -> dict[str, Any]:
    nhs = runtime.nhs if runtime is not None else None
    services: dict[str, Any] = {}
    for name, upstream in sorted(getattr(nhs, "upstreams", {}).items()):
        def state(endpoint: str, breakers: Any = upstream.breakers) -> str:
            breaker = breakers.get(endpoint)
            return "closed" if breaker is None else str(breaker.state.value)

        snapshot = upstream.health.snapshot(state)
        counts = upstream.breakers.counts()
        snapshot["breaker"] = next((item for item in ("open", "half-open") if counts.get(item)), "closed")
        snapshot["breaker_counts"] = counts
        services[name] = snapshot
    return {"services": services}


@router.get("/health/upstreams")
async def health_upstreams(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse({"detail": "the service is starting"}, status_code=503)
    return JSONResponse(upstream_health(runtime), headers={"Cache-Control": "no-store"})
