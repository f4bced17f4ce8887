"""Issue 6, done-when: a full ITI-55 -> ITI-38 -> ITI-39 exchange through create_app (built-in NHS simulator over
loopback HTTP, SAML signed by a key generated here, client certificate forwarded by a trusted proxy) leaves one
audit row per transaction and per outbound PDS/SDS/GP Connect call, in SQLite and in PostgreSQL, with the patient
only as a pseudonym (SCAL GEN-05; LESSONS 13, 31); /metrics then shows the stage histograms. And with the audit
database gone, ITI-39 releases nothing (no disclosure without audit), visible in readiness and metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import PG_ADMIN_URL, _pg_admin
from tests.support.exchange import (
    AUDIENCE,
    IDENTIFYING,
    NHS_NUMBER,
    app_client,
    discover,
    find_document,
    forwarded_cert_headers,
    full_exchange,
    retrieve,
    signed_by,
)
from tests.support.pki import Pki, trusted_signing_key

from xhuma.app import create_app
from xhuma.store.audit import audit_event

HMAC_KEY = "audit-" + "s" * 40


def secure_settings(make_settings: Any, tmp_path: Path, database_url: str, **overrides: Any) -> tuple[Any, Any, Any]:
    pki = Pki(tmp_path / "pki")
    epic = pki.issue("Epic Gateway", organisation="UCLH")
    signer, cert_file = trusted_signing_key(tmp_path)
    settings = make_settings(
        database_url=database_url, audit_hmac_key=HMAC_KEY, saml_verify="required",
        saml_trusted_certs=[cert_file], saml_audience=[AUDIENCE], tls_client_ca_file=pki.ca.cert_file,
        client_cert_allow_list=[epic.subject], trusted_proxies=["127.0.0.1"], admin_tokens=["a" * 40],
        **overrides,
    )
    return settings, signer, epic


async def rows(app: Any) -> list[dict[str, Any]]:
    async with app.state.runtime.audit.engine.connect() as connection:
        result = await connection.execute(sa.select(audit_event).order_by(audit_event.c.id))
        return [dict(row._mapping) for row in result]


@asynccontextmanager
async def own_pg_database(prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A PostgreSQL database of this test alone: (name, asyncpg URL); dropped afterwards if still there."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
    try:
        yield name, f"{base}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, sqlite_database_url: str) -> AsyncIterator[str]:
    """SQLite file, or a PostgreSQL database of this test alone (so every row in it is this exchange's)."""
    if request.param == "sqlite":
        yield sqlite_database_url
        return
    async with own_pg_database("xhuma_audit_e2e") as (_, url):
        yield url


async def test_full_exchange_audits_every_transaction_and_outbound_call_with_a_pseudonym_only(
        make_settings: Any, tmp_path: Path, data_dir: Path, database_url: str) -> None:
    settings, signer, epic = secure_settings(make_settings, tmp_path, database_url)
    app = create_app(settings)
    async with app_client(app, peer=("127.0.0.1", 40001)) as client:
        runtime = app.state.runtime
        if not runtime.audit.is_sqlite:
            await runtime.audit.migrate()
        done = await full_exchange(client, security=signed_by(data_dir, signer),
                                   headers=forwarded_cert_headers(epic.pem))
        metrics_text = (await client.get("/metrics")).text
        events = await rows(app)
        pseudonym = runtime.auditor.pseudonym(NHS_NUMBER)

    assert NHS_NUMBER in done.ccd.decode()  # the exchange really disclosed this patient's record
    by_transaction: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_transaction.setdefault(event["transaction"], []).append(event)
    # One event per IHE transaction, and every outbound call audited too.
    assert [len(by_transaction.get(t, [])) for t in ("ITI-55", "ITI-38", "ITI-39")] == [1, 1, 1]
    for outbound in ("PDS", "SDS", "GPC"):
        assert by_transaction.get(outbound), f"no {outbound} audit event: {sorted(by_transaction)}"
    assert all(event["outcome"] == "success" for event in events), [(e["transaction"], e["outcome"]) for e in events]

    for transaction in ("ITI-55", "ITI-38", "ITI-39"):
        [event] = by_transaction[transaction]
        assert event["message_id"] == done.message_ids[transaction]
        assert event["patient_pseudonym"] == pseudonym
        assert event["saml_verified"] is True
        assert (event["user_name"], event["purpose_of_use"]) == ("CONE, Stephen", "TREATMENT")
        assert event["user_role"].startswith("224608005")
        assert event["organization_id"] == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
        assert event["home_community_id"]
        assert event["client_cert_subject"] == epic.subject
        assert event["client_address"] == "192.0.2.44"
        assert event["duration_ms"] is not None
    assert by_transaction["ITI-39"][0]["document_unique_id"] == done.unique_id
    gpc = by_transaction["GPC"][0]
    assert gpc["patient_pseudonym"] == pseudonym
    assert gpc["ssp_from"] and gpc["ssp_to"] and gpc["ssp_interaction_id"]
    assert gpc["jwt_summary"] and gpc["jwt_summary"].get("reason_for_request") == "directcare"

    # The patient appears only as the pseudonym: no identifying value in any column of any row.
    dump = repr(events).lower()
    leaked = [value for value in IDENTIFYING if value.lower() in dump]
    assert leaked == []

    # GET /metrics after the exchange: latency histograms per stage and requests by transaction and outcome.
    for stage in ("pds", "sds", "gpconnect", "convert", "serialise"):
        assert f'xhuma_stage_seconds_count{{stage="{stage}"}}' in metrics_text, stage
    for transaction in ("ITI-55", "ITI-38", "ITI-39"):
        assert f'xhuma_requests_total{{outcome="success",transaction="{transaction}"}} 1.0' in metrics_text
    assert "xhuma_audit_events_total" in metrics_text
    # Cache hit ratio: the ITI-55 PDS read fills the PDS cache that the ITI-38 pipeline then hits; ITI-38 misses
    # the document cache (cold) and ITI-39 hits it.
    assert 'xhuma_cache_lookups_total{kind="pds",result="hit"} 1.0' in metrics_text
    assert 'xhuma_cache_lookups_total{kind="document",result="miss"} 1.0' in metrics_text
    assert 'xhuma_cache_lookups_total{kind="document",result="hit"} 1.0' in metrics_text


@pytest.mark.postgres
async def test_iti39_releases_nothing_when_the_audit_database_is_gone(make_settings: Any, tmp_path: Path,
                                                                      data_dir: Path) -> None:
    async with own_pg_database("xhuma_audit_gone") as (name, url):
        settings, signer, epic = secure_settings(make_settings, tmp_path, url)
        app = create_app(settings)
        async with app_client(app, peer=("127.0.0.1", 40002)) as client:
            await app.state.runtime.audit.migrate()
            caller: dict[str, Any] = {"security": signed_by(data_dir, signer),
                                      "headers": forwarded_cert_headers(epic.pem)}
            await discover(client, **caller)
            document = await find_document(client, **caller)
            assert (await client.get("/health/ready")).status_code == 200
            # The audit database disappears between the query and the retrieve.
            await _pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
            response = await retrieve(client, document, **caller)
            ready = await client.get("/health/ready")
            metrics_text = (await client.get("/metrics")).text

    body = response.text
    assert "RegistryError" in body and "ResponseStatusType:Failure" in body, body[:2000]
    assert "<xdsb:Document>" not in body and "Document>" not in body.replace("RetrieveDocumentSetResponse", "")
    assert "multipart/related" not in response.headers["content-type"] or "ClinicalDocument" not in body
    assert "ClinicalDocument" not in body and NHS_NUMBER not in body
    assert ready.status_code == 503 and ready.json()["checks"]["audit"]["ok"] is False
    failures = next(line for line in metrics_text.splitlines() if line.startswith("xhuma_audit_failures_total "))
    assert float(failures.split()[1]) >= 1
