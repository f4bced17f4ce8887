"""Terminology, as an NHS system gets it (issue 13): the NHS England Terminology Server (FHIR R4).

The converter is a pure function; the facts it needs about a bundle's codes (``TerminologyFacts``: the SNOMED CT
hierarchy of each code, dm+d route / dose form / unit for each product) are resolved here, before conversion:

* Hierarchy: ``ValueSet/$expand`` of SNOMED ECL implicit value sets restricted to the bundle's codes, one expansion
  per hierarchy of interest and per chunk of codes — ``<< 71388002`` procedures, ``<< 64572001`` disorders,
  ``<< 404684003`` clinical findings (disorders are findings too: disorder wins), ``<< 416471007`` family
  history, ``<< 417662000`` history of a finding, ``<< 14679004`` occupations — plus one of the codes alone,
  which tells the codes the release knows (known and in none of them: ``other``; unknown: no fact).
* dm+d: one FHIR ``batch`` of ``CodeSystem/$lookup`` (system ``https://dmd.nhs.uk``) for the bundle's product codes,
  asking for the properties named in DMD_PROPERTIES (the dm+d data model's VMP form, route and unit-dose unit
  columns; docs/mapping/medications.md says how to check them against the live server).
* Each fact is cached per code across patients for ``XHUMA_TTL_TERMINOLOGY_SECONDS``, the release version in the
  key (a new release is a new key space). Calls go through the project's ``Upstream`` (timeouts, retries, the
  endpoint's breaker) and each is audited as transaction ``TERMINOLOGY`` like PDS and SDS calls. Authentication is
  OAuth 2.0 client credentials (system-to-system).

``packaged_facts`` gives the same facts from the subset the simulator serves (``xhuma convert --terminology
packaged``), so a conversion without a server is reproducible.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import structlog

from xhuma.audit import Auditor
from xhuma.ccda.context import DmdFacts, Hierarchy, TerminologyFacts
from xhuma.config import Settings
from xhuma.errors import (
    CacheError,
    UpstreamInvalidResponse,
    UpstreamRejectedRequest,
    UpstreamUnauthorised,
    UpstreamUnavailable,
)
from xhuma.nhs.operation_outcome import parse_json
from xhuma.nhs.outbound import outbound_call
from xhuma.nhs.transport import Upstream
from xhuma.observability import Metrics
from xhuma.ports import Cache

log = structlog.get_logger(__name__)

SNOMED = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"
TRANSACTION = "TERMINOLOGY"
SERVICE = "terminology"
# Order matters: a disorder is also a clinical finding, so the disorder expansion is read first. The situations
# (family history, history of a finding) and occupations are in none of the others.
HIERARCHY_ECL: tuple[tuple[Hierarchy, str], ...] = (
    (Hierarchy.DISORDER, "<< 64572001"),
    (Hierarchy.PROCEDURE, "<< 71388002"),
    (Hierarchy.FINDING, "<< 404684003"),
    (Hierarchy.FAMILY_HISTORY, "<< 416471007"),
    (Hierarchy.PAST_HISTORY, "<< 417662000"),
    (Hierarchy.OCCUPATION, "<< 14679004"),
)
DMD_PROPERTIES = {"route": "ROUTECD", "form": "FORMCD", "unit": "UNIT_DOSE_UOMCD"}
CHUNK = 100  # codes per ECL expansion: bounds the request size, a bundle of 300 codes is 3 chunks
UNKNOWN = "unknown"  # cached for a code the release does not know (same release, same answer)
VERSION_SECONDS = 3600  # how long the release version read from the server is trusted in this process
TOKEN_MARGIN_SECONDS = 60


# --- the codes of a bundle ---------------------------------------------------------------------------------------
def bundle_codes(bundle: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(SNOMED codes of Observations and Conditions, SNOMED codes of Medications = dm+d products) of a bundle."""
    concepts: set[str] = set()
    products: set[str] = set()
    for item in bundle.get("entry") or ():
        resource = item.get("resource") if isinstance(item, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        kind = resource.get("resourceType")
        if kind in ("Observation", "Condition"):
            concepts.update(_sct(resource.get("code")))
        elif kind == "Medication":
            products.update(_sct(resource.get("code")))
    return concepts, products


def _sct(concept: object) -> list[str]:
    if not isinstance(concept, Mapping):
        return []
    return [str(c["code"]).strip() for c in concept.get("coding") or ()
            if isinstance(c, Mapping) and c.get("system") == SNOMED and isinstance(c.get("code"), str)
            and str(c["code"]).strip().isdigit()]


# --- the packaged subset -----------------------------------------------------------------------------------------
@cache
def packaged_subset() -> Mapping[str, Any]:
    """The subset the simulator serves (src/xhuma/nhs/simulator/terminology_subset.json, with its provenance)."""
    raw = resources.files("xhuma.nhs.simulator").joinpath("terminology_subset.json").read_bytes()
    subset: Mapping[str, Any] = json.loads(raw)
    return subset


def _pair(value: object) -> tuple[str, str] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    return None


def _dmd_facts(entry: Mapping[str, Any]) -> DmdFacts:
    return DmdFacts(route=_pair(entry.get("route")), form=_pair(entry.get("form")), unit=_pair(entry.get("unit")))


def packaged_facts(bundle: Mapping[str, Any]) -> TerminologyFacts:
    """The bundle's facts from the packaged subset (no I/O beyond reading the package's data file)."""
    subset = packaged_subset()
    concepts, products = bundle_codes(bundle)
    snomed, dmd = subset["snomed"], subset["dmd"]
    hierarchy = {code: Hierarchy(snomed[code]["hierarchy"]) for code in concepts
                 if code in snomed and snomed[code].get("hierarchy")}
    facts = {code: _dmd_facts(dmd[code]) for code in products if code in dmd}
    return TerminologyFacts(hierarchy, facts, "packaged", str(subset["provenance"]["version"]))


# --- the server --------------------------------------------------------------------------------------------------
class TerminologyClient:
    """Resolves a bundle's ``TerminologyFacts`` from an NHS England Terminology Server (see the module text)."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        cache: Cache,
        *,
        base_url: str,
        token_url: str | None,
        client_id: str | None,
        client_secret: str | None,
        auditor: Auditor | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._cache = cache
        self._base_url = base_url.rstrip("/")
        self._token_url = token_url
        self._client = (client_id, client_secret)
        self._auditor = auditor
        self._metrics = metrics
        self._token: tuple[str, float] | None = None
        self._versions: dict[str, tuple[str, float]] = {}
        self.calls = 0  # round trips to the server (tokens included), for tests and benches

    async def facts_for(self, bundle: Mapping[str, Any]) -> TerminologyFacts:
        """The facts of every code of the bundle: from the cache, the rest in a few batched calls."""
        concepts, products = bundle_codes(bundle)
        version = await self._version(SNOMED)
        hierarchy = await self._hierarchy(sorted(concepts), version)
        dmd: dict[str, DmdFacts] = {}
        if products:
            dmd = await self._dmd(sorted(products), await self._version(DMD))
        return TerminologyFacts(hierarchy, dmd, self._base_url, version)

    # hierarchy -----------------------------------------------------------------------------------------------
    async def _hierarchy(self, codes: list[str], version: str) -> dict[str, Hierarchy]:
        cached = await self._cached_many([_key(version, "sct", c) for c in codes])
        found: dict[str, Hierarchy] = {}
        missing: list[str] = []
        for code, raw in zip(codes, cached, strict=True):
            if raw is None:
                missing.append(code)
            elif raw != UNKNOWN:
                found[code] = Hierarchy(raw)
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start:start + CHUNK]
            classified = await self._classify(chunk)
            found.update(classified)
            await self._store_many({_key(version, "sct", c): classified[c].value if c in classified else UNKNOWN
                                    for c in chunk})
        return found

    async def _classify(self, codes: list[str]) -> dict[str, Hierarchy]:
        members = " OR ".join(codes)
        known = await self._expand(f"({members})", len(codes))
        classified: dict[str, Hierarchy] = {}
        for hierarchy, focus in HIERARCHY_ECL:
            for code in await self._expand(f"({focus}) AND ({members})", len(codes)):
                classified.setdefault(code, hierarchy)
        for code in known:
            classified.setdefault(code, Hierarchy.OTHER)
        return {code: value for code, value in classified.items() if code in codes}

    async def _expand(self, ecl: str, count: int) -> set[str]:
        body = {"resourceType": "Parameters", "parameter": [
            {"name": "url", "valueUri": f"{SNOMED}?fhir_vs=ecl/{ecl}"},
            {"name": "count", "valueInteger": count},
        ]}
        answer = await self._call("POST", "ValueSet/$expand", "expand", codes=count, json_body=body)
        expansion = answer.get("expansion") if answer.get("resourceType") == "ValueSet" else None
        if not isinstance(expansion, Mapping):
            raise UpstreamInvalidResponse("Terminology Server answer is not an expansion", service=SERVICE)
        return {str(c.get("code")) for c in expansion.get("contains") or ()
                if isinstance(c, Mapping) and c.get("system") == SNOMED}

    # dm+d ----------------------------------------------------------------------------------------------------
    async def _dmd(self, codes: list[str], version: str) -> dict[str, DmdFacts]:
        cached = await self._cached_many([_key(version, "dmd", c) for c in codes])
        found: dict[str, DmdFacts] = {}
        missing: list[str] = []
        for code, raw in zip(codes, cached, strict=True):
            if raw is None:
                missing.append(code)
            elif raw != UNKNOWN:
                found[code] = _dmd_facts(json.loads(raw))
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start:start + CHUNK]
            looked_up = await self._lookup_batch(chunk)
            found.update(looked_up)
            await self._store_many({
                _key(version, "dmd", c): json.dumps({"route": f.route, "form": f.form, "unit": f.unit})
                if (f := looked_up.get(c)) is not None else UNKNOWN for c in chunk})
        return found

    async def _lookup_batch(self, codes: list[str]) -> dict[str, DmdFacts]:
        properties = "".join(f"&property={name}" for name in DMD_PROPERTIES.values())
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"CodeSystem/$lookup?system={DMD}&code={code}{properties}"}}
            for code in codes]}
        answer = await self._call("POST", "", "lookup-batch", codes=len(codes), json_body=batch)
        if answer.get("resourceType") != "Bundle":
            raise UpstreamInvalidResponse("Terminology Server answer is not a batch-response", service=SERVICE)
        found: dict[str, DmdFacts] = {}
        for code, entry in zip(codes, answer.get("entry") or (), strict=False):
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if isinstance(resource, Mapping) and resource.get("resourceType") == "Parameters":
                found[code] = _dmd_from_parameters(resource)
        return found

    # plumbing ------------------------------------------------------------------------------------------------
    async def _version(self, system: str) -> str:
        """The release of ``system`` the server serves (the newest CodeSystem version), trusted for an hour."""
        known = self._versions.get(system)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        answer = await self._call("GET", "CodeSystem", "version", params={"url": system, "_elements": "version"})
        versions = sorted(str(e["resource"]["version"]) for e in answer.get("entry") or ()
                          if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
                          and isinstance(e["resource"].get("version"), str))
        if not versions:
            raise UpstreamInvalidResponse("Terminology Server does not name its release", service=SERVICE)
        self._versions[system] = (versions[-1], time.monotonic() + VERSION_SECONDS)
        return versions[-1]

    async def _authorisation(self) -> dict[str, str]:
        client_id, secret = self._client
        if not (self._token_url and client_id and secret):
            return {}
        if self._token is None or self._token[1] <= time.monotonic():
            self.calls += 1
            async with outbound_call(self._auditor, self._metrics, transaction=TRANSACTION, stage=SERVICE) as call:
                call.details["operation"] = "token"
                result = await self._upstream.request(
                    "POST", self._token_url, headers={"Accept": "application/json"},
                    data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
                body = parse_json(result.response.content)
                status = result.response.status_code
                if status in (400, 401, 403):
                    raise UpstreamUnauthorised("Terminology Server refused our client credentials",
                                               service=SERVICE, status=status)
                if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
                    raise UpstreamUnavailable("Terminology Server token endpoint failed", service=SERVICE,
                                              status=status)
                lifetime = body.get("expires_in")
                seconds = int(lifetime) if isinstance(lifetime, int | str) and str(lifetime).isdigit() else 300
                self._token = (body["access_token"], time.monotonic() + max(seconds - TOKEN_MARGIN_SECONDS, 1))
                call.outcome = "success"
        return {"Authorization": f"Bearer {self._token[0]}"}

    async def _call(self, method: str, path: str, operation: str, *, codes: int | None = None,
                    params: Any = None, json_body: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        headers = {"Accept": "application/fhir+json", "X-Correlation-Id": str(uuid.uuid4()),
                   **(await self._authorisation())}
        content = None
        if json_body is not None:
            headers["Content-Type"] = "application/fhir+json"
            content = json.dumps(json_body).encode()
        url = f"{self._base_url}/{path}" if path else self._base_url
        self.calls += 1
        async with outbound_call(self._auditor, self._metrics, transaction=TRANSACTION, stage=SERVICE) as call:
            call.details["operation"] = operation
            if codes is not None:
                call.details["codes"] = codes
            # The breaker is the server's base URL's (never a path: the ECL holds codes, not patients).
            result = await self._upstream.request(method, url, headers=headers, params=params, content=content,
                                                  endpoint=self._base_url, replayable=True)
            status = result.response.status_code
            body = parse_json(result.response.content)
            if status in (401, 403):
                self._token = None
                raise UpstreamUnauthorised("Terminology Server refused our token", service=SERVICE, status=status)
            if status >= 500 or status == 429:
                raise UpstreamUnavailable("Terminology Server unavailable", service=SERVICE, status=status)
            if status != 200:
                raise UpstreamRejectedRequest("Terminology Server rejected the request", service=SERVICE,
                                              status=status)
            if not isinstance(body, Mapping):
                raise UpstreamInvalidResponse("Terminology Server answer is not FHIR JSON", service=SERVICE,
                                              status=status)
            call.outcome = "success"
        return body

    async def _cached_many(self, keys: list[str]) -> list[str | None]:
        async def one(key: str) -> str | None:
            try:
                raw = await self._cache.get(key)
            except CacheError:
                return None
            return raw.decode() if raw is not None else None

        return list(await asyncio.gather(*(one(k) for k in keys)))

    async def _store_many(self, values: Mapping[str, str]) -> None:
        ttl = self._settings.ttl_terminology_seconds
        try:
            await asyncio.gather(*(self._cache.set(k, v.encode(), ttl) for k, v in values.items()))
        except CacheError as error:  # a cache failure costs a lookup next time, never the conversion
            log.warning("terminology_cache_failed", error=str(error))


def _key(version: str, kind: str, code: str) -> str:
    return f"terminology:{version}:{kind}:{code}"


def _dmd_from_parameters(parameters: Mapping[str, Any]) -> DmdFacts:
    """The ``property`` parts of a $lookup answer (code + valueCoding, or valueCode with a description)."""
    values: dict[str, tuple[str, str]] = {}
    for parameter in parameters.get("parameter") or ():
        if not isinstance(parameter, Mapping) or parameter.get("name") != "property":
            continue
        parts = {p.get("name"): p for p in parameter.get("part") or () if isinstance(p, Mapping)}
        name = (parts.get("code") or {}).get("valueCode")
        value = parts.get("value") or {}
        coding = value.get("valueCoding")
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            values[str(name)] = (coding["code"], str(coding.get("display") or coding["code"]))
        elif isinstance(value.get("valueCode"), str):
            description = (parts.get("description") or {}).get("valueString")
            values[str(name)] = (value["valueCode"], str(description or value["valueCode"]))
    return DmdFacts(**{field: values.get(prop) for field, prop in DMD_PROPERTIES.items()})


__all__ = [
    "DMD",
    "DMD_PROPERTIES",
    "HIERARCHY_ECL",
    "SNOMED",
    "TerminologyClient",
    "bundle_codes",
    "packaged_facts",
    "packaged_subset",
]
