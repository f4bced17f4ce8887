"""SDS FHIR client: which ASID, party key and FHIR service root serve a practice's structured record (SPEC §6).

Step 1 ``GET /Device`` (ODS + interaction id) gives the provider ASID and party key; step 2 ``GET /Endpoint``
(ODS + interaction + party key) gives the FHIR base URL. The route is cached per (ODS, interaction) for
``XHUMA_TTL_SDS_SECONDS`` (LESSONS 14); a cache failure is logged and bypassed, never fatal.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import structlog

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import (
    AmbiguousEndpoint,
    CacheError,
    InvalidRequest,
    NoEndpoint,
    UpstreamInvalidResponse,
    UpstreamRejectedRequest,
    UpstreamUnauthorised,
    UpstreamUnavailable,
)
from xhuma.nhs.operation_outcome import first_spine_code, parse_json
from xhuma.nhs.outbound import OutboundCall, outbound_call
from xhuma.nhs.transport import Upstream
from xhuma.observability import Metrics
from xhuma.ports import Cache, SdsRoute
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)

GPC_STRUCTURED_INTERACTION = "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
INTERACTION_ID_SYSTEM = "https://fhir.nhs.uk/Id/nhsServiceInteractionId"
ASID_SYSTEM = "https://fhir.nhs.uk/Id/nhsSpineASID"
PARTY_KEY_SYSTEM = "https://fhir.nhs.uk/Id/nhsMhsPartyKey"
CACHE_INTERACTION = "gpc-structured"


class SdsFhirClient:
    """The ``SdsClient`` port over the Spine Directory Service FHIR API."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        cache: Cache,
        *,
        base_url: str,
        auditor: Auditor | None = None,
        metrics: Metrics | None = None,
        api_key: str | None = None,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._cache = cache
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key or (settings.sds_api_key.get_secret_value() if settings.sds_api_key else None)
        self._auditor = auditor
        self._metrics = metrics
        self.lookups = 0  # SDS round trips made (cache misses)

    async def gp_connect_route(self, ods_code: str) -> SdsRoute:
        ods = ods_code.strip().upper()
        if not ods or not ods.isalnum():
            raise InvalidRequest("ODS code is not valid")
        key = CacheKeys.sds_route(ods, CACHE_INTERACTION)
        cached = await self._cached(key)
        if cached is not None:
            if self._metrics is not None:
                self._metrics.cache_lookups.labels(kind="sds", result="hit").inc()
            return cached
        if self._metrics is not None:
            self._metrics.cache_lookups.labels(kind="sds", result="miss").inc()
        async with outbound_call(self._auditor, self._metrics, transaction="SDS", stage="sds") as call:
            call.details.update({"ods_code": ods, "interaction_id": GPC_STRUCTURED_INTERACTION})
            self.lookups += 1
            route = await self._lookup(ods, call)
            call.outcome = "success"
            call.spine = {"to": route.asid, "interaction_id": GPC_STRUCTURED_INTERACTION}
        try:
            await self._cache.set(key, json.dumps(asdict(route)).encode(), self._settings.ttl_sds_seconds)
        except CacheError as error:  # ResilientCache already swallows; a bare cache must not fail us either
            log.warning("sds_cache_failed", error=str(error))
        return route

    async def _cached(self, key: str) -> SdsRoute | None:
        try:
            raw = await self._cache.get(key)
        except CacheError:
            return None
        if raw is None:
            return None
        try:
            return SdsRoute(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    async def _lookup(self, ods: str, call: OutboundCall) -> SdsRoute:
        organization = f"{ODS_ORGANIZATION_CODE}|{ods}"
        interaction = f"{INTERACTION_ID_SYSTEM}|{GPC_STRUCTURED_INTERACTION}"
        devices = await self._search("Device", [("organization", organization), ("identifier", interaction)], ods)
        candidates: dict[str | None, str] = {}  # party key -> ASID
        for device in devices:
            asid = _identifier(device, ASID_SYSTEM)
            if asid:
                candidates.setdefault(_identifier(device, PARTY_KEY_SYSTEM), asid)
        call.details["devices"] = len(candidates)
        if not candidates:
            # Zero results: the practice is not enabled for GP Connect structured (SPEC §6.4).
            raise NoEndpoint("practice has no GP Connect structured record service", service="sds")
        params = [("organization", organization), ("identifier", interaction)]
        if len(candidates) == 1:
            party_key = next(iter(candidates))
            if party_key:
                params.append(("identifier", f"{PARTY_KEY_SYSTEM}|{party_key}"))
        endpoints = await self._search("Endpoint", params, ods)
        # SPEC §6.4: prefer the Device/Endpoint pair with the same party key; fail if still ambiguous.
        pairs: dict[tuple[str, str | None, str], None] = {}
        for endpoint in endpoints:
            address = endpoint.get("address")
            if not isinstance(address, str) or not address:
                continue
            endpoint_key = _identifier(endpoint, PARTY_KEY_SYSTEM)
            if endpoint_key in candidates:
                pairs[(candidates[endpoint_key], endpoint_key, address.rstrip("/"))] = None
            elif len(candidates) == 1 and endpoint_key is None:
                only_key, only_asid = next(iter(candidates.items()))
                pairs[(only_asid, only_key, address.rstrip("/"))] = None
        call.details["endpoints"] = len(pairs)
        if not pairs:
            raise NoEndpoint("practice has no GP Connect structured endpoint", service="sds")
        if len(pairs) > 1:
            raise AmbiguousEndpoint("SDS returned several GP Connect endpoints", service="sds")
        asid, party_key, address = next(iter(pairs))
        return SdsRoute(ods_code=ods, asid=asid, party_key=party_key, endpoint_url=address)

    async def _search(self, resource: str, params: list[tuple[str, str]], ods: str) -> list[Mapping[str, Any]]:
        headers = {"Accept": "application/fhir+json", "X-Correlation-Id": str(uuid.uuid4())}
        if self._api_key:
            headers["apikey"] = self._api_key
        # The breaker is SDS's base URL's; the practice asked about is counted once among its failures.
        result = await self._upstream.request("GET", f"{self._base_url}/{resource}", headers=headers, params=params,
                                              endpoint=self._base_url, subject=ods)
        response = result.response
        body = parse_json(response.content)
        if response.status_code in (401, 403):
            raise UpstreamUnauthorised("SDS refused our API key", service="sds", status=response.status_code)
        if response.status_code >= 500 or response.status_code == 429:
            raise UpstreamUnavailable("SDS unavailable", service="sds", status=response.status_code)
        if response.status_code != 200:
            raise UpstreamRejectedRequest(
                "SDS rejected the lookup", service="sds", status=response.status_code,
                spine_code=first_spine_code(body),
            )
        if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
            raise UpstreamInvalidResponse("SDS answer is not a Bundle", service="sds", status=200)
        return [
            entry["resource"]
            for entry in body.get("entry") or []
            if isinstance(entry, Mapping)
            and isinstance(entry.get("resource"), Mapping)
            and entry["resource"].get("resourceType") == resource
        ]


def _identifier(resource: Mapping[str, Any], system: str) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, Mapping) and identifier.get("system") == system and identifier.get("value"):
            return str(identifier["value"])
    return None


__all__ = ["GPC_STRUCTURED_INTERACTION", "SdsFhirClient"]
