"""Migrations are safe to run concurrently (issue 17): two `xhuma db upgrade` at once on a fresh PostgreSQL
database both succeed (advisory lock); `xhuma serve --workers 2` on a fresh working directory migrates its SQLite
audit file once before the workers start and never fails with "table already exists"; its workers answer a full
exchange whichever of them gets each request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import PG_ADMIN_URL, _pg_admin
from tests.support.exchange import full_exchange
from tests.support.servers import free_port

UPGRADE_ROUNDS = 6  # without the advisory lock about 1 round in 8 failed here (duplicate key in pg_type)
SERVE_ROUNDS = 2
CACHE_KEYS = "k1:" + "A" * 43 + "="


def clean_env(**settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("XHUMA_")}
    env.update(settings)
    return env


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database of its own (xhuma_migrate_<random>), dropped afterwards."""
    name = f"xhuma_migrate_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def schema_revision(database_url: str) -> tuple[str, int]:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        revision = await connection.fetchval("SELECT version_num FROM alembic_version")
        events = await connection.fetchval("SELECT count(*) FROM audit_event")
    finally:
        await connection.close()
    return revision, events


@pytest.mark.parametrize("round_number", range(UPGRADE_ROUNDS))
def test_two_db_upgrades_at_once_on_a_fresh_postgresql_database_both_succeed(
    fresh_database: str, tmp_path: Path, round_number: int
) -> None:
    env = clean_env(XHUMA_DATABASE_URL=fresh_database, XHUMA_WORKING_DIR=str(tmp_path))
    processes = [subprocess.Popen([sys.executable, "-m", "xhuma", "db", "upgrade"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(process.wait(timeout=120), *process.communicate()) for process in processes]
    for returncode, stdout, stderr in results:
        assert returncode == 0, stderr[-2000:]
        assert "latest revision" in stdout
    assert asyncio.run(schema_revision(fresh_database)) == ("0003", 0)


def ready(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"not ready (exit status {process.poll()})")
        time.sleep(0.1)


async def exchanges(port: int, count: int) -> set[bytes]:
    documents = set()
    for _ in range(count):
        # A new connection per exchange, so that the kernel hands the requests to either worker.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            documents.add((await full_exchange(client)).ccd)
    return documents


@pytest.mark.parametrize("round_number", range(SERVE_ROUNDS))
def test_serve_with_two_workers_on_a_fresh_working_directory_starts_and_every_retrieve_works(
    tmp_path: Path, redis_url: str, redis_namespace: str, round_number: int
) -> None:
    port = free_port()
    env = clean_env(XHUMA_WORKING_DIR=str(tmp_path), XHUMA_REDIS_URL=redis_url, XHUMA_REDIS_NAMESPACE=redis_namespace,
                    XHUMA_CACHE_KEYS=CACHE_KEYS, XHUMA_AUDIT_HMAC_KEY="h" * 40, XHUMA_LOG_LEVEL="WARNING")
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "xhuma", "serve", "--workers", "2", "--port", str(port)],
                                   env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            ready(port, process, time.monotonic() + 60)
            documents = asyncio.run(exchanges(port, 4))
        finally:
            process.terminate()
            process.wait(timeout=30)
    output = log_path.read_text(errors="replace")
    assert "already exists" not in output and "Traceback" not in output, output[-3000:]
    assert len(documents) == 1  # every exchange retrieved the document its ITI-38 advertised
