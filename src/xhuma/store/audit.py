"""Audit store: SQLAlchemy 2 async over PostgreSQL (asyncpg) or a SQLite file (aiosqlite).

The schema is owned by Alembic migrations in ``xhuma/store/migrations``; ``upgrade()`` applies them
(``xhuma db upgrade``, and automatically at start-up for SQLite). One database transaction per event.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from xhuma.errors import AuditUnavailable
from xhuma.ports import AuditEvent
from xhuma.store.tls import postgres_connect_args

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

metadata = sa.MetaData()

audit_event = sa.Table(
    "audit_event",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("transaction", sa.String(16), nullable=False, index=True),
    sa.Column("outcome", sa.String(16), nullable=False, index=True),
    sa.Column("error_code", sa.String(64)),
    sa.Column("reason", sa.String(256)),
    sa.Column("patient_pseudonym", sa.String(64), index=True),
    sa.Column("user_id", sa.String(256)),
    sa.Column("user_name", sa.String(256)),
    sa.Column("user_role", sa.String(128)),
    sa.Column("organization", sa.String(256)),
    sa.Column("organization_id", sa.String(256)),
    sa.Column("home_community_id", sa.String(256)),
    sa.Column("purpose_of_use", sa.String(64)),
    sa.Column("saml_verified", sa.Boolean()),
    sa.Column("client_cert_subject", sa.String(512)),
    sa.Column("client_address", sa.String(64)),
    sa.Column("message_id", sa.String(256)),
    sa.Column("request_id", sa.String(64)),
    sa.Column("trace_id", sa.String(64)),
    sa.Column("spine_trace_id", sa.String(64)),
    sa.Column("ssp_from", sa.String(32)),
    sa.Column("ssp_to", sa.String(32)),
    sa.Column("ssp_interaction_id", sa.String(128)),
    sa.Column("jwt_summary", sa.JSON()),
    sa.Column("document_unique_id", sa.String(128), index=True),
    sa.Column("duration_ms", sa.Float()),
    sa.Column("details", sa.JSON()),
)

EVENT_COLUMNS = tuple(field.name for field in dataclasses.fields(AuditEvent))


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (blocking; call from a thread inside an event loop)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)


class SqlAuditStore:
    """AuditSink and query API over one async engine."""

    def __init__(self, database_url: str, *, pool_size: int = 5) -> None:
        self.database_url = database_url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        engine_url = database_url
        if database_url.startswith("postgresql"):
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=5)
            # libpq-style sslmode=verify-full&sslrootcert=... become an SSL context for asyncpg
            engine_url, kwargs["connect_args"] = postgres_connect_args(database_url)
        self.engine: AsyncEngine = create_async_engine(engine_url, **kwargs)
        self.last_error: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    async def migrate(self) -> None:
        await asyncio.to_thread(upgrade, self.database_url)

    async def record(self, event: AuditEvent) -> None:
        row = {name: getattr(event, name) for name in EVENT_COLUMNS}
        for name in ("jwt_summary", "details"):
            if row[name] is not None:
                row[name] = dict(row[name])
        try:
            async with self.engine.begin() as connection:
                await connection.execute(audit_event.insert().values(**row))
        except (SQLAlchemyError, OSError) as error:
            self.last_error = type(error).__name__
            log.error("audit_write_failed", transaction=event.transaction, error=type(error).__name__)
            raise AuditUnavailable("the audit trail could not be written") from error
        self.last_error = None

    async def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        transaction: str | None = None,
        outcome: str | None = None,
        patient_pseudonym: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Sequence[dict[str, Any]]:
        statement = sa.select(audit_event).order_by(audit_event.c.id.desc()).limit(limit).offset(offset)
        if since is not None:
            statement = statement.where(audit_event.c.occurred_at >= since)
        if until is not None:
            statement = statement.where(audit_event.c.occurred_at < until)
        if transaction is not None:
            statement = statement.where(audit_event.c.transaction == transaction)
        if outcome is not None:
            statement = statement.where(audit_event.c.outcome == outcome)
        if patient_pseudonym is not None:
            statement = statement.where(audit_event.c.patient_pseudonym == patient_pseudonym)
        async with self.engine.connect() as connection:
            result = await connection.execute(statement)
            return [dict(row._mapping) for row in result]

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError) as error:
            self.last_error = type(error).__name__
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
