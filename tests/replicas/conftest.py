"""Replicas of one deployment in one test: several applications built by ``create_app`` with the same settings,
sharing real Redis (a namespace of the test database), one PostgreSQL audit database and one NHS simulator served
on loopback, as two or three ``xhuma serve`` processes behind a load balancer would share them."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from tests.support.exchange import app_client

from xhuma.app import create_app
from xhuma.config import Settings
from xhuma.nhs.auth import generate_rsa_key, private_key_pem
from xhuma.nhs.simulator.app import DEFAULT_API_KEY, SimulatorState
from xhuma.nhs.simulator.server import SIMULATOR_KID, ClientCredentials, RunningSimulator, simulator_config
from xhuma.nhs.wiring import SIMULATOR_SDS_API_KEY

CACHE_KEYS = "replicas:" + base64.b64encode(os.urandom(32)).decode()
AUDIT_HMAC_KEY = "replica-pseudonym-key-" + "x" * 24


@dataclass
class Deployment:
    """The replicas' applications (lifespans running), a client for each, and the shared simulator's state."""

    apps: list[FastAPI]
    clients: list[httpx.AsyncClient]
    simulator: SimulatorState
    settings: Settings

    def pipeline_runs(self) -> int:
        from xhuma.ihe.endpoints import gateway_of

        return sum(gateway_of(app).records.pipeline_runs for app in self.apps)


@pytest.fixture(scope="session")
def audit_database(pg_database_url: str) -> str:
    from xhuma.store.audit import upgrade

    upgrade(pg_database_url)  # production: `xhuma db upgrade` once, before the replicas start
    return pg_database_url


@pytest.fixture
def deployment(
    tmp_path: Path, redis_url: str, redis_namespace: str, audit_database: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[Deployment]]:
    """``async with deployment(replicas=2, gpc_latency_ms=300, **settings) as d``."""

    @contextlib.asynccontextmanager
    async def start(replicas: int = 2, *, gpc_latency_ms: int = 0, **overrides: Any) -> AsyncIterator[Deployment]:
        key_file = tmp_path / "pds-client-key.pem"
        credentials = ClientCredentials(private_key_pem(generate_rsa_key(2048)), SIMULATOR_KID, DEFAULT_API_KEY)
        key_file.write_bytes(credentials.private_key_pem)
        config, _ = simulator_config(Settings(working_dir=tmp_path, simulator_gpc_latency_ms=gpc_latency_ms),
                                     credentials=credentials)
        async with RunningSimulator(config) as simulator, contextlib.AsyncExitStack() as stack:
            urls = simulator.urls
            assert urls is not None
            settings = Settings(
                working_dir=tmp_path, redis_url=redis_url, redis_namespace=redis_namespace,
                cache_keys=SecretStr(CACHE_KEYS), audit_hmac_key=SecretStr(AUDIT_HMAC_KEY),
                database_url=audit_database, demographics_match="off",
                pds_base_url=urls.pds_base_url, pds_token_url=urls.pds_token_url, sds_base_url=urls.sds_base_url,
                gpc_ssp_url=urls.gpc_ssp_url, pds_private_key_file=key_file, pds_kid=credentials.kid,
                pds_api_key=SecretStr(credentials.api_key), sds_api_key=SecretStr(SIMULATOR_SDS_API_KEY), **overrides,
            )
            apps = [create_app(settings) for _ in range(replicas)]
            clients = [await stack.enter_async_context(app_client(app)) for app in apps]
            yield Deployment(apps, clients, simulator.state, settings)

    return start
