"""Fault injection: a private redis-server per test (killed, frozen, restarted; never the shared Redis), and
replicas of one deployment built by create_app on it, with the NHS simulator behind each."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.support.exchange import app_client
from tests.support.redis_server import RedisServer

from xhuma.app import create_app
from xhuma.config import Settings

CACHE_KEYS = "resilience:" + base64.b64encode(os.urandom(32)).decode()  # shared by the replicas of a test


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


Replica = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def replica(tmp_path: Path, redis_server: RedisServer) -> Replica:
    """``async with replica("a", **settings) as (app, client)``: one replica of the deployment on redis_server
    (same cache keys as the others, its own audit file and embedded simulator)."""

    @contextlib.asynccontextmanager
    async def start(name: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        settings = Settings(working_dir=workdir, redis_url=redis_server.url, cache_keys=CACHE_KEYS, **overrides)
        app = create_app(settings)
        async with app_client(app) as client:
            yield app, client

    return start
