"""PDS FHIR R4 client: ``GET Patient/{nhs}`` and the demographic search ``GET Patient?...`` in
application-restricted mode (SPEC §5; docs/ihe.md, discovery by demographics).

Each HTTP status maps to its own outcome (LESSONS 16): 404 is "not found", 401/403 "unauthorised", 5xx and
timeouts "unavailable" — never "restricted". Restricted (R/V), deceased and superseded patients are returned with
their flags set on ``PdsPatient`` (LESSONS 17); ``pds_outcome`` names the outcome for the caller and the audit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import structlog

from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import (
    CacheError,
    InvalidNhsNumber,
    PatientNotFound,
    UpstreamInvalidResponse,
    UpstreamRejectedRequest,
    UpstreamUnauthorised,
    UpstreamUnavailable,
)
from xhuma.nhs.auth import PdsTokenProvider
from xhuma.nhs.nhs_number import NHS_NUMBER_SYSTEM, validate_nhs_number
from xhuma.nhs.operation_outcome import first_spine_code, parse_json
from xhuma.nhs.outbound import outbound_call
from xhuma.nhs.transport import Upstream
from xhuma.observability import Metrics
from xhuma.ports import Address, Cache, PdsPatient, PdsSearchMatch, PdsSearchQuery, PdsSearchResult
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)

ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
FHIR_JSON = "application/fhir+json"
TOO_MANY_MATCHES = "TOO_MANY_MATCHES"  # PDS search: 200 with this OperationOutcome when the match is not unique


def pds_outcome(patient: PdsPatient) -> str:
    """found | restricted | deceased | superseded (in that order of precedence for the use case)."""
    if patient.restricted:
        return "restricted"
    if patient.deceased:
        return "deceased"
    if patient.superseded:
        return "superseded"
    return "found"


class PdsFhirClient:
    """The ``PdsClient`` port over PDS FHIR R4."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        tokens: PdsTokenProvider | None,
        *,
        base_url: str,
        auditor: Auditor | None = None,
        metrics: Metrics | None = None,
        cache: Cache | None = None,
        keys: CacheKeys | None = None,
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")
        self._auditor = auditor
        self._metrics = metrics
        # The PDS answer is cached per patient only when the caller supplies the key scheme (keys are hashed
        # per patient so that purge finds them; LESSONS 14).
        self._cache = cache if keys is not None else None
        self._keys = keys

    async def get_patient(self, nhs_number: str, *, correlation_id: str | None = None) -> PdsPatient:
        # SPEC §9: Modulus 11 before any call; an invalid number never reaches PDS.
        number = validate_nhs_number(nhs_number)
        cached = await self._from_cache(number)
        if self._metrics is not None and self._cache is not None:
            self._metrics.cache_lookups.labels(kind="pds", result="miss" if cached is None else "hit").inc()
        if cached is not None:
            return cached
        async with outbound_call(
            self._auditor, self._metrics, transaction="PDS", stage="pds", nhs_number=number
        ) as call:
            request_id = str(uuid.uuid4())
            call.details.update({"operation": "read", "request_id": request_id})
            response_status, body, attempts = await self._read(number, request_id, correlation_id)
            call.details["attempts"] = attempts
            patient = self._interpret(number, response_status, body)
            call.outcome = "success"
            call.reason = pds_outcome(patient)
        await self._to_cache(patient)
        return patient

    async def search_patients(
        self, query: PdsSearchQuery, *, correlation_id: str | None = None
    ) -> PdsSearchResult:
        """PDS search (PDS FHIR API, search-patient): application-restricted access gets one patient, and only a
        unique match; several matches come back as TOO_MANY_MATCHES. Not cached: a search is about demographics,
        which are never a cache key. Audited without the demographics (their count of matches and scores only)."""
        async with outbound_call(self._auditor, self._metrics, transaction="PDS", stage="pds") as call:
            request_id = str(uuid.uuid4())
            call.details.update({"operation": "search", "request_id": request_id, "mode": query.mode})
            status, body, attempts = await self._get(
                f"{self._base_url}/Patient", request_id, correlation_id, params=search_parameters(query)
            )
            call.details["attempts"] = attempts
            result = self._interpret_search(status, body)
            call.details.update({"matches": len(result.matches), "too_many": result.too_many,
                                 "scores": [match.score for match in result.matches]})
            call.outcome = "success"
            call.reason = "too-many-matches" if result.too_many else f"matches:{len(result.matches)}"
        return result

    def _interpret_search(self, status: int, body: Any) -> PdsSearchResult:
        code = first_spine_code(body)
        if status == 200:
            if isinstance(body, Mapping) and body.get("resourceType") == "OperationOutcome":
                if code == TOO_MANY_MATCHES:
                    return PdsSearchResult(too_many=True)
                raise UpstreamInvalidResponse("PDS search answered an unexpected outcome", service="pds",
                                              status=status, spine_code=code)
            if not isinstance(body, Mapping) or body.get("resourceType") != "Bundle":
                raise UpstreamInvalidResponse("PDS search answer is not a Bundle", service="pds", status=status)
            return PdsSearchResult(tuple(_search_matches(body)))
        if status in (401, 403):
            raise UpstreamUnauthorised("PDS refused our credentials", service="pds", status=status, spine_code=code)
        if status in (408, 429) or status >= 500:
            raise UpstreamUnavailable("PDS unavailable", service="pds", status=status, spine_code=code)
        if 400 <= status < 500:
            # INVALID_SEARCH_DATA, MISSING_VALUE...: our request was wrong, which is our trouble, never "no match".
            raise UpstreamRejectedRequest("PDS rejected the search", service="pds", status=status, spine_code=code)
        raise UpstreamInvalidResponse("unexpected PDS status", service="pds", status=status)

    async def _read(self, number: str, request_id: str, correlation_id: str | None) -> tuple[int, Any, int]:
        return await self._get(f"{self._base_url}/Patient/{number}", request_id, correlation_id, subject=number)

    async def _get(
        self, url: str, request_id: str, correlation_id: str | None, *, params: Any = None,
        subject: str | None = None,
    ) -> tuple[int, Any, int]:
        headers = {
            "Accept": FHIR_JSON,
            "X-Request-ID": request_id,  # the same id on every retry (SPEC §5.3)
            "NHSD-End-User-Organisation-ODS": self._settings.end_user_org_ods,
        }
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id.replace(".", "-")  # PDS: avoid '.' in the correlation id
        attempts = 0
        for renewal in (False, True):
            if self._tokens is not None:
                headers["Authorization"] = f"Bearer {await self._tokens.token()}"
            # The breaker is PDS's base URL's; the patient is counted once among its failures (transport.py).
            result = await self._upstream.request("GET", url, headers=headers, params=params,
                                                  endpoint=self._base_url, subject=subject)
            attempts += result.attempts
            status = result.response.status_code
            if status == 401 and self._tokens is not None and not renewal:
                # The shared token may have been revoked or expired early: renew once, then give up.
                await self._tokens.invalidate()
                continue
            return status, parse_json(result.response.content), attempts
        raise AssertionError("unreachable")  # pragma: no cover

    def _interpret(self, requested: str, status: int, body: Any) -> PdsPatient:
        code = first_spine_code(body)
        if status == 200:
            if not isinstance(body, Mapping) or body.get("resourceType") != "Patient":
                raise UpstreamInvalidResponse("PDS answer is not a Patient", service="pds", status=status)
            return parse_patient(body, requested)
        if status == 404:
            # RESOURCE_NOT_FOUND, or INVALIDATED_RESOURCE (invalidated with no successor, or REDACTED): SPEC §5.6
            raise PatientNotFound(detail=code or "RESOURCE_NOT_FOUND")
        if status == 400 and code == "INVALID_RESOURCE_ID":
            raise InvalidNhsNumber(detail="PDS INVALID_RESOURCE_ID")
        if status in (401, 403):
            raise UpstreamUnauthorised("PDS refused our credentials", service="pds", status=status, spine_code=code)
        if status in (408, 429) or status >= 500:
            raise UpstreamUnavailable("PDS unavailable", service="pds", status=status, spine_code=code)
        if 400 <= status < 500:
            raise UpstreamRejectedRequest("PDS rejected the request", service="pds", status=status, spine_code=code)
        raise UpstreamInvalidResponse("unexpected PDS status", service="pds", status=status)

    async def _from_cache(self, number: str) -> PdsPatient | None:
        if self._cache is None or self._keys is None:
            return None
        try:
            raw = await self._cache.get(self._keys.pds_patient(number))
        except CacheError:
            return None
        if raw is None:
            return None
        try:
            return patient_from_json(raw)
        except (ValueError, TypeError, KeyError):
            return None

    async def _to_cache(self, patient: PdsPatient) -> None:
        if self._cache is None or self._keys is None:
            return
        try:
            await self._cache.set(
                self._keys.pds_patient(patient.requested_nhs_number or patient.nhs_number),
                patient_to_json(patient),
                self._settings.ttl_pds_seconds,
            )
        except CacheError as error:
            log.warning("pds_cache_failed", error=str(error))


