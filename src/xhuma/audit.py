"""The audit trail's front door: every transaction and outbound call is recorded through ``Auditor``.

The patient appears only as a pseudonym, HMAC-SHA256 of the NHS number under ``XHUMA_AUDIT_HMAC_KEY``.
``record`` raises ``AuditUnavailable`` when the event could not be committed: callers that disclose patient
data (ITI-39) must not release it then (no disclosure without audit).

The other direction holds too: no event claims a disclosure its caller never received. Every event must commit
before a deadline by which its caller is answered (``xhuma.store.audit``); when the write of a disclosure event
was sent but not acknowledged in time (``AuditOutcomeUnknown``), the caller is told nothing was disclosed and a
``not-disclosed`` event voiding it is committed, retried until the store takes it (docs/decisions.md, "The audit
trail is exact"). Read as a whole, success events net of the events voiding them are exactly the disclosures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from xhuma.errors import AuditOutcomeUnknown, AuditUnavailable
from xhuma.ihe.transactions import IHE_TRANSACTION_IDS
from xhuma.nhs.nhs_number import normalise as normalise_nhs_number
from xhuma.observability import Metrics, request_id_var, trace_id_var
from xhuma.ports import AuditEvent, AuditSink, CallerIdentity
from xhuma.tracing import current_trace_id

log = structlog.get_logger(__name__)

IHE_TRANSACTIONS = IHE_TRANSACTION_IDS
NOT_DISCLOSED = "not-disclosed"  # outcome of an event voiding a disclosure event (``voids``)
PSEUDONYMS_KEPT = 4096  # per auditor: a patient's events (ITI-55, ITI-38, ITI-39, outbound calls) come together


def claims_disclosure(event: AuditEvent) -> bool:
    """A successful IHE transaction discloses to its caller; its gateway withholds the answer when the event is
    not committed (ITI-55 answers AE, ITI-38 and ITI-39 a RegistryError)."""
    return event.outcome == "success" and event.transaction in IHE_TRANSACTIONS


def voiding_event(event: AuditEvent) -> AuditEvent:
    """The event withdrawing ``event``: same transaction, patient, caller, MessageID and document, so that it is
    found by the same searches."""
    return dataclasses.replace(
        event, outcome=NOT_DISCLOSED, occurred_at=datetime.now(UTC), error_code=AuditUnavailable.code,
        reason="audit write unacknowledged in time; nothing was disclosed", duration_ms=None,
        event_id=str(uuid.uuid4()), voids=event.event_id,
    )


class AuditExporter(Protocol):
    """Where committed events are copied to (ATNA syslog); ``offer`` must not block or raise."""

    def offer(self, event: AuditEvent) -> None: ...


def pseudonymise(nhs_number: str, key: bytes) -> str:
    """Stable, keyed pseudonym of a patient for the audit trail (never reversible without the key)."""
    return hmac.new(key, normalise_nhs_number(nhs_number).encode(), hashlib.sha256).hexdigest()


class Voids:
    """Events voiding disclosures whose write timed out, committed in order by one background task that retries
    (backing off up to 5 s) until the store takes each. The store is usually unavailable when one is queued.

    Bounded: beyond ``max_pending`` a void is dropped, counted and logged (never with PHI). Pending voids live in
    this process only; ``close`` tries to commit them before shutdown and logs how many it could not.
    """

    def __init__(self, sink: AuditSink, *, metrics: Metrics | None = None, max_pending: int = 10_000) -> None:
        self._sink = sink
        self._metrics = metrics
        self._max_pending = max_pending
        self._pending: deque[AuditEvent] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.child(self._metrics.audit_voids, result).inc()

    def add(self, event: AuditEvent) -> None:
        """Queue the void of ``event`` (call from the event loop)."""
        if len(self._pending) >= self._max_pending:
            self._count("dropped")
            log.error("audit_void_dropped", transaction=event.transaction, pending=len(self._pending))
            return
        self._pending.append(voiding_event(event))
        self._count("queued")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._commit_pending())

    async def _commit_pending(self) -> None:
        delay = 0.1
        while self._pending:
            try:
                await self._sink.record(self._pending[0])
            except Exception as error:  # the store is still unavailable: try again later
                log.warning("audit_void_retry", error=type(error).__name__, pending=len(self._pending))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._pending.popleft()
            self._count("written")
            delay = 0.1

    async def flush(self, timeout_seconds: float) -> bool:
        """Wait up to ``timeout_seconds`` for every queued void to be committed; True when none is left."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout_seconds)
        return not self._pending

    async def close(self, timeout_seconds: float = 5.0) -> None:
        if not await self.flush(timeout_seconds):
            log.error("audit_voids_unwritten", pending=len(self._pending))
        if self._task is not None and not self._task.done():
            self._task.cancel()


class Auditor:
    def __init__(self, sink: AuditSink, *, hmac_key: bytes, metrics: Metrics | None = None,
                 exporter: AuditExporter | None = None) -> None:
        if not hmac_key:
            raise ValueError("the audit pseudonym key must not be empty")
        self._sink = sink
        self._key = hmac_key
        self._metrics = metrics
        self.exporter = exporter
        self.voids = Voids(sink, metrics=metrics)
        self._pseudonyms: dict[str, str] = {}  # recent patients' pseudonyms (one HMAC each), in memory only

    async def close(self) -> None:
        """Commit the voids still queued (at shutdown, before the store closes)."""
        await self.voids.close()

    def pseudonym(self, nhs_number: str) -> str:
        found = self._pseudonyms.get(nhs_number)
        if found is None:
            if len(self._pseudonyms) >= PSEUDONYMS_KEPT:
                self._pseudonyms.clear()
            found = self._pseudonyms[nhs_number] = pseudonymise(nhs_number, self._key)
        return found

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
        except Exception as error:
            # Any failure is a failure to audit: never let it pass as a committed event.
            if self._metrics is not None:
                self._metrics.audit_failures.inc()
            if not isinstance(error, AuditUnavailable):
                log.error("audit_write_failed", transaction=transaction, error=type(error).__name__)
            # Only a store's plain AuditUnavailable says the event did not commit; otherwise it may still, and a
            # disclosure event is voided (the caller is told nothing was disclosed).
            if type(error) is not AuditUnavailable and claims_disclosure(event):
                self.voids.add(event)
            if isinstance(error, AuditUnavailable):
                raise
            raise AuditOutcomeUnknown("the audit trail could not be written") from error
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
