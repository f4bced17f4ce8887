"""Admin API: audit trail search, service status and request counters. Every route needs the admin bearer
token (``xhuma.security.admin``). Nothing here returns an NHS number: patients are audit pseudonyms.

``GET /api/audit`` takes filters as query parameters; ``POST /api/audit/search`` takes the same filters as a
JSON body, so that an NHS number being looked up never appears in a URL (the console uses it). The NHS number
is hashed here with the audit key and compared with the stored pseudonyms.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from xhuma import __version__
from xhuma.errors import AuditUnavailable
from xhuma.ihe.transactions import TRANSACTIONS as IHE_TRANSACTIONS
from xhuma.nhs.nhs_number import is_valid_nhs_number, normalise
from xhuma.security.admin import AdminPrincipal, require_admin

router = APIRouter(prefix="/api", tags=["admin"], dependencies=[Depends(require_admin)])

# The IHE transactions as registered (xhuma.ihe.transactions), then the outbound calls and the admin API.
TRANSACTIONS = (*(t.id for t in IHE_TRANSACTIONS), "PDS", "SDS", "GPC", "TERMINOLOGY", "ADMIN")
OUTCOMES = ("success", "no-match", "denied", "error", "not-disclosed")  # not-disclosed: voids (xhuma.audit)
STARTED = time.time()
MAX_OFFSET = 2**63 - 1  # SQL OFFSET is a signed 64-bit integer in SQLite and PostgreSQL


class AuditSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None
    transaction: list[str] = Field(default_factory=list)
    outcome: list[str] = Field(default_factory=list)
    nhs_number: str | None = None
    patient: str | None = Field(default=None, description="patient pseudonym (64 hex)")
    document_unique_id: str | None = None
    message_id: str | None = None
    error_code: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


def _runtime(request: Request) -> Any:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "the service is starting")
    return runtime


def _utc(moment: datetime | None) -> datetime | None:
    """Events are stored in UTC: a bound with an offset is converted, one without is taken as UTC."""
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


async def _search(request: Request, search: AuditSearch, principal: AdminPrincipal) -> dict[str, Any]:
    runtime = _runtime(request)
    for name, allowed in (("transaction", TRANSACTIONS), ("outcome", OUTCOMES)):
        unknown = [value for value in getattr(search, name) if value not in allowed]
        if unknown:
            raise HTTPException(422, f"unknown {name}: {unknown[0][:20]}; expected one of {', '.join(allowed)}")
    pseudonym = search.patient.lower() if search.patient else None
    if search.nhs_number:
        if not is_valid_nhs_number(search.nhs_number):
            raise HTTPException(422, "nhs_number is not a valid NHS number")  # never echoed back
        pseudonym = runtime.auditor.pseudonym(normalise(search.nhs_number))
    filters: dict[str, Any] = {
        "since": _utc(search.since), "until": _utc(search.until),
        "transaction": search.transaction or None, "outcome": search.outcome or None,
        "patient_pseudonym": pseudonym, "document_unique_id": search.document_unique_id,
        "message_id": search.message_id, "error_code": search.error_code,
    }
    try:
        # Looking at the audit trail is itself audited (who searched, with which kinds of filter).
        await runtime.auditor.record(
            "ADMIN", "success", caller=None, reason="audit-search",
            details={"action": "audit-search", "by": principal.subject, "method": principal.method,
                     "filters": sorted(name for name, value in filters.items() if value)},
            client_address=request.client.host if request.client else None,
        )
        total = await runtime.audit.count(**filters)
        rows = await runtime.audit.query(limit=search.limit, offset=search.offset, **filters)
    except AuditUnavailable:
        raise HTTPException(503, "the audit trail is unavailable") from None
    except Exception as error:
        if type(error).__module__.startswith("sqlalchemy"):
            raise HTTPException(503, "the audit trail is unavailable") from None
        raise
    next_offset = search.offset + len(rows) if search.offset + len(rows) < total else None
    return {"items": [_jsonable(dict(row)) for row in rows], "total": total, "limit": search.limit,
            "offset": search.offset, "next_offset": next_offset, "patient": pseudonym}


@router.get("/audit")
async def audit_list(
    request: Request,
    principal: AdminPrincipal = Depends(require_admin),
    since: datetime | None = None,
    until: datetime | None = None,
    transaction: list[str] = Query(default_factory=list),
    outcome: list[str] = Query(default_factory=list),
    nhs_number: str | None = None,
    patient: str | None = None,
    document_unique_id: str | None = None,
    message_id: str | None = None,
    error_code: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
) -> dict[str, Any]:
    search = AuditSearch(since=since, until=until, transaction=transaction, outcome=outcome, nhs_number=nhs_number,
                         patient=patient, document_unique_id=document_unique_id, message_id=message_id,
                         error_code=error_code, limit=limit, offset=offset)
    return await _search(request, search, principal)


@router.post("/audit/search")
async def audit_search(request: Request, search: AuditSearch,
                       principal: AdminPrincipal = Depends(require_admin)) -> dict[str, Any]:
    return await _search(request, search, principal)


def _samples(registry: Any, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found


def metrics_summary(metrics: Any) -> dict[str, Any]:
    registry = metrics.registry
    requests: dict[str, dict[str, float]] = {}
    for labels, value in _samples(registry, "xhuma_requests_total"):
        requests.setdefault(labels.get("transaction", "?"), {})[labels.get("outcome", "?")] = value
    lookups: dict[str, float] = {}
    for labels, value in _samples(registry, "xhuma_cache_lookups_total"):
        lookups[labels.get("result", "?")] = lookups.get(labels.get("result", "?"), 0.0) + value
    hits = lookups.get("hit", 0.0)
    total_lookups = sum(lookups.values())
    upstream = [{"service": labels.get("service"), "code": labels.get("code"), "count": value}
                for labels, value in _samples(registry, "xhuma_upstream_errors_total")]
    stages: dict[str | None, dict[str, Any]] = {
        labels.get("stage"): {"count": value} for labels, value in _samples(registry, "xhuma_stage_seconds_count")
    }
    for labels, value in _samples(registry, "xhuma_stage_seconds_sum"):
        entry = stages.setdefault(labels.get("stage"), {"count": 0.0})
        entry["mean_ms"] = round(1000 * value / entry["count"], 1) if entry["count"] else None

    def single(name: str) -> float:
        return sum(value for _, value in _samples(registry, name))

    return {
        "requests": requests,
        "cache": {"lookups": total_lookups, "hits": hits,
                  "hit_ratio": round(hits / total_lookups, 3) if total_lookups else None},
        "upstream_errors": upstream,
        "stages": stages,
        "in_flight": single("xhuma_in_flight_requests"),
        "audit_failures": single("xhuma_audit_failures_total"),
        "audit_events": single("xhuma_audit_events_total"),
        "rate_limited": single("xhuma_rate_limited_total"),
        "client_auth_failures": single("xhuma_client_auth_failures_total"),
        "admin_auth_failures": single("xhuma_admin_auth_failures_total"),
    }


def breaker_status(metrics: Any) -> dict[str, Any]:
    """Per service the worst state of its endpoints' breakers and how many are in each state, and every endpoint
    whose breaker is open or half-open with its counts (failures, calls refused, seconds since it opened)."""
    counts = metrics.breaker_counts()
    services = {
        service: next((state for state in ("open", "half-open") if per_state.get(state)), "closed")
        for service, per_state in counts.items()
    }
    endpoints = [
        {"service": item.service, "endpoint": item.endpoint, "state": item.state, "failures": item.failures,
         "refused": item.refused, "open_for_seconds": item.open_for_seconds}
        for item in metrics.breaker_snapshots()
    ]
    return {"services": services, "counts": counts, "endpoints": endpoints}


@router.get("/metrics/summary")
async def metrics_summary_endpoint(request: Request) -> dict[str, Any]:
    return metrics_summary(request.app.state.metrics)


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    settings = runtime.settings
    cache_ok = await runtime.cache.ping()
    audit_ok = await runtime.audit.ping()
    breakers = breaker_status(runtime.metrics)
    exporter = runtime.auditor.exporter if runtime.auditor is not None else None
    return {
        "version": __version__,
        "profile": settings.profile.value,
        "uptime_seconds": round(time.time() - STARTED),
        "ready": audit_ok,
        "checks": {
            "cache": {"ok": cache_ok, "backend": runtime.cache.name,
                      **({} if cache_ok else {"reason": runtime.cache.last_error or "cache unreachable"})},
            "audit": {"ok": audit_ok, "backend": "sqlite" if runtime.audit.is_sqlite else "postgresql",
                      **({} if audit_ok else {"reason": runtime.audit.last_error or "audit store unreachable"})},
        },
        "breakers": breakers["services"],
        "breaker_counts": breakers["counts"],
        "breaker_endpoints": breakers["endpoints"],
        "atna": {"enabled": exporter is not None, "pending": getattr(exporter, "pending", 0)},
        "security": {
            "client_auth": bool(settings.client_cert_allow_list or settings.tls_client_ca_file),
            "saml_verify": settings.saml_verify.value,
            "rate_limit_per_minute": settings.rate_limit_per_minute,
            "tls": settings.tls_cert_file is not None,
        },
        "simulator": settings.uses_simulator,
    }
