"""The audit store contract on both databases: SQLite (embedded default) and real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from xhuma.errors import AuditUnavailable
from xhuma.ports import AuditEvent
from xhuma.store.audit import SqlAuditStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, sqlite_database_url: str, pg_database_url: str
) -> AsyncIterator[SqlAuditStore]:
    url = sqlite_database_url if request.param == "sqlite" else pg_database_url
    audit = SqlAuditStore(url)
    await audit.migrate()
    async with audit.engine.begin() as connection:  # the PostgreSQL database lives for the session
        await connection.execute(sa.text("DELETE FROM audit_event"))
    yield audit
    await audit.close()


def _event(transaction: str, outcome: str, at: datetime, **extra: object) -> AuditEvent:
    return AuditEvent(transaction=transaction, outcome=outcome, occurred_at=at, **extra)  # type: ignore[arg-type]


async def test_migration_creates_audit_event_table_at_head(store: SqlAuditStore) -> None:
    async with store.engine.connect() as connection:
        version = (await connection.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one()
        columns = await connection.run_sync(lambda c: [col["name"] for col in sa.inspect(c).get_columns("audit_event")])
    assert version == "0003"
    assert {"occurred_at", "transaction", "outcome", "patient_pseudonym", "document_unique_id"} <= set(columns)


async def test_migration_is_idempotent(store: SqlAuditStore) -> None:
    await store.migrate()
    assert await store.ping()


async def test_recorded_event_reads_back_with_every_field(store: SqlAuditStore) -> None:
    at = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    await store.record(
        _event(
            "ITI-39", "success", at,
            patient_pseudonym="ab" * 32, user_id="u1", saml_verified=True, message_id="urn:uuid:m1",
            jwt_summary={"requested_scope": "patient/*.read"}, document_unique_id="1.2.3.4", duration_ms=12.5,
            details={"documents": 1},
        )
    )
    (row,) = await store.query()
    assert row["transaction"] == "ITI-39"
    assert row["patient_pseudonym"] == "ab" * 32
    assert row["saml_verified"] is True
    assert row["jwt_summary"] == {"requested_scope": "patient/*.read"}
    assert row["details"] == {"documents": 1}
    assert row["occurred_at"].replace(tzinfo=UTC) == at


async def test_query_filters_by_transaction_outcome_time_and_pseudonym(store: SqlAuditStore) -> None:
    base = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    await store.record(_event("ITI-55", "success", base, patient_pseudonym="p1"))
    await store.record(_event("ITI-55", "no-match", base + timedelta(minutes=1), patient_pseudonym="p2"))
    await store.record(_event("ITI-38", "success", base + timedelta(minutes=2), patient_pseudonym="p1"))
    assert len(await store.query(transaction="ITI-55")) == 2
    assert [r["outcome"] for r in await store.query(outcome="no-match")] == ["no-match"]
    assert len(await store.query(patient_pseudonym="p1")) == 2
    assert len(await store.query(since=base + timedelta(seconds=30))) == 2
    assert len(await store.query(until=base + timedelta(seconds=30))) == 1
    page = await store.query(limit=2)
    assert [r["transaction"] for r in page] == ["ITI-38", "ITI-55"]  # newest first
    assert len(await store.query(limit=2, offset=2)) == 1


async def test_unreachable_database_raises_audit_unavailable() -> None:
    store = SqlAuditStore("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    with pytest.raises(AuditUnavailable):
        await store.record(_event("ITI-39", "success", datetime.now(UTC)))
    assert await store.ping() is False
    assert store.last_error
    await store.close()


async def test_lean_write_path_stores_exactly_what_sqlalchemy_would(store: SqlAuditStore) -> None:
    """Events skip SQLAlchemy's execution layer on the way in (one prepared INSERT), but must be stored in the
    representation SQLAlchemy itself writes for those column types, or reads and filters would drift."""
    from xhuma.store.audit import EVENT_COLUMNS, audit_event

    event = _event(
        "ITI-39", "success", datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=UTC),
        patient_pseudonym="cd" * 32, saml_verified=False, jwt_summary={"scope": "patient/*.read", "n": 1},
        duration_ms=0.5, details={"documents": 2, "query": "FindDocuments"}, message_id="urn:uuid:m2",
    )
    await store.record(event)
    async with store.engine.begin() as connection:
        row = {name: getattr(event, name) for name in EVENT_COLUMNS}
        await connection.execute(audit_event.insert(), {**row, "message_id": "urn:uuid:via-sqlalchemy"})
        names = ", ".join(f'"{name}"' for name in EVENT_COLUMNS if name != "message_id")
        stored = (await connection.execute(sa.text(f"SELECT {names} FROM audit_event ORDER BY id"))).all()
    assert len(stored) == 2
    assert stored[0] == stored[1]