# --- search (PDS FHIR API, search-patient) ---------------------------------------------------------------------
def search_parameters(query: PdsSearchQuery) -> list[tuple[str, str]]:
    """The query string of a PDS search. Application-restricted access may ask for one result only (more is 403
    INVALID_VALUE); a non-fuzzy search includes history, as PDS advises for a unique match."""
    params: list[tuple[str, str]] = [("family", query.family), ("birthdate", f"eq{query.birth_date}")]
    if query.given:
        params.append(("given", query.given))
    if query.gender:
        params.append(("gender", query.gender))
    if query.postcode:
        params.append(("address-postalcode", query.postcode))
    if query.phone:
        params.append(("phone", query.phone))
    if query.email:
        params.append(("email", query.email))
    if query.mode == "fuzzy":
        params.append(("_fuzzy-match", "true"))  # a fuzzy search always searches history
    elif query.mode == "exact":
        params.append(("_exact-match", "true"))
    else:
        params.append(("_history", "true"))
    params.append(("_max-results", "1"))
    return params


def _search_matches(bundle: Mapping[str, Any]) -> list[PdsSearchMatch]:
    matches: list[PdsSearchMatch] = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
            continue
        try:
            score = float((entry.get("search") or {}).get("score", 0.0))
        except (TypeError, ValueError):
            score = 0.0  # an unreadable score is no evidence of a match
        patient = parse_patient(resource, "")
        # A search asked for no number: the record found is current (PDS returns the superseding record).
        matches.append(PdsSearchMatch(replace(patient, requested_nhs_number=patient.nhs_number), score))
    matches.sort(key=lambda match: match.score, reverse=True)
    return matches


