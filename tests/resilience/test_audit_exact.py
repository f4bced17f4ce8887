"""Issue 15, item 5: the audit trail is exact in both directions. No disclosure without a committed event, and no
event claiming a disclosure its caller never received: an event past its deadline cannot commit (PostgreSQL
refuses it at COMMIT, the SQLite writer before COMMIT), and a disclosure whose write went unacknowledged is voided
by a ``not-disclosed`` event. Proved by freezing a private PostgreSQL (SIGSTOP) mid-load and comparing the rows
with what each caller received, and by stalling the SQLite writer process the same way."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from tests.support.exchange import BIRTH_HL7, FAMILY, GIVEN, NHS_NUMBER, app_client, discover, find_document
from tests.support.postgres_server import PostgresServer
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    HL7,
    NHS_OID,
    RIM,
    SOAP_CT,
    XDSB,
    envelope,
    iti38_body,
    iti39_body,
    iti55_body,
    soap_parts,
)

from xhuma.app import Runtime, create_app
from xhuma.audit import NOT_DISCLOSED, Auditor
from xhuma.config import Settings
from xhuma.errors import AuditOutcomeUnknown, AuditUnavailable
from xhuma.ports import AuditEvent
from xhuma.store.audit import SqlAuditStore, upgrade

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own (never the shared one): it is frozen."""
    server = PostgresServer()
    server.start()
    upgrade(server.url)  # production: `xhuma db upgrade` before start
    yield server
    server.stop()


def plain_url(server: PostgresServer) -> str:
    return server.url.replace("postgresql+asyncpg://", "postgresql://")


def told_success(response: httpx.Response) -> bool:
    """Did the caller receive the document? (200 with a Document, and no RegistryError.)"""
    if response.status_code != 200:
        return False
    env, _ = soap_parts(response)
    return env.find(f".//{{{XDSB}}}Document") is not None


