"""Audit retention at size on PostgreSQL: export a day and prune the oldest month of a large audit_event table.

    python bench/audit_retention.py [--rows 3000000] [--months 13] [--database-url postgresql://postgres@HOST/test]

Creates a database of its own (dropped at the end), migrates it, fills audit_event with ``--rows`` events spread
evenly over ``--months`` months (generate_series, server side), then prints: the time and peak memory of
``export_events`` over one day, the time of ``prune_events`` for the oldest month and its batches, the plan of one
prune batch, and the time of the same prune run again (nothing left to delete).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import sqlalchemy as sa

from xhuma.store.audit import SqlAuditStore, audit_event
from xhuma.store.retention import export_events, prune_events

FILL = """
INSERT INTO audit_event (occurred_at, transaction, outcome, patient_pseudonym, event_id, message_id, details)
SELECT $1::timestamptz + (n * $2::double precision) * interval '1 second',
       (ARRAY['ITI-55','ITI-38','ITI-39','PDS','SDS','GPC'])[1 + n % 6], 'success',
       md5(n::text), gen_random_uuid()::text, 'urn:uuid:' || gen_random_uuid()::text, '{"bench": true}'::json
FROM generate_series(0, $3::bigint - 1) AS n
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(rows: int, months: int, admin_url: str) -> None:
    name = f"xhuma_bench_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    store = SqlAuditStore(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        await store.migrate()
        end = datetime.now(UTC)
        start = end - timedelta(days=30 * months)
        step = (end - start).total_seconds() / rows
        connection = await asyncpg.connect(url)
        began = time.perf_counter()
        # The commit-deadline trigger (migration 0002) is for the gateway's events; a bulk fill of old events
        # without a deadline would only queue millions of deferred checks.
        await connection.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_commit_by")
        for first in range(0, rows, 500_000):
            count = min(500_000, rows - first)
            await connection.execute(FILL, start + timedelta(seconds=first * step), step, count)
        await connection.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_commit_by")
        await connection.execute("VACUUM ANALYZE audit_event")
        size = await connection.fetchval("SELECT pg_size_pretty(pg_total_relation_size('audit_event'))")
        print(f"filled {rows:,} events over {months} months in {time.perf_counter() - began:.1f} s ({size})")

        day = start + timedelta(days=100)
        rss_before = peak_rss_mib()
        began = time.perf_counter()
        exported = 0
        async for _line in export_events(store.engine, day, day + timedelta(days=1)):
            exported += 1
        print(f"export of one day: {exported:,} events in {time.perf_counter() - began:.2f} s, "
              f"peak RSS {rss_before:.0f} -> {peak_rss_mib():.0f} MiB")

        cutoff = start + timedelta(days=30)
        plan = await connection.fetch(
            "EXPLAIN SELECT id, event_id FROM audit_event WHERE occurred_at < $1 AND voids IS NULL "
            "ORDER BY occurred_at, id LIMIT 5000", cutoff)
        print("plan of one prune batch:")
        for line in plan:
            print("   ", line[0])
        began = time.perf_counter()
        result = await prune_events(store.engine, cutoff)
        elapsed = time.perf_counter() - began
        print(f"prune of the oldest month: {result.events:,} events in {result.batches} batches, {elapsed:.1f} s "
              f"({result.events / elapsed:,.0f} events/s, {elapsed / max(result.batches, 1) * 1000:.0f} ms/batch)")
        began = time.perf_counter()
        again = await prune_events(store.engine, cutoff)
        print(f"the same prune again: {again.events} events in {time.perf_counter() - began:.3f} s")
        async with store.engine.connect() as sql:
            left = (await sql.execute(sa.select(sa.func.count()).select_from(audit_event))).scalar_one()
        print(f"events left: {left:,}")
        await connection.close()
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--months", type=int, default=13)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.months, arguments.database_url))
