"""Optional ATNA export: each committed event as an RFC 5424 syslog message over TLS (RFC 5425 framing) with a
DICOM audit message, to a real TLS collector on loopback; export never blocks or fails a transaction."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

from lxml import etree
from tests.audit.conftest import caller
from tests.support.pki import Pki

from xhuma.atna import AtnaExporter, dicom_audit_message
from xhuma.audit import Auditor
from xhuma.observability import Metrics
from xhuma.store.audit import SqlAuditStore

NHS_NUMBER = "9690937278"
SYSLOG_HEADER = re.compile(
    rb"^<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ xhuma - IHE\+RFC-3881 - \xef\xbb\xbf")


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    frames = []
    for _ in range(count):
        length = int((await reader.readuntil(b" "))[:-1])
        frames.append(await reader.readexactly(length))
    return frames


async def test_events_reach_a_tls_syslog_collector_as_dicom_audit_messages(tmp_path: Path,
                                                                           sqlite_database_url: str) -> None:
    pki = Pki(tmp_path / "pki")
    collector_cert = pki.issue("collector", server=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(collector_cert.cert_file, collector_cert.key_file)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for message in await read_frames(reader, 2):
            await received.put(message)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    metrics = Metrics()
    exporter = AtnaExporter(f"tls://localhost:{port}", source_id="urn:oid:2.16.840.1.113883.3.9999.1",
                            ca_file=pki.ca.cert_file, metrics=metrics)
    exporter.start()
    store = SqlAuditStore(sqlite_database_url)
    await store.migrate()
    auditor = Auditor(store, hmac_key=b"k" * 32, exporter=exporter)
    try:
        await auditor.record("ITI-55", "success", nhs_number=NHS_NUMBER, caller=caller(), message_id="urn:uuid:m1")
        await auditor.record("ITI-39", "denied", nhs_number=NHS_NUMBER, caller=caller(),
                             error_code="SecurityError", document_unique_id="1.2.3.4")
        first = await asyncio.wait_for(received.get(), 10)
        second = await asyncio.wait_for(received.get(), 10)
    finally:
        await exporter.close()
        server.close()
        await store.close()
    for message in (first, second):
        assert SYSLOG_HEADER.match(message), message[:80]
        assert NHS_NUMBER.encode() not in message
    assert int(SYSLOG_HEADER.match(first).group(1)) == 10 * 8 + 6  # authpriv.info
    assert int(SYSLOG_HEADER.match(second).group(1)) == 10 * 8 + 4  # authpriv.warning (denied)
    xml = etree.fromstring(SYSLOG_HEADER.sub(b"", second))
    assert xml.tag == "AuditMessage"
    identification = xml.find("EventIdentification")
    assert identification.get("EventActionCode") == "R" and identification.get("EventOutcomeIndicator") == "4"
    assert identification.find("EventID").get("csd-code") == "110106"
    assert identification.find("EventTypeCode").get("csd-code") == "ITI-39"
    objects = {o.get("ParticipantObjectTypeCodeRole"): o.get("ParticipantObjectID")
               for o in xml.findall("ParticipantObjectIdentification")}
    assert objects["1"] == auditor.pseudonym(NHS_NUMBER)
    assert objects["3"] == "1.2.3.4"
    users = [p.get("UserName") for p in xml.findall("ActiveParticipant")]
    assert "CONE, Stephen" in users
    assert metrics.registry.get_sample_value("xhuma_atna_messages_total", {"result": "sent"}) == 2


async def test_unreachable_collector_drops_the_overflow_instead_of_waiting_and_counts_it(
        tmp_path: Path, sqlite_database_url: str) -> None:
    metrics = Metrics()
    # Port 9 on loopback: nothing listens; the sender keeps failing in the background.
    exporter = AtnaExporter("tls://127.0.0.1:9", source_id="xhuma", metrics=metrics, queue_size=3)
    exporter.start()
    store = SqlAuditStore(sqlite_database_url)
    await store.migrate()
    auditor = Auditor(store, hmac_key=b"k" * 32, exporter=exporter)
    try:
        for _ in range(10):
            await auditor.record("ITI-55", "success", nhs_number=NHS_NUMBER)
    finally:
        await exporter.close()
        await store.close()
    # A queue of 3 and 10 events: recording did not wait for room, the overflow was dropped and counted.
    assert await_count(metrics, "dropped") >= 6
    assert await_count(metrics, "sent") == 0


def await_count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("xhuma_atna_messages_total", {"result": result}) or 0.0


def test_dicom_message_without_optional_parts_is_well_formed() -> None:
    from datetime import UTC, datetime

    from xhuma.ports import AuditEvent

    xml = etree.fromstring(dicom_audit_message(
        AuditEvent(transaction="SDS", outcome="error", occurred_at=datetime.now(UTC), error_code="NoEndpoint"),
        source_id="xhuma"))
    assert xml.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert xml.find("EventIdentification/EventOutcomeDescription").text == "NoEndpoint"
    assert xml.find("ParticipantObjectIdentification") is None
