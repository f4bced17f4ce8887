"""NHS client fixtures: the simulator served on a free loopback port, clients wired exactly as the app does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.nhs.auth import ClientAssertionSigner, PdsTokenProvider, generate_rsa_key, private_key_pem
from xhuma.nhs.gpconnect import GpConnectFhirClient
from xhuma.nhs.pds import PdsFhirClient
from xhuma.nhs.sds import SdsFhirClient
from xhuma.nhs.simulator.records import SimulatorData, load
from xhuma.nhs.simulator.server import ClientCredentials, RunningSimulator, simulator_config
from xhuma.nhs.transport import build_upstream
from xhuma.observability import Metrics
from xhuma.ports import AuditEvent, Cache
from xhuma.store.cache import MemoryCache, ResilientCache

KID = "test-kid"
API_KEY = "test-api-key"
SDS_KEY = "test-sds-key"

# Short timeouts and backoff keep the suite fast; retries stay at 2 (three attempts) as in production.
FAST = {
    "http_connect_timeout_seconds": 0.5,
    "http_read_timeout_seconds": 0.6,
    "http_retries": 2,
    "http_backoff_initial_seconds": 0.01,
    "http_backoff_max_seconds": 0.05,
    "breaker_failure_threshold": 3,
    "breaker_reset_seconds": 0.5,
    # Far above any sample record (the largest is ~1.2 MB), and the simulator's gzip bomb stays quick to make.
    "http_max_response_bytes": 8 * 1024 * 1024,
}


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture(scope="session")
def client_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "pds-client.pem"
    path.write_bytes(private_key_pem(generate_rsa_key(2048)))
    return path


@pytest.fixture(scope="session")
def sample_data() -> SimulatorData:
    return load(None)


@pytest.fixture
def nhs_settings(tmp_path: Path, client_key_file: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "working_dir": tmp_path,
            "pds_private_key_file": client_key_file,
            "pds_kid": KID,
            "pds_api_key": API_KEY,
            "sds_api_key": SDS_KEY,
            **FAST,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
async def simulator(
    nhs_settings: Callable[..., Settings], sample_data: SimulatorData
) -> AsyncIterator[RunningSimulator]:
    settings = nhs_settings()
    config, _ = simulator_config(
        settings, data=sample_data,
        credentials=ClientCredentials(Path(settings.pds_private_key_file).read_bytes(), KID, API_KEY),  # type: ignore[arg-type]
        hang_seconds=1.2,
    )
    async with RunningSimulator(config) as running:
        yield running


class Nhs:
    """Clients wired as xhuma.nhs.wiring does, plus what tests inspect."""

    def __init__(self, settings: Settings, simulator: RunningSimulator, cache: Cache, **token_options: Any) -> None:
        assert simulator.urls is not None
        urls = simulator.urls
        self.settings = settings
        self.simulator = simulator
        self.metrics = Metrics()
        self.sink = RecordingSink()
        self.auditor = Auditor(self.sink, hmac_key=b"test-audit-key", metrics=self.metrics)
        self.cache = cache
        self.upstreams = {
            name: build_upstream(name, settings, mutual_tls=name == "gpconnect", metrics=self.metrics)
            for name in ("pds", "sds", "gpconnect")
        }
        signer = ClientAssertionSigner(Path(settings.pds_private_key_file).read_bytes(), settings.pds_kid or KID,  # type: ignore[arg-type]
                                       API_KEY, urls.pds_token_url)
        self.tokens = PdsTokenProvider(self.upstreams["pds"], signer, cache,
                                       margin_seconds=settings.pds_token_margin_seconds, auditor=self.auditor,
                                       **token_options)
        self.pds = PdsFhirClient(settings, self.upstreams["pds"], self.tokens, base_url=urls.pds_base_url,
                                 auditor=self.auditor, metrics=self.metrics)
        self.sds = SdsFhirClient(settings, self.upstreams["sds"], cache, base_url=urls.sds_base_url,
                                 auditor=self.auditor, metrics=self.metrics)
        self.gpconnect = GpConnectFhirClient(settings, self.upstreams["gpconnect"], self.pds,
                                             ssp_url=urls.gpc_ssp_url, auditor=self.auditor, metrics=self.metrics)

    @property
    def state(self) -> Any:
        return self.simulator.state

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.client.aclose()


@pytest.fixture
async def make_nhs(
    nhs_settings: Callable[..., Settings], simulator: RunningSimulator
) -> AsyncIterator[Callable[..., Nhs]]:
    made: list[Nhs] = []

    def factory(cache: Cache | None = None, settings: Settings | None = None, **token_options: Any) -> Nhs:
        nhs = Nhs(settings or nhs_settings(), simulator,
                  cache or ResilientCache(MemoryCache(), name="memory"), **token_options)
        made.append(nhs)
        return nhs

    yield factory
    for nhs in made:
        await nhs.close()


@pytest.fixture
async def nhs(make_nhs: Callable[..., Nhs]) -> Nhs:
    return make_nhs()
