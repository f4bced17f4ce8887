"""The audit trail's front door: every transaction and outbound call is recorded through ``Auditor``.

The patient appears only as a pseudonym, HMAC-SHA256 of the NHS number under ``XHUMA_AUDIT_HMAC_KEY``.
``record`` raises ``AuditUnavailable`` when the event could not be committed: callers that disclose patient
data (ITI-39) must not release it then (no disclosure without audit).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from xhuma.errors import AuditUnavailable
from xhuma.observability import Metrics, request_id_var, trace_id_var
from xhuma.ports import AuditEvent, AuditSink, CallerIdentity
from xhuma.tracing import current_trace_id

log = structlog.get_logger(__name__)

IHE_TRANSACTIONS = frozenset({"ITI-55", "ITI-38", "ITI-39"})


class AuditExporter(Protocol):
    """Where committed events are copied to (ATNA syslog); ``offer`` must not block or raise."""

    def offer(self, event: AuditEvent) -> None: ...


def pseudonymise(nhs_number: str, key: bytes) -> str:
    """Stable, keyed pseudonym of a patient for the audit trail (never reversible without the key)."""
    return hmac.new(key, nhs_number.replace(" ", "").encode(), hashlib.sha256).hexdigest()


class Auditor:
    def __init__(self, sink: AuditSink, *, hmac_key: bytes, metrics: Metrics | None = None,
                 exporter: AuditExporter | None = None) -> None:
        if not hmac_key:
            raise ValueError("the audit pseudonym key must not be empty")
        self._sink = sink
        self._key = hmac_key
        self._metrics = metrics
        self.exporter = exporter

    def pseudonym(self, nhs_number: str) -> str:
        return pseudonymise(nhs_number, self._key)

    async def record(
        self,
        transaction: str,
        outcome: str,
        *,
        nhs_number: str | None = None,
        caller: CallerIdentity | None = None,
        error_code: str | None = None,
        reason: str | None = None,
        message_id: str | None = None,
        document_unique_id: str | None = None,
        duration_ms: float | None = None,
        spine: Mapping[str, str | None] | None = None,
        jwt_summary: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
        client_cert_subject: str | None = None,
        client_address: str | None = None,
    ) -> AuditEvent:
        """Build and commit one event (one database transaction). ``spine`` may carry trace_id, from, to and
        interaction_id. ``client_cert_subject``/``client_address`` fill in what ``caller`` does not carry.

        Raises ``AuditUnavailable`` when the event was not committed; the caller must then not disclose.
        """
        spine = spine or {}
        caller = caller or CallerIdentity()
        event = AuditEvent(
            transaction=transaction,
            outcome=outcome,
            occurred_at=datetime.now(UTC),
            error_code=error_code,
            reason=reason,
            patient_pseudonym=self.pseudonym(nhs_number) if nhs_number else None,
            user_id=caller.user_id,
            user_name=caller.user_name,
            user_role=" ".join(filter(None, (caller.role_code, caller.role_display))) or None,
            organization=caller.organization,
            organization_id=caller.organization_id,
            home_community_id=caller.home_community_id,
            purpose_of_use=caller.purpose_of_use,
            saml_verified=caller.verified,
            client_cert_subject=caller.client_cert_subject or client_cert_subject,
            client_address=caller.client_address or client_address,
            message_id=message_id,
            request_id=request_id_var.get(),
            trace_id=current_trace_id() or trace_id_var.get(),
            spine_trace_id=spine.get("trace_id"),
            ssp_from=spine.get("from"),
            ssp_to=spine.get("to"),
            ssp_interaction_id=spine.get("interaction_id"),
            jwt_summary=jwt_summary,
            document_unique_id=document_unique_id,
            duration_ms=duration_ms,
            details=details,
        )
        if self._metrics is not None and transaction in IHE_TRANSACTIONS:
            # Every IHE transaction is audited exactly once, so this is where it is counted (by outcome) and timed.
            self._metrics.child(self._metrics.requests, transaction, outcome).inc()
            if duration_ms is not None:
                self._metrics.child(self._metrics.request_seconds, transaction).observe(duration_ms / 1000)
        try:
            await self._sink.record(event)
        except AuditUnavailable:
            if self._metrics is not None:
                self._metrics.audit_failures.inc()
            raise
        except Exception as error:
            # Any other failure is still a failure to audit: never let it pass as a committed event.
            if self._metrics is not None:
                self._metrics.audit_failures.inc()
            log.error("audit_write_failed", transaction=transaction, error=type(error).__name__)
            raise AuditUnavailable("the audit trail could not be written") from error
        if self._metrics is not None:
            self._metrics.child(self._metrics.audit_events, transaction).inc()
        if self.exporter is not None:
            self.exporter.offer(event)
        return event


def audit_key(settings: Any) -> bytes:
    """The pseudonym key: ``XHUMA_AUDIT_HMAC_KEY`` (required in strict profiles, checked at start-up); in the
    simulator without one, a random key for this process, so pseudonyms are not comparable across restarts."""
    if settings.audit_hmac_key is not None and settings.audit_hmac_key.get_secret_value():
        return bytes(settings.audit_hmac_key.get_secret_value().encode())
    import secrets

    log.warning("audit_key_ephemeral", detail="XHUMA_AUDIT_HMAC_KEY unset: pseudonyms change on restart")
    return secrets.token_bytes(32)
