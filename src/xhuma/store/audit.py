"""Audit store: PostgreSQL (asyncpg) or a SQLite file, schema and queries through SQLAlchemy 2.

The schema is owned by Alembic migrations in ``xhuma/store/migrations``; ``upgrade()`` applies them
(``xhuma db upgrade``, and automatically at start-up for SQLite). One database transaction per event. Events
are written on a lean path (one prepared INSERT per event, compiled once by SQLAlchemy); reads, counts and
probes go through the SQLAlchemy async engine.

Each write is bounded by ``XHUMA_AUDIT_WRITE_TIMEOUT_SECONDS``, and the event carries the same deadline
(``commit_by``) into the database, which refuses to commit it any later: a database frozen past the deadline
cannot commit, after its thaw, an event its caller was told had failed (docs/decisions.md, "The audit trail is
exact"). A write that was sent but not acknowledged in time raises ``AuditOutcomeUnknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import operator
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from xhuma.errors import AuditOutcomeUnknown, AuditUnavailable
from xhuma.ports import AuditEvent
from xhuma.store.sqlite_writer import EventRefused, SqliteWriter
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
    sa.Column("event_id", sa.String(36)),
    sa.Column("commit_by", sa.DateTime(timezone=True)),  # refused at COMMIT after this (migration 0002)
    sa.Column("voids", sa.String(36)),
    sa.Index("ix_audit_event_voids", "voids", postgresql_where=sa.text("voids IS NOT NULL"),
             sqlite_where=sa.text("voids IS NOT NULL")),
)

EVENT_COLUMNS = tuple(field.name for field in dataclasses.fields(AuditEvent))
# request_id and trace_id: one exchange (xhuma.web.exchanges), searched within a time window (no index of their own)
_EXTRA_FILTERS = frozenset({"document_unique_id", "message_id", "error_code", "user_id", "organization_id",
                            "client_cert_subject", "event_id", "voids", "request_id", "trace_id"})
COMMIT_BY = "commit_by"  # bound on every INSERT besides the event's own fields


# Key of the PostgreSQL advisory lock held while migrating (taken in migrations/env.py): concurrent
# `xhuma db upgrade` runs (a Helm hook retried, two replicas' jobs) queue up instead of racing to CREATE TABLE.
MIGRATION_LOCK_KEY = 0x78_68_75_6D_61_64_62  # "xhumadb"


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (blocking; call from a thread inside an event loop). Safe to run concurrently:
    PostgreSQL migrates under an advisory lock, a SQLite file under a lock file next to it; whoever comes second
    finds the schema at the head revision and has nothing to do."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    with _sqlite_migration_lock(database_url):
        command.upgrade(config, revision)


@contextlib.contextmanager
def _sqlite_migration_lock(database_url: str) -> Iterator[None]:
    """An exclusive lock on ``<file>.migrate.lock`` for a SQLite file (workers starting together); no-op otherwise."""
    url = sa.engine.make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        yield
        return
    lock_path = Path(url.database + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed, or by the kernel if we die
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


_SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The engine's connections (queries, probes) share the file with the writer process (xhuma.store.sqlite_writer):
    # WAL, so readers never block the writer, and a wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


HASH_MARK = "…sha256:"
HASH_DIGITS = 16


def bounded(value: str, limit: int) -> str:
    """``value`` fitted to a column of ``limit`` characters. A longer value keeps its beginning and ends with
    ``…sha256:`` and the first hex digits of the whole value's SHA-256, so that the cut value still tells
    different values apart and can be matched against the original (issue 15: no request fails because of its
    own identifiers' length)."""
    if len(value) <= limit:
        return value
    tail = f"{HASH_MARK}{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:HASH_DIGITS]}"
    return (value[:max(limit - len(tail), 0)] + tail)[:limit]


# Every length-limited text column, by name: the one place caller-controlled values are fitted to the schema.
COLUMN_LIMITS = {column.name: column.type.length for column in audit_event.columns
                 if isinstance(column.type, sa.String) and column.type.length}


class _EventRows:
    """An event as the positional parameters of one prepared INSERT, in the dialect's own representation.

    The statement is SQLAlchemy's ``INSERT`` compiled once for the dialect, and the values pass through
    SQLAlchemy's bind processors for the column types (so a row written here reads back through the engine
    exactly as one written by ``audit_event.insert()``); only the per-event compile and execution layers are
    skipped on the write path, which every disclosure waits for.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = audit_event.insert().inline().compile(
            dialect=dialect, column_keys=[*EVENT_COLUMNS, COMMIT_BY]
        )
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted([*EVENT_COLUMNS, COMMIT_BY]):
            raise RuntimeError("the audit INSERT does not bind every event field")
        self.sql = str(compiled)
        self._commit_by_index = order.index(COMMIT_BY)
        self._values = operator.attrgetter(*(name for name in order if name != COMMIT_BY))
        # Text columns with a length: caller-controlled values (MessageID, SAML NameID, ...) are cut to fit.
        self._limits = [(index, COLUMN_LIMITS[name]) for index, name in enumerate(order) if name in COLUMN_LIMITS]
        # Only the columns whose type converts a value (datetimes, booleans, JSON) are touched one by one.
        self._conversions: list[tuple[int, bool, Any]] = []
        for index, name in enumerate(order):
            processor = audit_event.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if isinstance(audit_event.c[name].type, sa.DateTime):
                processor = _faster_datetime_processor(processor)
            mapping = name in ("jwt_summary", "details")
            if processor is not None or mapping:
                self._conversions.append((index, mapping, processor))

    def params(self, event: AuditEvent, commit_by: datetime | None = None) -> tuple[Any, ...]:
        values = list(self._values(event))
        values.insert(self._commit_by_index, commit_by)
        for index, limit in self._limits:
            value = values[index]
            if value is not None and len(value) > limit:
                values[index] = bounded(value, limit)
        for index, mapping, processor in self._conversions:
            value = values[index]
            if value is not None:
                if mapping:
                    value = dict(value)
                values[index] = processor(value) if processor is not None else value
        return tuple(values)


_DATETIME_SAMPLES = (datetime(2026, 12, 7, 3, 4, 5, 60_007, tzinfo=UTC), datetime(987, 1, 2, 23, 59, 0, tzinfo=UTC),
                     datetime(2027, 2, 3, 4, 5, 6))


def _faster_datetime_processor(processor: Any) -> Any:
    """SQLite's DATETIME bind processor (text ``YYYY-MM-DD HH:MM:SS.ffffff``) as the C ``isoformat`` cut before any
    UTC offset, when it renders the samples exactly as SQLAlchemy's does; otherwise SQLAlchemy's own. Every event
    binds two datetimes (occurred_at, commit_by)."""
    if processor is None:
        return None

    def fast(value: datetime) -> str:
        return value.isoformat(" ", "microseconds")[:26]

    if all(fast(sample) == processor(sample) for sample in _DATETIME_SAMPLES):
        return fast
    return processor


def _refused_by_server(error: BaseException) -> bool:
    """The database answered that the statement failed: its transaction is rolled back, nothing commits."""
    if isinstance(error, EventRefused):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(error, asyncpg.PostgresError)


def _sqlite_path(database_url: str) -> str:
    url = sa.make_url(database_url)
    return url.database or ":memory:"


class SqlAuditStore:
    """AuditSink and query API over one async engine.

    Events are written on a lean path: over PostgreSQL one prepared INSERT per event on an asyncpg pool (an
    INSERT outside an explicit transaction is its own transaction; PostgreSQL flushes the WAL of concurrent
    commits together, so every event stays its own durable transaction); over SQLite one writer process
    (``xhuma.store.sqlite_writer``). Queries, counts and probes go through the SQLAlchemy engine.
    """

    def __init__(self, database_url: str, *, pool_size: int = 5, write_timeout_seconds: float = 5.0) -> None:
        self.database_url = database_url
        self.write_timeout_seconds = write_timeout_seconds
        kwargs: dict[str, Any] = {}
        engine_url = database_url
        self._postgres = database_url.startswith("postgresql")
        self._pool_size = pool_size
        if self._postgres:
            kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, pool_timeout=5)
            # libpq-style sslmode=verify-full&sslrootcert=... become an SSL context for asyncpg
            engine_url, kwargs["connect_args"] = postgres_connect_args(database_url)
        else:
            # SQLite has one writer at a time: one pooled connection for queries and probes.
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=30)
        self._engine_url = engine_url
        self._connect_args: dict[str, Any] = kwargs.get("connect_args", {})
        self.engine: AsyncEngine = create_async_engine(engine_url, **kwargs)
        self._rows = _EventRows(self.engine.dialect)
        self._sqlite_writer: SqliteWriter | None = None
        self._pg_pool: Any = None
        self._pg_pool_lock = asyncio.Lock()
        if not self._postgres:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._sqlite_writer = SqliteWriter(_sqlite_path(database_url), self._rows.sql,
                                               timeout_seconds=write_timeout_seconds)
        self.last_error: str | None = None
        # Set when a write failed and cleared by the next successful write or write probe: readiness must show
        # a store that answers SELECT 1 but cannot commit events (no disclosure without audit).
        self.write_failing = False

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    async def migrate(self) -> None:
        await asyncio.to_thread(upgrade, self.database_url)

    async def _pool(self) -> Any:
        if self._pg_pool is None:
            async with self._pg_pool_lock:
                if self._pg_pool is None:
                    import asyncpg

                    url = sa.make_url(self._engine_url).set(drivername="postgresql")
                    self._pg_pool = await asyncpg.create_pool(
                        url.render_as_string(hide_password=False), min_size=1, max_size=self._pool_size * 2,
                        timeout=5, command_timeout=10, **self._connect_args,
                    )
        return self._pg_pool

    async def record(self, event: AuditEvent) -> None:
        """Commit ``event`` within the write timeout. ``AuditUnavailable`` when it is not committed;
        ``AuditOutcomeUnknown`` when it was sent and may still commit, but only until its ``commit_by``, which is
        when this call gives up. (An event voiding another would be true whenever it committed; its deadline keeps
        the retries of a void from committing it twice.)"""
        timeout = self.write_timeout_seconds
        deadline = time.time() + timeout
        params = self._rows.params(event, datetime.fromtimestamp(deadline, UTC))
        sent = False
        try:
            if self._sqlite_writer is not None:
                # The writer bounds its own wait by the same timeout (one timer for all events in flight).
                sent = True
                await self._sqlite_writer.write(params, deadline)
            else:
                async with asyncio.timeout(timeout):
                    pool = await self._pool()
                    connection = await pool.acquire()
                    try:
                        sent = True
                        await connection.execute(self._rows.sql, *params)
                    except BaseException as error:
                        if not _refused_by_server(error):
                            # Left mid-statement (timed out, connection lost): never reuse it, and do not
                            # wait for the server to acknowledge a cancellation.
                            connection.terminate()
                        raise
                    finally:
                        await pool.release(connection)
        except Exception as error:
            self.last_error = type(error).__name__
            self.write_failing = True
            log.error("audit_write_failed", transaction=event.transaction, error=type(error).__name__)
            if sent and not _refused_by_server(error):
                raise AuditOutcomeUnknown("the audit write was not acknowledged in time") from error
            raise AuditUnavailable("the audit trail could not be written") from error
        self.last_error = None
        self.write_failing = False

    @staticmethod
    def _filtered(statement: Any, filters: Mapping[str, Any]) -> Any:
        column = audit_event.c
        if filters.get("since") is not None:
            statement = statement.where(column.occurred_at >= filters["since"])
        if filters.get("until") is not None:
            statement = statement.where(column.occurred_at < filters["until"])
        for name in ("transaction", "outcome"):
            value = filters.get(name)
            if value is None:
                continue
            if isinstance(value, str):
                statement = statement.where(column[name] == value)
            else:
                statement = statement.where(column[name].in_(list(value)))
        for name in ("patient_pseudonym", *sorted(_EXTRA_FILTERS)):
            value = filters.get(name)
            if value is not None:
                # A value longer than its column was stored cut (``bounded``): search for it the same way.
                if isinstance(value, str) and name in COLUMN_LIMITS:
                    value = bounded(value, COLUMN_LIMITS[name])
                statement = statement.where(column[name] == value)
        return statement

    async def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        transaction: str | Sequence[str] | None = None,
        outcome: str | Sequence[str] | None = None,
        patient_pseudonym: str | None = None,
        limit: int = 100,
        offset: int = 0,
        **filters: Any,
    ) -> Sequence[dict[str, Any]]:
        """Events newest first. Besides the keywords, exact-match filters on document_unique_id, message_id,
        error_code, user_id, organization_id and client_cert_subject."""
        unknown = set(filters) - _EXTRA_FILTERS
        if unknown:
            raise TypeError(f"unknown audit filter: {sorted(unknown)[0]}")
        conditions = dict(filters, since=since, until=until, transaction=transaction, outcome=outcome,
                          patient_pseudonym=patient_pseudonym)
        statement = sa.select(audit_event).order_by(audit_event.c.id.desc()).limit(limit).offset(offset)
        statement = self._filtered(statement, conditions)
        async with self.engine.connect() as connection:
            result = await connection.execute(statement)
            return [dict(row._mapping) for row in result]

    async def count(self, **filters: Any) -> int:
        """How many events match the same filters as ``query`` (for paging)."""
        unknown = set(filters) - _EXTRA_FILTERS - {"since", "until", "transaction", "outcome", "patient_pseudonym"}
        if unknown:
            raise TypeError(f"unknown audit filter: {sorted(unknown)[0]}")
        statement = self._filtered(sa.select(sa.func.count()).select_from(audit_event), filters)
        async with self.engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())

    async def ping(self) -> bool:
        """Reachable, and (after a failed write) writable again: a probe insert that is rolled back."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
                if self.write_failing:
                    try:
                        await connection.execute(audit_event.insert().values(
                            occurred_at=datetime.now(UTC), transaction="PROBE", outcome="probe"))
                    finally:
                        await connection.rollback()
        except (SQLAlchemyError, OSError) as error:
            self.last_error = type(error).__name__
            return False
        self.write_failing = False
        return True

    async def close(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        if self._pg_pool is not None:
            await self._pg_pool.close()
        await self.engine.dispose()
