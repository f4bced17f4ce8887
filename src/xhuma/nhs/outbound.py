"""One audited, timed outbound call (issue: audit every outbound call; LESSONS 31).

Every PDS, SDS and GP Connect call records one audit event (transaction ``PDS`` | ``SDS`` | ``GPC``) with its
outcome, the patient (pseudonymised by the Auditor), the caller, the Spine headers and a JWT summary, and one
latency observation in ``xhuma_stage_seconds``; typed upstream failures are counted in
``xhuma_upstream_errors_total``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from xhuma.audit import Auditor
from xhuma.errors import (
    AccessDenied,
    ConsentRefused,
    PatientOutcome,
    UpstreamError,
    UpstreamUnauthorised,
    XhumaError,
)
from xhuma.observability import Metrics
from xhuma.ports import CallerIdentity


@dataclass(slots=True)
class OutboundCall:
    """What the caller learns during the call and wants in the audit event."""

    outcome: str = "error"
    reason: str | None = None
    spine: dict[str, str | None] | None = None
    jwt_summary: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def audit_outcome(error: XhumaError) -> str:
    if isinstance(error, PatientOutcome):
        return "no-match"
    if isinstance(error, UpstreamUnauthorised | AccessDenied | ConsentRefused):
        return "denied"
    return "error"


@asynccontextmanager
async def outbound_call(
    auditor: Auditor | None,
    metrics: Metrics | None,
    *,
    transaction: str,
    stage: str,
    nhs_number: str | None = None,
    caller: CallerIdentity | None = None,
) -> AsyncIterator[OutboundCall]:
    call = OutboundCall()
    error_code: str | None = None
    started = time.perf_counter()
    try:
        yield call
    except XhumaError as error:
        error_code = error.code
        call.outcome = audit_outcome(error)
        call.reason = call.reason or error.code
        if metrics is not None and isinstance(error, UpstreamError):
            metrics.upstream_errors.labels(service=stage, code=error.spine_code or error.code).inc()
        raise
    except Exception as error:
        error_code = type(error).__name__
        raise
    finally:
        elapsed = time.perf_counter() - started
        if metrics is not None:
            metrics.stage_seconds.labels(stage=stage).observe(elapsed)
        if auditor is not None:
            await auditor.record(
                transaction,
                call.outcome,
                nhs_number=nhs_number,
                caller=caller,
                error_code=error_code,
                reason=call.reason,
                duration_ms=round(elapsed * 1000, 1),
                spine=call.spine,
                jwt_summary=call.jwt_summary,
                details=call.details or None,
            )
