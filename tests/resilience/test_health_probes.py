"""Issue 15, item 3: /health/live and /health/ready answer within 2 s whatever hangs behind them — here a frozen
PostgreSQL (the audit store) and a frozen Redis at once — and report the truth when the freeze ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.exchange import app_client
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer

from xhuma.app import create_app
from xhuma.config import Settings

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    from xhuma.store.audit import upgrade

    server = PostgresServer()
    server.start()
    upgrade(server.url)  # production: `xhuma db upgrade` before start
    yield server
    server.stop()


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    # A hanging probe fails the test after 10 s instead of hanging it.
    response = await asyncio.wait_for(client.get(path), timeout=10)
    return response, time.monotonic() - started


async def test_probes_answer_within_2_seconds_with_postgresql_and_redis_frozen_and_recover_after_the_thaw(
    tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    settings = Settings(working_dir=tmp_path, redis_url=redis_server.url, database_url=postgres_server.url)
    async with app_client(create_app(settings)) as client:
        ready, _ = await timed_get(client, "/health/ready")
        assert ready.json()["status"] == "ready"
        postgres_server.freeze()
        redis_server.freeze()
        try:
            answers = [await timed_get(client, path) for path in ("/health/ready", "/health/live", "/health/ready")]
        finally:
            redis_server.thaw()
            postgres_server.thaw()
        for response, seconds in answers:
            assert seconds < 2.0, (response.request.url.path, seconds)
        (first_ready, _), (live, _), (second_ready, _) = answers
        assert live.status_code == 200
        for response in (first_ready, second_ready):
            body = response.json()
            assert response.status_code == 503 and body["status"] == "unavailable"
            assert body["checks"]["audit"]["ok"] is False and body["checks"]["cache"]["ok"] is False
        deadline = time.monotonic() + 10
        while (await timed_get(client, "/health/ready"))[0].json()["status"] != "ready":
            assert time.monotonic() < deadline, "not ready again 10 s after the thaw"
            await asyncio.sleep(0.2)
