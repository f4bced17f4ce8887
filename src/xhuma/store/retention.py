"""Audit retention: export a time range as JSON lines, prune events older than a cutoff (docs/operations.md,
"Audit retention").

Both walk the table in the order of the ``occurred_at`` index (``ix_audit_event_occurred_at``), a page or a batch
at a time, so that memory and each statement stay bounded however large the table is:

* export pages by keyset, ``(occurred_at, id)`` after the last row written, never by OFFSET (which re-reads
  every skipped row);
* prune deletes in batches of primary keys picked from the front of the index, each batch its own transaction,
  so that a prune holds no long lock, its progress survives an interruption, and the audit writers are never
  kept waiting for more than one batch.

Voids (``voids`` = the ``event_id`` of a disclosure event, migration 0002) never outlive their meaning the wrong
way round: a void is deleted in the same transaction as its original, and a void older than the cutoff is kept
for as long as its original is kept. A void left without its original (the original's write never committed, which
is why it was voided, or it was pruned) is deleted once it is older than the cutoff.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from xhuma.store.audit import audit_event

EXPORT_PAGE_ROWS = 1000
PRUNE_BATCH_ROWS = 5000
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``400d``, ``13w``, ``36h``, ``90m``, ``30s``. Months and years are refused: their length is ambiguous."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (a number and one of s, m, h, d, w, e.g. 400d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}") from None
    # In UTC, as the events are stored (SQLite keeps the digits of a date-time, not its zone).
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("occurred_at", "commit_by"):
        if row.get(name) is not None:
            row[name] = _utc(row[name]).isoformat()
    return row


async def export_events(engine: AsyncEngine, since: datetime, until: datetime,
                        page_rows: int = EXPORT_PAGE_ROWS) -> AsyncIterator[bytes]:
    """Each event with ``since <= occurred_at < until`` as one JSON line, oldest first; one page in memory."""
    column = audit_event.c
    after: tuple[datetime, int] | None = None
    while True:
        statement = (sa.select(audit_event)
                     .where(column.occurred_at >= since, column.occurred_at < until)
                     .order_by(column.occurred_at, column.id).limit(page_rows))
        if after is not None:
            # The plain bound lets the occurred_at index start at the last row; the row comparison then only
            # skips the rows of that same instant already written.
            statement = statement.where(column.occurred_at >= after[0],
                                        sa.tuple_(column.occurred_at, column.id) > sa.tuple_(*after))
        async with engine.connect() as connection:
            # str keys: SQLAlchemy's are quoted_name, a str subclass orjson refuses as a key
            rows = [{str(name): value for name, value in row._mapping.items()}
                    for row in await connection.execute(statement)]
        if rows:
            after = (rows[-1]["occurred_at"], rows[-1]["id"])  # before the rows are turned into JSON
        for row in rows:
            yield orjson.dumps(_jsonable(row)) + b"\n"
        if len(rows) < page_rows:
            return


@dataclass(slots=True)
class PruneResult:
    cutoff: datetime
    events: int = 0  # events deleted, voids included
    voids: int = 0  # of which voids
    batches: int = 0
    voids_kept: int = 0  # voids older than the cutoff kept because their original is younger


async def prune_events(engine: AsyncEngine, cutoff: datetime, batch_rows: int = PRUNE_BATCH_ROWS) -> PruneResult:
    """Delete the events that occurred before ``cutoff``, ``batch_rows`` at a time, oldest first."""
    column = audit_event.c
    result = PruneResult(cutoff)
    while True:
        async with engine.begin() as connection:
            # Originals (not voids) from the front of the occurred_at index; their voids go with them.
            picked = (await connection.execute(
                sa.select(column.id, column.event_id)
                .where(column.occurred_at < cutoff, column.voids.is_(None))
                .order_by(column.occurred_at, column.id).limit(batch_rows)
            )).all()
            if not picked:
                break
            await connection.execute(sa.delete(audit_event).where(column.id.in_([row.id for row in picked])))
            event_ids = [row.event_id for row in picked if row.event_id]
            voids = 0
            if event_ids:  # the partial index ix_audit_event_voids finds them
                voids = (await connection.execute(
                    sa.delete(audit_event).where(column.voids.in_(event_ids)))).rowcount or 0
        result.batches += 1
        result.events += len(picked) + voids
        result.voids += voids
    await _prune_old_voids(engine, cutoff, batch_rows, result)
    return result


async def _prune_old_voids(engine: AsyncEngine, cutoff: datetime, batch_rows: int, result: PruneResult) -> None:
    """Voids older than the cutoff whose original is gone. Voids are rare (a write that timed out); the lookup of
    their originals is one statement per batch of voids, whatever the size of the table."""
    column = audit_event.c
    after = 0
    while True:
        async with engine.begin() as connection:
            old = (await connection.execute(
                sa.select(column.id, column.voids)
                .where(column.voids.is_not(None), column.occurred_at < cutoff, column.id > after)
                .order_by(column.id).limit(batch_rows)
            )).all()
            if not old:
                return
            after = old[-1].id
            originals = {row.event_id for row in await connection.execute(
                sa.select(column.event_id).where(column.event_id.in_({row.voids for row in old}))
            )}
            orphans = [row.id for row in old if row.voids not in originals]
            if orphans:
                await connection.execute(sa.delete(audit_event).where(column.id.in_(orphans)))
        result.batches += 1
        result.events += len(orphans)
        result.voids += len(orphans)
        result.voids_kept += len(old) - len(orphans)
