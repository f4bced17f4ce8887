"""Shared test fixtures: real Redis and PostgreSQL (isolated per test session), fixture data, settings.

Isolation rules, because several test runs may share one Redis and one PostgreSQL server:
- Redis: tests use the database of XHUMA_TEST_REDIS_URL (default db 15) under a unique key namespace per
  test (``redis_namespace``) and delete their own keys; nobody calls FLUSHDB there.
- PostgreSQL: each test session creates its own database and drops it at the end (``pg_database_url``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from xhuma.config import Settings

DATA = Path(__file__).parent / "data"
GPCONNECT_BUNDLES = sorted((DATA / "gpconnect").rglob("*.json"))

REDIS_URL = os.environ.get("XHUMA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("XHUMA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _no_ambient_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up the developer's XHUMA_* environment."""
    for name in list(os.environ):
        if name.startswith("XHUMA_") and not name.startswith("XHUMA_TEST_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A unique key namespace; every key under it is deleted after the test."""
    namespace = f"xhuma-test-{uuid.uuid4().hex[:12]}"
    yield namespace

    async def cleanup() -> None:
        client = redis_asyncio.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(cleanup())


async def _pg_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (asyncpg URL), dropped afterwards."""
    name = f"xhuma_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: embedded defaults in a temporary working directory, plus overrides."""

    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("working_dir", tmp_path)
        return Settings(**overrides)

    return factory
