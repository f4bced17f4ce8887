"""Every transaction is audited with who, what and the outcome, the patient only as a keyed pseudonym
(SCAL GEN-05; LESSONS 31), one database transaction per event, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from tests.audit.conftest import caller

from xhuma.audit import Auditor
from xhuma.errors import AuditUnavailable
from xhuma.observability import Metrics
from xhuma.store.audit import SqlAuditStore, audit_event

NHS_NUMBER = "9690937278"
KEY = b"k" * 32


async def test_event_carries_identity_transport_and_pseudonym_never_the_nhs_number(
        audit_store: SqlAuditStore) -> None:
    auditor = Auditor(audit_store, hmac_key=KEY)
    await auditor.record(
        "ITI-39", "success", nhs_number=NHS_NUMBER, caller=caller(), message_id="urn:uuid:m-1",
        document_unique_id="2.16.840.1.113883.3.9999.1.2.77", duration_ms=12.5,
        spine={"trace_id": "spine-trace-1", "from": "200000000359", "to": "918999198993",
               "interaction_id": "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"},
        jwt_summary={"iss": "https://xhuma.example.nhs.uk", "reason_for_request": "directcare"},
    )
    [row] = await audit_store.query()
    assert row["transaction"] == "ITI-39" and row["outcome"] == "success"
    assert row["user_name"] == "CONE, Stephen"
    assert row["user_role"] == "224608005 Administrative healthcare staff"
    assert row["organization_id"] == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
    assert row["purpose_of_use"] == "TREATMENT" and row["saml_verified"] is True
    assert row["client_cert_subject"] == "CN=Epic Gateway,O=UCLH,C=GB" and row["client_address"] == "192.0.2.10"
    assert row["message_id"] == "urn:uuid:m-1" and row["spine_trace_id"] == "spine-trace-1"
    assert (row["ssp_from"], row["ssp_to"]) == ("200000000359", "918999198993")
    assert row["jwt_summary"] == {"iss": "https://xhuma.example.nhs.uk", "reason_for_request": "directcare"}
    assert row["document_unique_id"] == "2.16.840.1.113883.3.9999.1.2.77"
    assert row["patient_pseudonym"] == hmac.new(KEY, NHS_NUMBER.encode(), hashlib.sha256).hexdigest()
    # The NHS number is nowhere in the stored row, in any column.
    async with audit_store.engine.connect() as connection:
        raw = (await connection.execute(sa.select(audit_event))).mappings().all()
    assert NHS_NUMBER not in repr(raw)


async def test_a_remembered_pseudonym_is_the_keyed_hash_and_the_memory_of_them_stays_bounded(
        audit_store: SqlAuditStore) -> None:
    import xhuma.audit as audit_module

    auditor = Auditor(audit_store, hmac_key=KEY)
    numbers = [f"{9000000000 + n}" for n in range(audit_module.PSEUDONYMS_KEPT + 10)]
    for number in numbers:
        assert auditor.pseudonym(number) == hmac.new(KEY, number.encode(), hashlib.sha256).hexdigest()
    assert len(auditor._pseudonyms) <= audit_module.PSEUDONYMS_KEPT
    # Asked again, a remembered one (spaced as partners write it) is still the keyed hash of the normalised number.
    spaced = f"{numbers[-1][:3]} {numbers[-1][3:6]} {numbers[-1][6:]}"
    assert auditor.pseudonym(spaced) == hmac.new(KEY, numbers[-1].encode(), hashlib.sha256).hexdigest()


async def test_pseudonym_depends_on_the_key(audit_store: SqlAuditStore) -> None:
    first = Auditor(audit_store, hmac_key=b"a" * 32).pseudonym(NHS_NUMBER)
    second = Auditor(audit_store, hmac_key=b"b" * 32).pseudonym(NHS_NUMBER)
    assert first != second
    assert first == Auditor(audit_store, hmac_key=b"a" * 32).pseudonym("969 093 7278")
    with pytest.raises(ValueError):
        Auditor(audit_store, hmac_key=b"")


async def test_query_filters_and_paging(audit_store: SqlAuditStore) -> None:
    auditor = Auditor(audit_store, hmac_key=KEY)
    for index in range(5):
        await auditor.record("ITI-55", "success" if index % 2 == 0 else "no-match", nhs_number=NHS_NUMBER)
    await auditor.record("ITI-38", "error", error_code="UpstreamUnavailable", nhs_number="9000000009")
    await auditor.record("PDS", "success", nhs_number=NHS_NUMBER)
    assert await audit_store.count() == 7
    assert await audit_store.count(transaction="ITI-55") == 5
    assert await audit_store.count(transaction=["ITI-55", "ITI-38"], outcome="no-match") == 2
    assert await audit_store.count(patient_pseudonym=auditor.pseudonym("9000000009")) == 1
    assert await audit_store.count(error_code="UpstreamUnavailable") == 1
    first_page = await audit_store.query(limit=3)
    second_page = await audit_store.query(limit=3, offset=3)
    assert [row["transaction"] for row in first_page] == ["PDS", "ITI-38", "ITI-55"]
    assert {row["id"] for row in first_page}.isdisjoint({row["id"] for row in second_page})
    future = datetime.now(UTC) + timedelta(minutes=1)
    assert await audit_store.count(since=future) == 0
    assert await audit_store.count(until=future) == 7
    with pytest.raises(TypeError):
        await audit_store.query(nhs_number=NHS_NUMBER)


async def test_failed_commit_raises_counts_and_shows_in_readiness_until_writable_again(
        audit_store: SqlAuditStore) -> None:
    metrics = Metrics()
    auditor = Auditor(audit_store, hmac_key=KEY, metrics=metrics)
    await auditor.record("ITI-55", "success")
    async with audit_store.engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE audit_event RENAME TO audit_event_moved"))
    try:
        with pytest.raises(AuditUnavailable):
            await auditor.record("ITI-39", "success", nhs_number=NHS_NUMBER)
        assert metrics.registry.get_sample_value("xhuma_audit_failures_total") == 1
        # SELECT 1 would still succeed: the store reports itself not ready because writes fail.
        assert await audit_store.ping() is False
    finally:
        async with audit_store.engine.begin() as connection:
            await connection.execute(sa.text("ALTER TABLE audit_event_moved RENAME TO audit_event"))
    assert await audit_store.ping() is True
    assert await audit_store.count() == 1  # the probe write was rolled back
    assert metrics.registry.get_sample_value("xhuma_audit_events_total", {"transaction": "ITI-55"}) == 1


async def test_committed_events_are_offered_to_the_exporter(audit_store: SqlAuditStore) -> None:
    offered = []

    class Exporter:
        def offer(self, event: object) -> None:
            offered.append(event)

    auditor = Auditor(audit_store, hmac_key=KEY, exporter=Exporter())
    event = await auditor.record("ITI-55", "no-match", nhs_number=NHS_NUMBER)
    assert offered == [event]


async def test_each_audited_ihe_transaction_is_counted_by_outcome_and_timed(audit_store: SqlAuditStore) -> None:
    metrics = Metrics()
    auditor = Auditor(audit_store, hmac_key=KEY, metrics=metrics)
    await auditor.record("ITI-55", "no-match", duration_ms=40.0)
    await auditor.record("ITI-39", "success", duration_ms=120.0)
    await auditor.record("PDS", "success", duration_ms=30.0)  # outbound calls are not IHE requests
    sample = metrics.registry.get_sample_value
    assert sample("xhuma_requests_total", {"transaction": "ITI-55", "outcome": "no-match"}) == 1
    assert sample("xhuma_requests_total", {"transaction": "ITI-39", "outcome": "success"}) == 1
    assert sample("xhuma_requests_total", {"transaction": "PDS", "outcome": "success"}) is None
    assert sample("xhuma_request_seconds_sum", {"transaction": "ITI-39"}) == pytest.approx(0.12)
