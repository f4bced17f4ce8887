"""Optional ATNA export: every committed audit event as a DICOM audit message (DICOM PS3.15 A.5, IHE ITI-20
Record Audit Event) in an RFC 5424 syslog message, sent over TLS with RFC 5425 octet-counting framing to
``XHUMA_ATNA_SYSLOG_URL`` (``tls://host:port``).

Export never blocks a request: ``offer`` puts the message on a bounded queue and returns; one background task
sends, reconnecting with back-off. When the queue is full the message is dropped and counted
(``xhuma_atna_messages_total{result="dropped"}``); the database audit trail stays the record of truth.
The patient is identified by the audit pseudonym only, never by NHS number.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from lxml import etree

from xhuma.ihe.transactions import BY_ID
from xhuma.observability import Metrics
from xhuma.ports import AuditEvent

log = structlog.get_logger(__name__)

# RFC 5424: facility 10 (security/authorization, "authpriv"), severity by outcome.
FACILITY_AUTHPRIV = 10
SEVERITY = {"success": 6, "no-match": 6, "denied": 4, "error": 3}  # informational, warning, error
# DICOM EventOutcomeIndicator: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
OUTCOME_INDICATOR = {"success": "0", "no-match": "0", "denied": "4", "error": "8"}

# (EventID code, display, action code, EventTypeCode display) per transaction (ITI TF-2 3.55.5, 3.38.5, 3.39.5).
# The IHE transactions' events are their descriptors' (the registry, xhuma.ihe.transactions, read per event so that
# every registered transaction is coded); the outbound calls' are here.
EVENTS: dict[str, tuple[str, str, str, str]] = {
    "PDS": ("110112", "Query", "E", "PDS FHIR read patient"),
    "SDS": ("110112", "Query", "E", "SDS endpoint lookup"),
    "GPC": ("110107", "Import", "C", "GP Connect Access Record: Structured"),
    "TERMINOLOGY": ("110112", "Query", "E", "NHS England Terminology Server lookup"),
}


def _sub(parent: etree._Element, tag: str, **attributes: str | None) -> etree._Element:
    return etree.SubElement(parent, tag, {key: value for key, value in attributes.items() if value is not None})


def _code(parent: etree._Element, tag: str, code: str, system: str, display: str) -> etree._Element:
    return _sub(parent, tag, csd_code=code, codeSystemName=system, originalText=display)


def _event_coding(transaction: str) -> tuple[str, str, str, str]:
    descriptor = BY_ID.get(transaction)
    if descriptor is not None:
        atna = descriptor.atna
        return atna.code, atna.display, atna.action, atna.type_display
    return EVENTS.get(transaction, ("110100", "Application Activity", "E", transaction))


def dicom_audit_message(event: AuditEvent, *, source_id: str, enterprise_site: str | None = None) -> bytes:
    """The DICOM ``AuditMessage`` XML of one event."""
    event_code, event_display, action, type_display = _event_coding(event.transaction)
    root = etree.Element("AuditMessage")
    identification = _sub(root, "EventIdentification", EventActionCode=action,
                          EventDateTime=event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                          EventOutcomeIndicator=OUTCOME_INDICATOR.get(event.outcome, "8"))
    _code(identification, "EventID", event_code, "DCM", event_display)
    _code(identification, "EventTypeCode", event.transaction, "IHE Transactions", type_display)
    if event.purpose_of_use:
        _code(identification, "PurposeOfUse", event.purpose_of_use, "2.16.840.1.113883.3.18.7.1",
              event.purpose_of_use)
    if event.error_code:
        _sub(identification, "EventOutcomeDescription").text = event.error_code
    # Source (the calling gateway), destination (Xhuma), and the human requestor from the SAML assertion.
    if event.client_cert_subject or event.client_address or event.home_community_id:
        source = _sub(root, "ActiveParticipant", UserID=event.home_community_id or event.client_cert_subject or "",
                      AlternativeUserID=event.client_cert_subject, UserIsRequestor="true",
                      NetworkAccessPointID=event.client_address,
                      NetworkAccessPointTypeCode="2" if event.client_address else None)
        _code(source, "RoleIDCode", "110153", "DCM", "Source Role ID")
    destination = _sub(root, "ActiveParticipant", UserID=source_id, UserIsRequestor="false")
    _code(destination, "RoleIDCode", "110152", "DCM", "Destination Role ID")
    if event.user_id or event.user_name:
        human = _sub(root, "ActiveParticipant", UserID=event.user_id or event.user_name or "",
                     UserName=event.user_name, UserIsRequestor="true")
        if event.user_role:
            code, _, display = event.user_role.partition(" ")
            _code(human, "RoleIDCode", code, "SNOMED-CT", display or code)
    source_identification = _sub(root, "AuditSourceIdentification", AuditEnterpriseSiteID=enterprise_site,
                                 AuditSourceID=source_id)
    _code(source_identification, "AuditSourceTypeCode", "4", "DCM", "Application Server Process")
    if event.patient_pseudonym:
        patient = _sub(root, "ParticipantObjectIdentification", ParticipantObjectID=event.patient_pseudonym,
                       ParticipantObjectTypeCode="1", ParticipantObjectTypeCodeRole="1")
        _code(patient, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number (pseudonym)")
    if event.document_unique_id:
        document = _sub(root, "ParticipantObjectIdentification", ParticipantObjectID=event.document_unique_id,
                        ParticipantObjectTypeCode="2", ParticipantObjectTypeCodeRole="3")
        _code(document, "ParticipantObjectIDTypeCode", "9", "RFC-3881", "Report Number")
    if event.message_id:
        query = _sub(root, "ParticipantObjectIdentification", ParticipantObjectID=event.message_id,
                     ParticipantObjectTypeCode="2", ParticipantObjectTypeCodeRole="24")
        _code(query, "ParticipantObjectIDTypeCode", event.transaction, "IHE Transactions", "MessageID")
    for key, value in (("trace_id", event.trace_id), ("spine_trace_id", event.spine_trace_id),
                       ("ssp_interaction_id", event.ssp_interaction_id)):
        if value:
            detail = _sub(root, "ParticipantObjectIdentification", ParticipantObjectID=value,
                          ParticipantObjectTypeCode="4", ParticipantObjectTypeCodeRole="13")
            _code(detail, "ParticipantObjectIDTypeCode", key, "Xhuma", key)
    # DICOM uses "csd-code"; lxml keyword arguments cannot carry a hyphen.
    for element in root.iter():
        if "csd_code" in element.attrib:
            element.attrib["csd-code"] = element.attrib.pop("csd_code")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def syslog_message(event: AuditEvent, *, hostname: str, source_id: str) -> bytes:
    """RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - BOM XML`` (IHE ITI-20: MSGID ``IHE+RFC-3881``)."""
    priority = FACILITY_AUTHPRIV * 8 + SEVERITY.get(event.outcome, 3)
    timestamp = event.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{priority}>1 {timestamp} {hostname[:255] or '-'} xhuma - IHE+RFC-3881 - "
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + dicom_audit_message(event, source_id=source_id)


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


class AtnaExporter:
    """Background sender to one TLS syslog collector."""

    def __init__(self, url: str, *, source_id: str, ca_file: Path | None = None, metrics: Metrics | None = None,
                 queue_size: int = 10000, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "tls" or not parts.hostname or not parts.port:
            raise ValueError("XHUMA_ATNA_SYSLOG_URL must be tls://host:port")
        self.host, self.port = parts.hostname, parts.port
        self.source_id = source_id
        self.hostname = socket.gethostname()
        self._ssl = ssl_context or ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._metrics = metrics
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="atna-exporter")

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.atna_messages.labels(result).inc()

    def offer(self, event: AuditEvent) -> None:
        """Queue the event for export; never blocks and never raises."""
        try:
            message = frame(syslog_message(event, hostname=self.hostname, source_id=self.source_id))
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._count("dropped")
        except Exception as error:  # export must never break the audited transaction
            log.warning("atna_encode_failed", error=type(error).__name__)
            self._count("failed")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _connect(self) -> asyncio.StreamWriter:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self._ssl, server_hostname=self.host), timeout=10)
        return writer

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            message = await self._queue.get()
            while True:
                try:
                    if self._writer is None or self._writer.is_closing():
                        self._writer = await self._connect()
                    self._writer.write(message)
                    await asyncio.wait_for(self._writer.drain(), timeout=10)
                except (OSError, ssl.SSLError, TimeoutError) as error:
                    log.warning("atna_send_failed", error=type(error).__name__, retry_in=backoff)
                    self._count("failed")
                    await self._close_writer()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                self._count("sent")
                backoff = 0.5
                self._queue.task_done()
                break

    async def flush(self, wait_seconds: float = 5.0) -> None:
        """Wait until the queue is empty (tests and shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), wait_seconds)

    async def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2)

    async def close(self) -> None:
        await self.flush(wait_seconds=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_writer()
