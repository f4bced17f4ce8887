"""Audit retention (issue 16): ``xhuma audit export`` writes a time range as JSON lines, page by page;
``xhuma audit prune`` deletes old events in bounded batches and is itself audited; voids and their originals are
never left so that the trail claims a disclosure that did not happen. On SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from xhuma.cli import EXIT_USAGE, app
from xhuma.store.audit import SqlAuditStore, audit_event
from xhuma.store.retention import export_events, parse_duration, parse_moment, prune_events

runner = CliRunner()
NOW = datetime.now(UTC).replace(microsecond=0)


def row(at: datetime, **values: Any) -> dict[str, Any]:
    return {"occurred_at": at, "transaction": "ITI-39", "outcome": "success", "event_id": str(uuid.uuid4()),
            "voids": None, **values}


async def insert(store: SqlAuditStore, rows: list[dict[str, Any]]) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(audit_event.insert(), rows)


async def remaining(store: SqlAuditStore) -> list[dict[str, Any]]:
    async with store.engine.connect() as connection:
        result = await connection.execute(sa.select(audit_event).order_by(audit_event.c.id))
        return [{str(k): v for k, v in r._mapping.items()} for r in result]


def cli_env(store: SqlAuditStore, tmp_path: Path) -> dict[str, str]:
    return {"XHUMA_DATABASE_URL": store.database_url, "XHUMA_WORKING_DIR": str(tmp_path),
            "XHUMA_AUDIT_HMAC_KEY": "k" * 40}


async def test_export_pages_by_time_and_id_and_writes_each_event_of_the_range_once_in_order(
    audit_store: SqlAuditStore,
) -> None:
    base = NOW - timedelta(days=10)
    # Several events share an instant, so that pages end in the middle of one (the keyset's id part).
    rows = [row(base + timedelta(minutes=i // 3), message_id=f"m{i}") for i in range(60)]
    await insert(audit_store, rows)
    since, until = base + timedelta(minutes=2), base + timedelta(minutes=15)
    lines = [json.loads(line) async for line in export_events(audit_store.engine, since, until, page_rows=4)]
    expected = [r["message_id"] for r in rows if since <= r["occurred_at"] < until]
    assert [line["message_id"] for line in lines] == expected and len(expected) == 39
    assert all(datetime.fromisoformat(line["occurred_at"]).tzinfo is not None for line in lines)
    assert {"event_id", "voids", "details", "transaction"} <= set(lines[0])


async def test_prune_deletes_only_events_older_than_the_cutoff_in_batches(audit_store: SqlAuditStore) -> None:
    cutoff = NOW - timedelta(days=400)
    old = [row(cutoff - timedelta(hours=i + 1)) for i in range(23)]
    young = [row(cutoff + timedelta(hours=i)) for i in range(5)]
    await insert(audit_store, old + young)
    result = await prune_events(audit_store.engine, cutoff, batch_rows=5)
    assert result.events == 23 and result.batches == 5 and result.voids == 0
    assert sorted(r["event_id"] for r in await remaining(audit_store)) == sorted(r["event_id"] for r in young)


async def test_a_void_is_deleted_with_its_original_and_kept_while_its_original_is_kept(
    audit_store: SqlAuditStore,
) -> None:
    cutoff = NOW - timedelta(days=30)
    pruned_original = row(cutoff - timedelta(days=1))
    its_void = row(cutoff + timedelta(hours=1), outcome="not-disclosed", voids=pruned_original["event_id"])
    kept_original = row(cutoff + timedelta(minutes=5))  # a clock stepped back: the void looks older
    old_void_of_kept = row(cutoff - timedelta(minutes=5), outcome="not-disclosed", voids=kept_original["event_id"])
    old_orphan_void = row(cutoff - timedelta(days=2), outcome="not-disclosed", voids=str(uuid.uuid4()))
    young_orphan_void = row(cutoff + timedelta(days=2), outcome="not-disclosed", voids=str(uuid.uuid4()))
    await insert(audit_store, [pruned_original, its_void, kept_original, old_void_of_kept, old_orphan_void,
                               young_orphan_void])
    result = await prune_events(audit_store.engine, cutoff, batch_rows=2)
    left = {r["event_id"] for r in await remaining(audit_store)}
    assert left == {kept_original["event_id"], old_void_of_kept["event_id"], young_orphan_void["event_id"]}
    assert (result.events, result.voids, result.voids_kept) == (3, 2, 1)


def test_cli_export_writes_a_json_lines_file_and_audits_the_export(audit_store: SqlAuditStore,
                                                                    tmp_path: Path) -> None:
    asyncio.run(_insert_sync(audit_store, [row(NOW - timedelta(days=3, minutes=i)) for i in range(7)]))
    out = tmp_path / "archive" / "2026-11.jsonl"
    out.parent.mkdir()
    since = (NOW - timedelta(days=4)).isoformat()
    until = (NOW - timedelta(days=2)).isoformat()
    result = runner.invoke(app, ["audit", "export", "--since", since, "--until", until, "--out", str(out)],
                           env=cli_env(audit_store, tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("xhuma: exported 7 audit events from ")
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 7
    assert not list(out.parent.glob("*.partial"))
    exports = [r for r in asyncio.run(_remaining_sync(audit_store)) if r["transaction"] == "AUDIT-EXPORT"]
    assert len(exports) == 1 and exports[0]["details"]["events"] == 7


def test_cli_prune_reports_and_audits_what_it_deleted(audit_store: SqlAuditStore, tmp_path: Path) -> None:
    asyncio.run(_insert_sync(audit_store, [row(NOW - timedelta(days=500 + i)) for i in range(12)]
                             + [row(NOW - timedelta(days=10))]))
    result = runner.invoke(app, ["audit", "prune", "--older-than", "400d", "--batch-size", "5", "--yes"],
                           env=cli_env(audit_store, tmp_path))
    assert result.exit_code == 0, result.output
    assert "xhuma: pruned 12 audit events that occurred before " in result.stderr
    assert "in 3 batches" in result.stderr
    rows = asyncio.run(_remaining_sync(audit_store))
    prunes = [r for r in rows if r["transaction"] == "AUDIT-PRUNE"]
    assert len(rows) == 2 and len(prunes) == 1
    assert prunes[0]["outcome"] == "success" and prunes[0]["details"]["events"] == 12
    assert prunes[0]["details"]["older_than"] == "400d"


@pytest.mark.parametrize(("args", "message"), [
    (["prune", "--older-than", "3mo", "--yes"], "--older-than: not a duration"),
    (["export", "--since", "last tuesday"], "--since: not an ISO 8601"),
    (["export", "--since", "2026-02-01", "--until", "2026-01-01"], "--until must be after --since"),
])
def test_cli_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["audit", *args], env={"XHUMA_WORKING_DIR": str(tmp_path)})
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_durations_and_moments() -> None:
    assert parse_duration("400d") == timedelta(days=400) and parse_duration("13w") == timedelta(weeks=13)
    assert parse_moment("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_moment("2026-01-01T01:00:00+01:00") == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.postgres
async def test_postgresql_table_is_vacuumed_and_analyzed_by_a_fixed_row_count(pg_database_url: str) -> None:
    store = SqlAuditStore(pg_database_url)
    try:
        await store.migrate()
        async with store.engine.connect() as connection:
            options = (await connection.execute(sa.text(
                "SELECT reloptions FROM pg_class WHERE relname = 'audit_event'"))).scalar_one()
    finally:
        await store.close()
    assert set(options) >= {"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=50000",
                            "autovacuum_analyze_scale_factor=0", "autovacuum_analyze_threshold=50000"}


async def _insert_sync(store: SqlAuditStore, rows: list[dict[str, Any]]) -> None:
    # The CLI runs its own event loop: these tests prepare and read the table in loops of their own, on an engine
    # of their own (an async engine's connections belong to the loop that made them).
    engine = SqlAuditStore(store.database_url)
    try:
        await insert(engine, rows)
    finally:
        await engine.close()


async def _remaining_sync(store: SqlAuditStore) -> list[dict[str, Any]]:
    engine = SqlAuditStore(store.database_url)
    try:
        return await remaining(engine)
    finally:
        await engine.close()
