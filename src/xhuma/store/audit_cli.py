"""``xhuma audit export | prune``: the audit trail's retention (docs/operations.md, "Audit retention").

Both read ``XHUMA_DATABASE_URL`` (or the embedded SQLite file) and are themselves audited: an export is a
disclosure of the trail (``AUDIT-EXPORT``), a prune a deletion from it (``AUDIT-PRUNE``, with what was deleted).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from sqlalchemy.exc import SQLAlchemyError

from xhuma.audit import Auditor, audit_key
from xhuma.cli import EXIT_USAGE, app, fail, settings_or_exit
from xhuma.config import Settings
from xhuma.errors import AuditUnavailable
from xhuma.store.audit import SqlAuditStore
from xhuma.store.retention import (
    EXPORT_PAGE_ROWS,
    PRUNE_BATCH_ROWS,
    PruneResult,
    export_events,
    parse_duration,
    parse_moment,
    prune_events,
)

audit_app = typer.Typer(help="The audit trail's retention: export a time range, prune old events.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

EXPORT = "AUDIT-EXPORT"
PRUNE = "AUDIT-PRUNE"


def _moment(option: str, text: str) -> datetime:
    try:
        return parse_moment(text)
    except ValueError as error:
        raise fail(f"{option}: {error}", EXIT_USAGE) from None


async def _open(settings: Settings) -> SqlAuditStore:
    store = SqlAuditStore(settings.effective_database_url, write_timeout_seconds=settings.audit_write_timeout_seconds)
    if store.is_sqlite:
        await store.migrate()
    return store


async def _record(settings: Settings, store: SqlAuditStore, transaction: str, outcome: str,
                  details: dict[str, Any]) -> None:
    await Auditor(store, hmac_key=audit_key(settings)).record(transaction, outcome, details=details)


def _failed(what: str, error: BaseException) -> typer.Exit:
    first = str(error).splitlines()[0] if str(error) else ""
    return fail(f"{what}: {type(error).__name__}{f': {first}' if first else ''}")


@audit_app.command("export")
def export(
    since: Annotated[str, typer.Option("--since", help="first instant, ISO 8601 (UTC unless a zone is given)")],
    until: Annotated[str | None, typer.Option("--until", help="end of the range, excluded; default: now")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="JSON lines file (default: standard output)")] = None,
) -> None:
    """Write the audit events of a time range as JSON lines, oldest first, for the trust's archive."""
    start = _moment("--since", since)
    end = _moment("--until", until) if until is not None else datetime.now(UTC)
    if end <= start:
        raise fail("--until must be after --since", EXIT_USAGE)
    settings = settings_or_exit()
    # A file is written under a temporary name and renamed when complete: an archive never holds half an export.
    partial = out.with_name(out.name + ".partial") if out is not None else None

    async def run() -> int:
        store = await _open(settings)
        try:
            written = 0
            sink: BinaryIO = partial.open("wb") if partial is not None else sys.stdout.buffer
            try:
                async for line in export_events(store.engine, start, end, EXPORT_PAGE_ROWS):
                    sink.write(line)
                    written += 1
                sink.flush()
                if partial is not None:
                    os.fsync(sink.fileno())
            finally:
                if partial is not None:
                    sink.close()
            await _record(settings, store, EXPORT, "success",
                          {"since": start.isoformat(), "until": end.isoformat(), "events": written})
            return written
        finally:
            await store.close()

    try:
        written = asyncio.run(run())
    except (SQLAlchemyError, OSError) as error:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise _failed("audit export failed", error) from None
    except AuditUnavailable:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise fail("audit export not written: its own audit event could not be recorded") from None
    if partial is not None and out is not None:
        partial.replace(out)
    typer.echo(f"xhuma: exported {written} audit events from {start.isoformat()} to {end.isoformat()}"
               + (f" to {out}" if out is not None else ""), err=True)


@audit_app.command("prune")
def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="age of the events to delete, e.g. 400d, 56w")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000,
                                            help="events deleted per transaction")] = PRUNE_BATCH_ROWS,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete the audit events older than a duration, in bounded batches, oldest first; the prune is audited."""
    try:
        age = parse_duration(older_than)
    except ValueError as error:
        raise fail(f"--older-than: {error}", EXIT_USAGE) from None
    settings = settings_or_exit()
    cutoff = datetime.now(UTC) - age
    if not yes:
        typer.confirm(f"Delete every audit event that occurred before {cutoff.isoformat()}?", abort=True)

    async def run() -> PruneResult:
        store = await _open(settings)
        result = PruneResult(cutoff)
        try:
            try:
                result = await prune_events(store.engine, cutoff, batch_size)
            except Exception:
                # What was deleted before the failure stays deleted (batches commit one by one): say so in the trail.
                await _record(settings, store, PRUNE, "failure", {"older_than": older_than,
                                                                  "cutoff": cutoff.isoformat()})
                raise
            await _record(settings, store, PRUNE, "success", {
                "older_than": older_than, "cutoff": cutoff.isoformat(), "events": result.events,
                "voids": result.voids, "voids_kept": result.voids_kept, "batches": result.batches})
            return result
        finally:
            await store.close()

    try:
        result = asyncio.run(run())
    except (SQLAlchemyError, OSError) as error:
        raise _failed("audit prune stopped (the batches before the failure are deleted; run it again)",
                      error) from None
    except AuditUnavailable:
        raise fail("the audit events were pruned, but the prune's own audit event could not be written: record it by"
                   " hand") from None
    kept = f"; {result.voids_kept} older voids kept with their younger originals" if result.voids_kept else ""
    typer.echo(f"xhuma: pruned {result.events} audit events that occurred before {cutoff.isoformat()} "
               f"in {result.batches} batches{kept}", err=True)