async def trail(url: str, transaction: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            'SELECT event_id, outcome, message_id, voids FROM audit_event WHERE "transaction" = $1', transaction
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def net_disclosures(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Success events per MessageID, net of the events voiding them."""
    voided = {row["voids"] for row in rows if row["outcome"] == NOT_DISCLOSED}
    net: dict[str, int] = {}
    for row in rows:
        if row["outcome"] == "success" and row["event_id"] not in voided:
            net[row["message_id"]] = net.get(row["message_id"], 0) + 1
    return net


async def test_postgres_frozen_mid_load_leaves_the_trail_exact_for_every_caller(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    """50 EHRs retrieve the same document in a loop; PostgreSQL is frozen for longer than the write timeout and
    thawed. Every caller told success has a committed success event; no caller told failure has one (net of
    voids), including the writes that were inside the frozen server when it stopped."""
    url = plain_url(private_postgres)
    connection = await asyncpg.connect(url)
    await connection.execute("DELETE FROM audit_event")
    await connection.close()
    settings = Settings(working_dir=tmp_path, database_url=private_postgres.url, audit_write_timeout_seconds=1.0)
    app = create_app(settings)
    received: dict[str, bool] = {}
    stop = asyncio.Event()
    async with app_client(app) as client:
        await discover(client)
        document = await find_document(client)
        body = iti39_body([(document.home, document.repository, document.unique_id)])

        async def ehr() -> None:
            while not stop.is_set():
                message_id = f"urn:uuid:{uuid.uuid4()}"
                data = envelope(ACTION_39, body, message_id=message_id)
                response = await client.post("/SOAP/iti39", content=data, headers={"content-type": SOAP_CT})
                received[message_id] = told_success(response)

        ehrs = [asyncio.create_task(ehr()) for _ in range(50)]
        await asyncio.sleep(0.5)
        private_postgres.freeze()
        try:
            await asyncio.sleep(2.5)  # every write in flight outlives its 1 s deadline
        finally:
            private_postgres.thaw()
        await asyncio.sleep(1.5)  # the thawed server runs what it had received; requests succeed again
        stop.set()
        await asyncio.gather(*ehrs)
        runtime: Runtime = app.state.runtime
        assert runtime.auditor is not None
        assert await runtime.auditor.voids.flush(30), "voids still pending 30 s after the thaw"

    rows = await trail(url, "ITI-39")
    net = net_disclosures(rows)
    told_yes = {m for m, ok in received.items() if ok}
    told_no = {m for m, ok in received.items() if not ok}
    voided_callers = {row["message_id"] for row in rows if row["outcome"] == NOT_DISCLOSED}
    print(f"\ncallers {len(received)}: told success {len(told_yes)}, told failure {len(told_no)}; "
          f"success rows {sum(r['outcome'] == 'success' for r in rows)}, voids {len(voided_callers)}")
    assert told_no, "the freeze refused nobody: it did not hit the load"
    assert told_yes
    assert {m for m in told_yes if net.get(m) != 1} == set(), "a caller told success without one success event"
    assert {m for m in told_no if net.get(m)} == set(), "a success event for a caller told nothing was disclosed"
    assert voided_callers <= told_no


async def test_postgres_refuses_at_commit_an_event_past_its_deadline(private_postgres: PostgresServer) -> None:
    """The case of a server frozen between executing the INSERT and committing it: the deadline is checked by a
    deferred trigger, at COMMIT, against the time of the commit itself."""
    store = SqlAuditStore(private_postgres.url)
    event = AuditEvent(transaction="ITI-39", outcome="success", occurred_at=datetime.now(UTC),
                       message_id=f"urn:uuid:{uuid.uuid4()}")
    params = store._rows.params(event, datetime.now(UTC) + timedelta(seconds=0.3))
    await store.close()
    connection = await asyncpg.connect(plain_url(private_postgres))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(store._rows.sql, *params)  # executed in time...
        await asyncio.sleep(0.6)
        with pytest.raises(asyncpg.PostgresError, match="commit deadline"):
            await transaction.commit()  # ...committed too late
        count = await connection.fetchval("SELECT count(*) FROM audit_event WHERE event_id = $1", event.event_id)
    finally:
        await connection.close()
    assert count == 0


async def test_postgres_commits_an_event_and_its_void_within_their_deadlines(
    private_postgres: PostgresServer,
) -> None:
    store = SqlAuditStore(private_postgres.url, write_timeout_seconds=2)
    try:
        event = AuditEvent(transaction="ITI-39", outcome="success", occurred_at=datetime.now(UTC))
        await store.record(event)
        (row,) = await store.query(event_id=event.event_id)
        assert row["commit_by"] is not None and row["commit_by"] > row["occurred_at"]
        void = AuditEvent(transaction="ITI-39", outcome=NOT_DISCLOSED, occurred_at=datetime.now(UTC),
                          voids=event.event_id)
        await store.record(void)
        (row,) = await store.query(voids=event.event_id)
        assert row["commit_by"] is not None and row["event_id"] == void.event_id
    finally:
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlAuditStore]:
    store = SqlAuditStore(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}", write_timeout_seconds=0.5)
    await store.migrate()
    yield store
    await store.close()


def writer_pid(store: SqlAuditStore) -> int:
    writer = store._sqlite_writer
    assert writer is not None and writer._transport is not None
    return writer._transport.get_pid()


async def test_sqlite_writer_stalled_past_the_deadline_never_commits_the_event_and_it_is_voided(
    sqlite_store: SqlAuditStore,
) -> None:
    """The SQLite writer process stopped (SIGSTOP) while an ITI-39 disclosure is being audited: the caller is
    answered within the timeout, the event never commits after the writer resumes, and its void does."""
    auditor = Auditor(sqlite_store, hmac_key=b"k" * 32)
    await auditor.record("ITI-39", "error", message_id="urn:uuid:warm-up")  # the writer process is running
    pid = writer_pid(sqlite_store)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(AuditOutcomeUnknown):
            await auditor.record("ITI-39", "success", nhs_number="9690937286", message_id="urn:uuid:stalled",
                                 document_unique_id="1.2.3")
        waited = time.monotonic() - started
        await asyncio.sleep(0.7)  # past the event's deadline while still stopped
    finally:
        os.kill(pid, signal.SIGCONT)
    assert waited < 1.5
    assert auditor.voids.pending == 1
    assert await auditor.voids.flush(10)
    rows = await sqlite_store.query(message_id="urn:uuid:stalled")
    assert [row["outcome"] for row in rows] == [NOT_DISCLOSED]  # the success event never committed
    assert rows[0]["document_unique_id"] == "1.2.3" and rows[0]["patient_pseudonym"]
    assert rows[0]["voids"] and rows[0]["voids"] != rows[0]["event_id"]


async def test_an_event_the_store_refuses_is_not_voided(sqlite_store: SqlAuditStore) -> None:
    """A definite refusal (the writer answered: not committed) leaves nothing to void."""
    auditor = Auditor(sqlite_store, hmac_key=b"k" * 32)
    async with sqlite_store.engine.begin() as connection:  # a table the writer cannot insert into
        await connection.execute(sa.text("ALTER TABLE audit_event RENAME TO audit_event_moved"))
    with pytest.raises(AuditUnavailable) as raised:
        await auditor.record("ITI-39", "success", message_id="urn:uuid:refused")
    assert type(raised.value) is AuditUnavailable
    assert auditor.voids.pending == 0


async def test_each_transaction_whose_disclosure_audit_stalls_answers_failure_and_leaves_no_net_success(
    tmp_path: Path,
) -> None:
    """Through the gateway, with the embedded SQLite audit: while the writer process is stopped, an ITI-55 match,
    an ITI-38 listing and an ITI-39 retrieval each answer that nothing was disclosed (AE, RegistryError), and once
    it resumes the trail holds no success for them net of voids."""
    settings = Settings(working_dir=tmp_path, audit_write_timeout_seconds=0.5)
    app = create_app(settings)
    async with app_client(app) as client:
        await discover(client)
        document = await find_document(client)  # the record is fetched and cached; the writer process runs
        runtime: Runtime = app.state.runtime
        requests = {
            "ITI-55": ("/SOAP/iti55", ACTION_55,
                       iti55_body([[(NHS_OID, NHS_NUMBER)]], family=FAMILY, given=GIVEN, birth=BIRTH_HL7, gender="M")),
            "ITI-38": ("/SOAP/iti38", ACTION_38, iti38_body(nhs=NHS_NUMBER)),
            "ITI-39": ("/SOAP/iti39", ACTION_39,
                       iti39_body([(document.home, document.repository, document.unique_id)])),
        }
        answers: dict[str, httpx.Response] = {}
        message_ids = {transaction: f"urn:uuid:{uuid.uuid4()}" for transaction in requests}
        pid = writer_pid(runtime.audit)
        os.kill(pid, signal.SIGSTOP)
        try:
            for transaction, (path, action, body) in requests.items():
                data = envelope(action, body, message_id=message_ids[transaction])
                answers[transaction] = await client.post(path, content=data, headers={"content-type": SOAP_CT})
            await asyncio.sleep(0.6)  # past the last event's deadline while still stopped
        finally:
            os.kill(pid, signal.SIGCONT)
        assert runtime.auditor is not None
        assert await runtime.auditor.voids.flush(10)
        rows = {transaction: await runtime.audit.query(message_id=message_id)
                for transaction, message_id in message_ids.items()}

    xcpd, _ = soap_parts(answers["ITI-55"])
    assert xcpd.find(f".//{{{HL7}}}queryResponseCode").get("code") == "AE"
    listing, _ = soap_parts(answers["ITI-38"])
    assert listing.find(f".//{{{RIM}}}ExtrinsicObject") is None
    assert not told_success(answers["ITI-39"])
    for transaction, found in rows.items():
        outcomes = [row["outcome"] for row in found]
        assert "success" not in outcomes, transaction  # refused at the writer's COMMIT: past its deadline
        assert outcomes == [NOT_DISCLOSED], transaction  # and voided, since its fate was unknown when answered