# --- Patient resource -> PdsPatient (SPEC §5.4) -----------------------------------------------------------------
def parse_patient(resource: Mapping[str, Any], requested: str) -> PdsPatient:
    number = _nhs_number(resource)
    if not number:
        raise UpstreamInvalidResponse("PDS Patient has no NHS number", service="pds")
    name = _current_name(resource.get("name") or [])
    return PdsPatient(
        nhs_number=number,
        family=name.get("family"),
        given=tuple(name.get("given") or ()),
        prefix=tuple(name.get("prefix") or ()),
        gender=resource.get("gender"),
        birth_date=resource.get("birthDate"),
        addresses=_addresses(resource),
        telecom=_telecom(resource),
        gp_ods_code=_gp_ods_code(resource),
        security=_security(resource),
        deceased=_deceased(resource),
        requested_nhs_number=requested,
    )


def _nhs_number(resource: Mapping[str, Any]) -> str:
    """The logical id, else the NHS number identifier (a search entry may carry only the latter)."""
    number = str(resource.get("id") or "")
    if number:
        return number
    identifiers = resource.get("identifier") or []
    return next((str(i.get("value")) for i in identifiers if i.get("system") == NHS_NUMBER_SYSTEM), "")


def _security(resource: Mapping[str, Any]) -> str:
    """The first confidentiality code (``U``, ``R``, ``V``, ``REDACTED``); unrestricted when none."""
    for label in (resource.get("meta") or {}).get("security") or []:
        if label.get("code"):
            return str(label["code"])
    return "U"


def _gp_ods_code(resource: Mapping[str, Any]) -> str | None:
    for practitioner in resource.get("generalPractitioner") or []:
        identifier = practitioner.get("identifier") or {}
        if identifier.get("value"):
            return str(identifier["value"])
    return None


def _addresses(resource: Mapping[str, Any]) -> tuple[Address, ...]:
    return tuple(
        Address(
            lines=tuple(str(line) for line in address.get("line") or []),
            city=address.get("city"),
            postcode=address.get("postalCode"),
            use=address.get("use"),
        )
        for address in resource.get("address") or []
    )


def _telecom(resource: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(item.get("system") or ""), str(item.get("value") or ""))
        for item in resource.get("telecom") or []
        if item.get("value")
    )


def _deceased(resource: Mapping[str, Any]) -> str | None:
    deceased = resource.get("deceasedDateTime")
    if deceased is None and resource.get("deceasedBoolean") is True:
        return "unknown"
    return deceased


def _current_name(names: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    for use in ("usual", "official", None):
        for name in names:
            if use is None or name.get("use") == use:
                if not (name.get("period") or {}).get("end"):
                    return name
    return names[0] if names else {}


def patient_to_json(patient: PdsPatient) -> bytes:
    return json.dumps(asdict(patient)).encode()


def patient_from_json(raw: bytes) -> PdsPatient:
    data = json.loads(raw)
    data["addresses"] = tuple(Address(**{**a, "lines": tuple(a["lines"])}) for a in data.get("addresses", []))
    data["telecom"] = tuple(tuple(item) for item in data.get("telecom", []))
    for name in ("given", "prefix"):
        data[name] = tuple(data.get(name) or ())
    return PdsPatient(**data)


__all__ = [
    "PdsFhirClient", "parse_patient", "patient_from_json", "patient_to_json", "pds_outcome", "search_parameters",
]
