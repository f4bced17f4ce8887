"""Builds the NHS clients for the app's lifespan (the only place that chooses real services or the simulator).

In the ``simulator`` profile, when the PDS, SDS or SSP URL is unset, the built-in simulator is started in-process
on 127.0.0.1 (a free port) and the clients are pointed at it, so the production code path runs end to end over
real HTTP. The PDS client then signs its client assertion with a key the simulator trusts (the configured key,
or a development key pair generated at start-up).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import UpstreamUnauthorised
from xhuma.nhs.auth import ClientAssertionSigner, PdsTokenProvider
from xhuma.nhs.gpconnect import GpConnectFhirClient
from xhuma.nhs.pds import PdsFhirClient
from xhuma.nhs.sds import SdsFhirClient
from xhuma.nhs.terminology import TerminologyClient
from xhuma.nhs.transport import Upstream, build_upstream
from xhuma.observability import Metrics
from xhuma.ports import Cache
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)

SIMULATOR_SDS_API_KEY = "xhuma-simulator-sds-key"


@dataclass
class NhsClients:
    pds: PdsFhirClient
    sds: SdsFhirClient
    gpconnect: GpConnectFhirClient
    tokens: PdsTokenProvider | None
    upstreams: dict[str, Upstream]
    simulator: object | None = None  # RunningSimulator when started in-process
    terminology: TerminologyClient | None = None  # None: no terminology (the converter's documented fallbacks)


@asynccontextmanager
async def nhs_clients(
    settings: Settings,
    *,
    cache: Cache,
    auditor: Auditor | None,
    metrics: Metrics | None,
    keys: CacheKeys | None = None,
) -> AsyncIterator[NhsClients]:
    simulator = None
    pds_url, token_url = settings.pds_base_url, settings.pds_token_url
    sds_url, ssp_url = settings.sds_base_url, settings.gpc_ssp_url
    sds_api_key: str | None = None
    terminology_url, terminology_token_url = settings.terminology_url, settings.terminology_token_url
    terminology_client = (_secret(settings.terminology_client_id), _secret(settings.terminology_client_secret))
    signer: ClientAssertionSigner | None = None
    upstreams: dict[str, Upstream] = {}
    try:
        if settings.uses_simulator and not (pds_url and token_url and sds_url and ssp_url):
            from xhuma.nhs.simulator.server import RunningSimulator, simulator_config

            config, credentials = simulator_config(settings)
            simulator = RunningSimulator(config)
            urls = await simulator.start()
            pds_url, token_url = pds_url or urls.pds_base_url, token_url or urls.pds_token_url
            sds_url, ssp_url = sds_url or urls.sds_base_url, ssp_url or urls.gpc_ssp_url
            signer = ClientAssertionSigner(credentials.private_key_pem, credentials.kid, credentials.api_key, token_url)
            sds_api_key = None if settings.sds_api_key else SIMULATOR_SDS_API_KEY
            if not terminology_url:
                from xhuma.nhs.simulator.terminology import SIMULATOR_CLIENT_ID, SIMULATOR_CLIENT_SECRET

                terminology_url, terminology_token_url = urls.terminology_url, urls.terminology_token_url
                terminology_client = (SIMULATOR_CLIENT_ID, SIMULATOR_CLIENT_SECRET)
            log.info("nhs_simulator_started", base_url=urls.base, patients=len(config.data.patients))
        else:
            try:
                signer = ClientAssertionSigner.from_settings(settings)
            except UpstreamUnauthorised:
                # Without credentials PDS answers 401 and each lookup fails as UpstreamUnauthorised.
                log.warning("pds_credentials_missing")
        if not (pds_url and sds_url):
            raise RuntimeError("PDS and SDS base URLs must be configured outside the simulator profile")
        upstreams = {
            "pds": build_upstream("pds", settings, mutual_tls=False, metrics=metrics),
            "sds": build_upstream("sds", settings, mutual_tls=False, metrics=metrics),
            "gpconnect": build_upstream("gpconnect", settings, mutual_tls=True, metrics=metrics),
        }
        tokens = (
            PdsTokenProvider(
                upstreams["pds"], signer, cache, margin_seconds=settings.pds_token_margin_seconds, auditor=auditor
            )
            if signer is not None
            else None
        )
        pds = PdsFhirClient(
            settings, upstreams["pds"], tokens, base_url=pds_url, auditor=auditor, metrics=metrics,
            cache=cache, keys=keys,
        )
        sds = SdsFhirClient(
            settings, upstreams["sds"], cache, base_url=sds_url, auditor=auditor, metrics=metrics, api_key=sds_api_key
        )
        gpconnect = GpConnectFhirClient(
            settings, upstreams["gpconnect"], pds, ssp_url=ssp_url, auditor=auditor, metrics=metrics
        )
        terminology = None
        if terminology_url:
            upstreams["terminology"] = build_upstream("terminology", settings, mutual_tls=False, metrics=metrics)
            terminology = TerminologyClient(
                settings, upstreams["terminology"], cache, base_url=terminology_url, token_url=terminology_token_url,
                client_id=terminology_client[0], client_secret=terminology_client[1], auditor=auditor, metrics=metrics,
            )
        yield NhsClients(pds, sds, gpconnect, tokens, upstreams, simulator, terminology)
    finally:
        for upstream in upstreams.values():
            await upstream.client.aclose()
        if simulator is not None:
            await simulator.stop()


def _secret(value: object) -> str | None:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else None


__all__ = ["SIMULATOR_SDS_API_KEY", "NhsClients", "nhs_clients"]
