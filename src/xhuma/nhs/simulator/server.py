"""Serving the simulator: in-process on loopback (simulator profile, tests) or standalone (``xhuma simulate``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from xhuma.config import Settings
from xhuma.nhs.auth import generate_rsa_key, load_private_key, private_key_pem
from xhuma.nhs.simulator.app import (
    DEFAULT_API_KEY,
    PDS_PATH,
    SDS_PATH,
    SSP_PATH,
    TOKEN_PATH,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
)
from xhuma.nhs.simulator.records import SimulatorData, load
from xhuma.nhs.simulator.terminology import TERMINOLOGY_PATH, TERMINOLOGY_TOKEN_PATH

SIMULATOR_KID = "xhuma-simulator-dev"


@dataclass(frozen=True)
class SimulatorUrls:
    base: str

    @property
    def pds_base_url(self) -> str:
        return self.base + PDS_PATH

    @property
    def pds_token_url(self) -> str:
        return self.base + TOKEN_PATH

    @property
    def sds_base_url(self) -> str:
        return self.base + SDS_PATH

    @property
    def gpc_ssp_url(self) -> str:
        return self.base + SSP_PATH

    @property
    def terminology_url(self) -> str:
        return self.base + TERMINOLOGY_PATH

    @property
    def terminology_token_url(self) -> str:
        return self.base + TERMINOLOGY_TOKEN_PATH


@dataclass(frozen=True)
class ClientCredentials:
    """What the PDS client needs to be trusted by this simulator."""

    private_key_pem: bytes
    kid: str
    api_key: str


def simulator_config(
    settings: Settings,
    *,
    data: SimulatorData | None = None,
    data_dir: Path | None = None,
    credentials: ClientCredentials | None = None,
    **overrides: Any,
) -> tuple[SimulatorConfig, ClientCredentials]:
    """Simulator configuration from settings. Trusts the configured PDS key when there is one, else a freshly
    generated development key pair (returned so the in-process PDS client can sign with it)."""
    if credentials is None:
        credentials = credentials_from_settings(settings)
    public_key = load_private_key(credentials.private_key_pem).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("PDS client assertion key must be RSA")
    config = SimulatorConfig(
        data=data or load(data_dir or settings.simulator_data, default_ods=settings.simulator_default_ods),
        api_key=credentials.api_key,
        trusted_keys={credentials.kid: public_key},
        sds_api_key=settings.sds_api_key.get_secret_value() if settings.sds_api_key else None,
        pds_latency_ms=settings.simulator_pds_latency_ms,
        sds_latency_ms=settings.simulator_sds_latency_ms,
        gpc_latency_ms=settings.simulator_gpc_latency_ms,
        # A bomb is twice what the gateway accepts, so it is refused (the gateway never inflates past its limit).
        gzip_bomb_bytes=2 * settings.http_max_response_bytes,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config, credentials


def credentials_from_settings(settings: Settings) -> ClientCredentials:
    api_key = settings.pds_api_key.get_secret_value() if settings.pds_api_key else DEFAULT_API_KEY
    if settings.pds_private_key_file is not None:
        return ClientCredentials(
            Path(settings.pds_private_key_file).read_bytes(), settings.pds_kid or SIMULATOR_KID, api_key
        )
    return ClientCredentials(private_key_pem(generate_rsa_key(2048)), SIMULATOR_KID, api_key)


def idle_closing_protocol(after_seconds: float, *, reset: bool = False,
                          counts: Counter[str] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, except that a request arriving on a keep-alive connection that has been idle for
    ``after_seconds`` or more is dropped unanswered: the connection is closed (``reset``: reset). This is a proxy
    whose idle timeout fires just as the request arrives, the race that fails a client's pooled connection (a
    connection closed earlier is seen closed by the client before reuse). ``counts``: ``connections`` opened,
    ``dropped-idle`` requests."""
    tally: Counter[str] = counts if counts is not None else Counter()

    class IdleClosingProtocol(HttpToolsProtocol):
        _idle_since: float | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            tally["connections"] += 1
            super().connection_made(transport)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._idle_since = self.loop.time()

        def data_received(self, data: bytes) -> None:
            idle_since, self._idle_since = self._idle_since, None
            if idle_since is not None and self.loop.time() - idle_since >= after_seconds:
                tally["dropped-idle"] += 1
                if reset:
                    # Linger 0: close() sends a TCP reset instead of a FIN.
                    self.transport.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.transport.abort()
                else:
                    self.transport.close()
                return
            super().data_received(data)

    return IdleClosingProtocol


def http_protocol(config: SimulatorConfig, state: SimulatorState) -> type[asyncio.Protocol] | str:
    """The uvicorn ``http`` setting for the simulator: uvicorn's own, or one that drops requests on idle
    connections (``SimulatorConfig.close_idle_after_seconds``)."""
    if config.close_idle_after_seconds is None:
        return "auto"
    return idle_closing_protocol(config.close_idle_after_seconds, reset=config.close_idle_reset,
                                 counts=state.requests)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling: the host process (the gateway, a test) owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RunningSimulator:
    """The simulator served by uvicorn in a task of the current event loop, on 127.0.0.1."""

    def __init__(self, config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.app = create_simulator_app(config)
        self._host = host
        self._port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.urls: SimulatorUrls | None = None

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app.state.simulator
        return state

    async def start(self) -> SimulatorUrls:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            self.app, host=self._host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=1, timeout_keep_alive=30, http=http_protocol(self.config, self.state),
        )
        self._server = _EmbeddedServer(uv_config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="xhuma-simulator")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the start-up failure
                raise RuntimeError("simulator stopped during start-up")
            await asyncio.sleep(0.01)
        self.urls = SimulatorUrls(f"http://{self._host}:{port}")
        return self.urls

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        self._server = None
        self._task = None

    async def __aenter__(self) -> RunningSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


__all__ = [
    "SIMULATOR_KID",
    "ClientCredentials",
    "RunningSimulator",
    "SimulatorUrls",
    "credentials_from_settings",
    "http_protocol",
    "idle_closing_protocol",
    "simulator_config",
]
