"""The simulator's HTTP endpoints: PDS (OAuth token + Patient), SDS (Device, Endpoint), GP Connect via an SSP.

Paths (under one base URL)::

    POST /pds/oauth2/token                                   NHS API platform token endpoint (client assertion)
    GET  /pds/personal-demographics/FHIR/R4/Patient/{id}     PDS FHIR R4
    GET  /pds/personal-demographics/FHIR/R4/Patient?...      PDS search (simulator/pds_search.py)
    GET  /sds/spine-directory/FHIR/R4/Device|Endpoint        SDS FHIR
    POST /ssp/{provider root}/Patient/$gpc.getstructuredrecord   Spine Secure Proxy -> GP Connect provider
    GET  /simulator/patients                                 what is loaded (test patients only), skipped files
    PUT  /simulator/practices/{ods}/failure?status=503|&hang=true   the practice's provider fails every request
    DELETE /simulator/practices/{ods}/failure                ... until this (SimulatorState.fail_practice)

Each service checks what the real one checks, answers with the real error shapes, and sleeps its configured
latency first. Per-request state (tokens, jti, attempts per request id, counters) lives in ``SimulatorState``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import jwt
from fastapi import FastAPI, Request, Response
from starlette.datastructures import Headers

from xhuma.compression import GzipMiddleware, GzipPolicy
from xhuma.nhs.nhs_number import is_valid_nhs_number
from xhuma.nhs.operation_outcome import operation_outcome, parse_json
from xhuma.nhs.sds import (
    ASID_SYSTEM,
    GPC_STRUCTURED_INTERACTION,
    INTERACTION_ID_SYSTEM,
    ODS_ORGANIZATION_CODE,
    PARTY_KEY_SYSTEM,
)
from xhuma.nhs.simulator import pds_search
from xhuma.nhs.simulator.patients import Fault
from xhuma.nhs.simulator.provider import (
    ProviderError,
    area_not_supported,
    bad_request,
    check_jwt,
    parse_parameters,
    select_areas,
    synthetic_bundle,
)
from xhuma.nhs.simulator.records import Practice, SimulatedPatient, SimulatorData
from xhuma.nhs.simulator.terminology import terminology_router

TOKEN_PATH = "/pds/oauth2/token"  # noqa: S105 - a URL path, not a secret
PDS_PATH = "/pds/personal-demographics/FHIR/R4"
SDS_PATH = "/sds/spine-directory/FHIR/R4"
SSP_PATH = "/ssp"
PDS_ERROR_SYSTEM = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
STRUCTURED_OPERATION = "/Patient/$gpc.getstructuredrecord"
DEFAULT_API_KEY = "xhuma-simulator-api-key"


@dataclass
class SimulatorConfig:
    data: SimulatorData
    api_key: str = DEFAULT_API_KEY  # PDS client assertion iss/sub
    trusted_keys: dict[str, Any] = field(default_factory=dict)  # kid -> RSA public key
    sds_api_key: str | None = None  # None: any non-empty apikey
    token_lifetime_seconds: int = 599
    pds_latency_ms: int = 0
    sds_latency_ms: int = 0
    gpc_latency_ms: int = 0
    hang_seconds: float = 120.0  # how long the timeout faults hold a request
    gzip_level: int = 1  # answers gzip-compressed for clients that accept it, as the API platform does (0: never)
    gzip_bomb_bytes: int = 128 * 1024 * 1024  # what the GPC_GZIP_BOMB answer inflates to
    close_idle_after_seconds: float | None = None  # drop requests on connections idle this long (server.py)
    close_idle_reset: bool = False  # ... with a TCP reset instead of a close


@dataclass
class SimulatorState:
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (epoch seconds)
    used_jti: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)  # per endpoint: token, pds, sds-device, sds-endpoint, gpc
    attempts: Counter[str] = field(default_factory=Counter)  # per request id (flaky faults)
    fail_next: dict[str, deque[int]] = field(default_factory=dict)  # injected statuses per service
    gpc_requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))
    pds_requests: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=20))  # headers, no token
    gzip_bomb: bytes | None = None  # made on first use
    failing_practices: dict[str, int | None] = field(default_factory=dict)  # ODS -> status (None: hang)

    def fail_practice(self, ods: str, status: int | None = 503) -> None:
        """The practice's provider system fails every structured record request with ``status`` (``None``: holds
        it as the timeout faults do) until ``restore_practice``: a GP practice that is down, for its breaker."""
        self.failing_practices[ods.upper()] = status

    def restore_practice(self, ods: str) -> None:
        self.failing_practices.pop(ods.upper(), None)

    def inject(self, service: str, *statuses: int) -> None:
        """Answer the next requests to ``service`` (pds | sds | gpc | token) with these statuses."""
        self.fail_next.setdefault(service, deque()).extend(statuses)

    def _injected(self, service: str) -> int | None:
        queue = self.fail_next.get(service)
        return queue.popleft() if queue else None


def _json(body: Any, status: int = 200, *, media_type: str = "application/fhir+json",
          headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=media_type, headers=dict(headers or {}))


def _pds_error(status: int, code: str, display: str, diagnostics: str | None = None,
               headers: Mapping[str, str] | None = None) -> Response:
    issue_code = {400: "value", 401: "forbidden", 403: "forbidden", 404: "not-found", 408: "timeout",
                  429: "throttled"}.get(status, "exception")
    return _json(operation_outcome(issue_code, code, display, system=PDS_ERROR_SYSTEM, diagnostics=diagnostics),
                 status, headers=headers)


def _gpc_error(error: ProviderError) -> Response:
    return _json(error.outcome(), error.status, media_type="application/fhir+json;charset=utf-8")


def create_simulator_app(config: SimulatorConfig) -> FastAPI:
    app = FastAPI(title="Xhuma NHS simulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GzipMiddleware, policy=GzipPolicy(level=config.gzip_level))
    state = SimulatorState()
    app.state.simulator = state
    app.state.config = config
    data = config.data

    async def latency(milliseconds: int) -> None:
        if milliseconds > 0:
            await asyncio.sleep(milliseconds / 1000)

    # --- NHS API platform OAuth (SPEC §5.2) ------------------------------------------------------------------------
    @app.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        state.requests["token"] += 1
        await latency(config.pds_latency_ms)
        if (status := state._injected("token")) is not None:
            return _json({"error": "server_error"}, status, media_type="application/json")
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode("latin-1")).items()}

        def oauth_error(status: int, error: str, description: str) -> Response:
            return _json({"error": error, "error_description": description}, status, media_type="application/json")

        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "grant_type is missing or not client_credentials")
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return oauth_error(400, "invalid_request", "Missing or invalid client_assertion_type")
        assertion = form.get("client_assertion")
        if not assertion:
            return oauth_error(400, "invalid_request", "Missing client_assertion")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return oauth_error(400, "invalid_request", "Malformed JWT in client_assertion")
        if header.get("alg") != "RS512":
            return oauth_error(400, "invalid_request", "Invalid 'alg' header in JWT - unsupported JWT algorithm")
        kid = header.get("kid")
        if not kid:
            return oauth_error(400, "invalid_request", "Missing 'kid' header in JWT")
        key = config.trusted_keys.get(kid)
        if key is None:
            return oauth_error(401, "invalid_request", "Invalid 'kid' header in JWT - no matching public key")
        token_url = str(request.url).split("?", 1)[0]
        try:
            claims = jwt.decode(
                assertion, key, algorithms=["RS512"], audience=token_url,
                options={"require": ["iss", "sub", "aud", "jti", "exp"]},
            )
        except jwt.InvalidSignatureError:
            return oauth_error(401, "public_key error", "JWT signature verification failed")
        except jwt.ExpiredSignatureError:
            return oauth_error(400, "invalid_request", "Invalid exp claim in JWT - JWT has expired")
        except jwt.InvalidAudienceError:
            return oauth_error(401, "invalid_request", "Missing or non-matching aud claim in JWT")
        except jwt.PyJWTError as error:
            return oauth_error(400, "invalid_request", f"Invalid JWT: {type(error).__name__}")
        if claims["iss"] != claims["sub"] or claims["iss"] != config.api_key:
            return oauth_error(401, "invalid_request", "Missing or non-matching iss/sub claims in JWT")
        if int(claims["exp"]) > time.time() + 300 + 5:
            return oauth_error(400, "invalid_request", "Invalid exp claim in JWT - more than 5 minutes in future")
        if claims["jti"] in state.used_jti:
            return oauth_error(400, "invalid_request", "Non-unique jti claim in JWT")
        state.used_jti.add(claims["jti"])
        access_token = uuid.uuid4().hex
        state.tokens[access_token] = time.time() + config.token_lifetime_seconds
        return _json(
            {
                "access_token": access_token,
                "expires_in": str(config.token_lifetime_seconds),  # a string, as the platform sends it
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
            },
            media_type="application/json",
        )

    # --- PDS FHIR R4 (SPEC §5.3-5.7) ------------------------------------------------------------------------------
    @app.get(PDS_PATH + "/Patient")
    async def pds_patient_search(request: Request) -> Response:
        state.requests["pds-search"] += 1
        await latency(config.pds_latency_ms)
        echo = {"X-Request-ID": request.headers.get("x-request-id") or ""}
        if (status := state._injected("pds")) is not None:
            return _pds_error(status, "SERVICE_UNAVAILABLE", "Service unavailable", headers=echo)
        bearer = request.headers.get("authorization", "")[7:]
        if not bearer or state.tokens.get(bearer, 0) <= time.time():
            return _pds_error(401, "ACCESS_DENIED", "Access Denied - Unauthorised", "Invalid Access Token",
                              headers=echo)
        values: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            values.setdefault(name, []).append(value)
        try:
            search = pds_search.parse_search(values)
        except pds_search.SearchRejected as rejected:
            return _pds_error(rejected.status, rejected.code, rejected.display, rejected.diagnostics, headers=echo)
        records = [patient.pds for patient in data.patients.values() if patient.pds is not None]
        matches = pds_search.run_search(search, records)
        if len(matches) > search.max_results:
            outcome = operation_outcome("multiple-matches", "TOO_MANY_MATCHES", "Too Many Matches",
                                        system=PDS_ERROR_SYSTEM, severity="information")
            return _json(outcome, headers=echo)
        base = str(request.url).split("?", 1)[0].rsplit("/Patient", 1)[0]
        return _json(pds_search.searchset(matches, base, datetime.now(UTC).isoformat()), headers=echo)

    @app.get(PDS_PATH + "/Patient/{nhs_number}")
    async def pds_patient(nhs_number: str, request: Request) -> Response:
        state.requests["pds"] += 1
        state.pds_requests.append({k: v for k, v in request.headers.items() if k.lower() != "authorization"})
        await latency(config.pds_latency_ms)
        request_id = request.headers.get("x-request-id")
        echo = {"X-Request-ID": request_id or ""}
        if request.headers.get("x-correlation-id"):
            echo["X-Correlation-ID"] = request.headers["x-correlation-id"]
        if (status := state._injected("pds")) is not None:
            return _pds_error(status, "SERVICE_UNAVAILABLE", "Service unavailable", headers=echo)
        rejected = pds_rejection(request, request_id, echo)
        if rejected is not None:
            return rejected
        assert request_id is not None  # pds_rejection refuses a request without one
        if not (len(nhs_number) == 10 and is_valid_nhs_number(nhs_number)):
            return _pds_error(400, "INVALID_RESOURCE_ID", "Resource Id is invalid", headers=echo)
        patient = data.patients.get(nhs_number)
        faulted = await pds_fault(patient.fault if patient else None, request_id, echo)
        if faulted is not None:
            return faulted
        if patient is None or patient.pds is None:
            return _pds_error(404, "RESOURCE_NOT_FOUND", "Resource not found", headers=echo)
        version = str((patient.pds.get("meta") or {}).get("versionId") or "1")
        return _json(patient.pds, headers={**echo, "ETag": f'W/"{version}"'})

    def pds_rejection(request: Request, request_id: str | None, echo: dict[str, str]) -> Response | None:
        """PDS's answer to a read without a live access token or a UUID X-Request-ID."""
        authorization = request.headers.get("authorization", "")
        bearer = authorization[7:] if authorization.startswith("Bearer ") else ""
        if not bearer or state.tokens.get(bearer, 0) <= time.time():
            return _pds_error(401, "ACCESS_DENIED", "Access Denied - Unauthorised",
                              "Invalid Access Token", headers=echo)
        if not request_id:
            return _pds_error(400, "MISSING_VALUE", "Missing value", "Invalid request with error - "
                              "X-Request-ID header must be supplied to access this resource", headers=echo)
        try:
            uuid.UUID(request_id)
        except ValueError:
            return _pds_error(400, "INVALID_VALUE", "Provided value is invalid",
                              "Invalid value - X-Request-ID header must be a UUID", headers=echo)
        return None

    async def pds_fault(fault: Fault | None, request_id: str, echo: dict[str, str]) -> Response | None:
        """The failing answer of a PDS fault patient, if this read is one to fail."""
        if fault is Fault.PDS_FLAKY:
            state.attempts[f"pds:{request_id}"] += 1
            if state.attempts[f"pds:{request_id}"] <= 2:
                return _pds_error(503, "SERVICE_UNAVAILABLE", "Service unavailable", headers=echo)
        if fault is Fault.PDS_UNAVAILABLE:
            return _pds_error(500, "SERVER_ERROR", "Internal server error", headers=echo)
        if fault is Fault.PDS_TIMEOUT:
            await asyncio.sleep(config.hang_seconds)
            return _pds_error(408, "UNABLE_TO_CALL_SERVICE", "Unable to call service", headers=echo)
        if fault is Fault.INVALIDATED:
            return _pds_error(404, "INVALIDATED_RESOURCE", "Resource that has been marked as invalid was requested",
                              headers=echo)
        return None

    # --- SDS FHIR (SPEC §6) ---------------------------------------------------------------------------------------
    def sds_guard(request: Request, counter: str) -> Response | None:
        state.requests[counter] += 1
        if (status := state._injected("sds")) is not None:
            return _json({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception", "diagnostics": "injected failure"}]}, status)
        apikey = request.headers.get("apikey")
        if not apikey or (config.sds_api_key is not None and apikey != config.sds_api_key):
            return _json({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "forbidden", "diagnostics": "Invalid API key"}]}, 401)
        return None

    def search_params(request: Request) -> tuple[str | None, str | None, str | None, Response | None]:
        organization = request.query_params.get("organization", "")
        ods = organization.split("|", 1)[1].upper() if organization.startswith(ODS_ORGANIZATION_CODE + "|") else None
        interaction = party_key = None
        for identifier in request.query_params.getlist("identifier"):
            system, _, value = identifier.partition("|")
            if system == INTERACTION_ID_SYSTEM:
                interaction = value
            elif system == PARTY_KEY_SYSTEM:
                party_key = value
            else:
                return None, None, None, _json({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "invalid", "diagnostics": "Invalid identifier system"}]}, 400)
        if ods is None and interaction is None:
            return None, None, None, _json({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "required", "diagnostics": "Missing or invalid organization"}]}, 400)
        return ods, interaction, party_key, None

    def searchset(resources: list[dict[str, Any]]) -> Response:
        return _json({
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "searchset",
            "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "search": {"mode": "match"}}
                      for resource in resources],
        })

    @app.get(SDS_PATH + "/Device")
    async def sds_device(request: Request) -> Response:
        await latency(config.sds_latency_ms)
        if (refusal := sds_guard(request, "sds-device")) is not None:
            return refusal
        ods, interaction, party_key, problem = search_params(request)
        if problem is not None:
            return problem
        devices = []
        for practice in data.practices.values():
            if (ods and practice.ods != ods) or (interaction and interaction != GPC_STRUCTURED_INTERACTION):
                continue
            if party_key and party_key != practice.party_key:
                continue
            devices.append({
                "resourceType": "Device",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "device:" + practice.ods)),
                "identifier": [
                    {"system": ASID_SYSTEM, "value": practice.asid},
                    {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
                ],
                "extension": [{
                    "url": "https://fhir.nhs.uk/StructureDefinition/Extension-SDS-NhsServiceInteractionId",
                    "valueReference": {"identifier": {"system": INTERACTION_ID_SYSTEM,
                                                      "value": GPC_STRUCTURED_INTERACTION}},
                }],
                "owner": {"identifier": {"system": ODS_ORGANIZATION_CODE, "value": practice.ods}},
            })
        return searchset(devices)

    @app.get(SDS_PATH + "/Endpoint")
    async def sds_endpoint(request: Request) -> Response:
        await latency(config.sds_latency_ms)
        if (refusal := sds_guard(request, "sds-endpoint")) is not None:
            return refusal
        ods, interaction, party_key, problem = search_params(request)
        if problem is not None:
            return problem
        endpoints = []
        for practice in data.practices.values():
            if (ods and practice.ods != ods) or (interaction and interaction != GPC_STRUCTURED_INTERACTION):
                continue
            if party_key and party_key != practice.party_key:
                continue
            for number, address in enumerate(practice.endpoints):
                endpoints.append({
                    "resourceType": "Endpoint",
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"endpoint:{practice.ods}:{number}")),
                    "status": "active",
                    "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                       "code": "hl7-fhir-msg", "display": "HL7 FHIR Messaging"},
                    "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                                 "code": "any", "display": "Any"}]}],
                    "address": address,
                    "managingOrganization": {"identifier": {"system": ODS_ORGANIZATION_CODE, "value": practice.ods}},
                    "identifier": [
                        {"system": PARTY_KEY_SYSTEM, "value": practice.party_key},
                        {"system": "https://fhir.nhs.uk/Id/nhsMhsFQDN", "value": "gpconnect.simulator.xhuma.invalid"},
                    ],
                    "extension": [{
                        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-SDS-NhsServiceInteractionId",
                        "valueReference": {"identifier": {"system": INTERACTION_ID_SYSTEM,
                                                          "value": GPC_STRUCTURED_INTERACTION}},
                    }],
                })
        return searchset(endpoints)

    # --- Spine Secure Proxy + GP Connect provider (SPEC §7) -------------------------------------------------------
    @app.post(SSP_PATH + "/{target:path}")
    async def structured_record(target: str, request: Request) -> Response:
        state.requests["gpc"] += 1
        await latency(config.gpc_latency_ms)
        body_bytes = await request.body()
        try:
            return await _structured_record(target, request, body_bytes)
        except ProviderError as error:
            return _gpc_error(error)

    async def _structured_record(target: str, request: Request, body_bytes: bytes) -> Response:
        headers = request.headers
        record: dict[str, Any] = {"headers": {k: v for k, v in headers.items() if k.lower().startswith("ssp-")}}
        state.gpc_requests.append(record)
        if (status := state._injected("gpc")) is not None:
            raise ProviderError(status, "exception", "INTERNAL_SERVER_ERROR", "injected failure")
        practice, root = await ssp_target(target, headers)
        content_type = headers.get("content-type", "")
        if "json" not in content_type:
            raise bad_request("Content-Type must be application/fhir+json")
        # Provider: the audit JWT, then the Parameters.
        claims = check_jwt(headers.get("authorization"), root)
        record["jwt"] = claims
        body = parse_json(body_bytes)
        if body is None:
            raise bad_request("Request body is not valid JSON")
        record["parameters"] = body
        today = datetime.now(UTC).date()
        structured = parse_parameters(body, today)
        patient = data.patients.get(structured.nhs_number)
        if patient is None or patient.pds is None:
            raise _not_found()
        if patient.fault is Fault.SUPERSEDED or patient.practice_ods != practice.ods:
            raise _not_found()  # not registered here under this number
        security = ((patient.pds.get("meta") or {}).get("security") or [{}])[0].get("code", "U")
        if security != "U" or patient.pds.get("deceasedDateTime"):
            raise _not_found()  # SPEC §7.5: sensitive and deceased patients are PATIENT_NOT_FOUND
        return await _answer(patient, structured, headers["Ssp-TraceID"], practice.ods)

    async def ssp_target(target: str, headers: Headers) -> tuple[Practice, str]:
        """SSP: the four Spine headers, the interaction, the target registered in SDS, the receiving ASID."""
        for name in ("Ssp-TraceID", "Ssp-From", "Ssp-To", "Ssp-InteractionID"):
            if not headers.get(name):
                raise bad_request(f"Missing header {name}")
        try:
            uuid.UUID(headers["Ssp-TraceID"])
        except ValueError:
            raise bad_request("Ssp-TraceID must be a UUID") from None
        if headers["Ssp-InteractionID"] != GPC_STRUCTURED_INTERACTION or not target.endswith(STRUCTURED_OPERATION):
            raise bad_request("Ssp-InteractionID does not match the requested operation")
        root = _normalise_target(target[: -len(STRUCTURED_OPERATION)])
        practice = data.practice_for_endpoint(root)
        if practice is None:
            raise bad_request("Target URL is not a GP Connect endpoint registered in SDS")
        if practice.ods in state.failing_practices:
            status = state.failing_practices[practice.ods]
            if status is None:
                await asyncio.sleep(config.hang_seconds)
                status = 504
            raise ProviderError(status, "exception", "INTERNAL_SERVER_ERROR", "Simulated practice failure")
        if headers["Ssp-To"] != practice.asid:
            raise ProviderError(403, "forbidden", "ACCESS DENIED", "Receiver ASID is not the endpoint's ASID")
        return practice, root

    async def _answer(patient: SimulatedPatient, structured: Any, trace_id: str, ods: str) -> Response:
        fault = patient.fault
        if fault is Fault.NO_CONSENT:
            raise ProviderError(403, "forbidden", "NO_PATIENT_CONSENT", "Patient has dissented from sharing")
        if fault is Fault.ACCESS_DENIED:
            raise ProviderError(403, "forbidden", "ACCESS DENIED", "Access Record Structured is disabled")
        if fault is Fault.GPC_INTERNAL_ERROR:
            raise ProviderError(500, "exception", "INTERNAL_SERVER_ERROR", "Simulated provider failure")
        if fault is Fault.GPC_UNAVAILABLE:
            raise ProviderError(503, "exception", "INTERNAL_SERVER_ERROR", "Simulated provider unavailable")
        if fault is Fault.GPC_TIMEOUT:
            await asyncio.sleep(config.hang_seconds)
            raise ProviderError(504, "exception", "INTERNAL_SERVER_ERROR", "Simulated provider timeout")
        if fault is Fault.GPC_FLAKY:
            state.attempts[f"gpc:{trace_id}"] += 1
            if state.attempts[f"gpc:{trace_id}"] <= 2:
                raise ProviderError(502, "exception", "INTERNAL_SERVER_ERROR", "Simulated bad gateway")
        if fault is Fault.GPC_GZIP_BOMB:
            if state.gzip_bomb is None:
                state.gzip_bomb = await asyncio.to_thread(_gzip_of_zeros, config.gzip_bomb_bytes)
            return Response(state.gzip_bomb, media_type="application/fhir+json;charset=utf-8",
                            headers={"Content-Encoding": "gzip", "Cache-Control": "no-store"})
        if fault is Fault.MALFORMED_JSON:
            return Response('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": ',
                            media_type="application/fhir+json;charset=utf-8", headers={"Cache-Control": "no-store"})
        assert patient.pds is not None
        if patient.bundle is not None:
            source = patient.bundle
        elif fault is Fault.DEMOGRAPHICS_MISMATCH:
            source = synthetic_bundle(patient.pds, ods, birth_date="1901-01-01")
        else:
            source = synthetic_bundle(patient.pds, ods)
        bundle = select_areas(source, structured, trace_id)
        if fault is Fault.AREA_NOT_SUPPORTED and "investigations" in structured.areas:
            bundle["entry"] = [
                entry for entry in bundle["entry"]
                if (entry.get("resource") or {}).get("code", {}).get("coding", [{}])[0].get("code") != "887191000000108"
            ]
            bundle["entry"].append({"resource": area_not_supported("Investigations")})
        return Response(json.dumps(bundle), media_type="application/fhir+json;charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    # --- developer conveniences -----------------------------------------------------------------------------------
    @app.get("/simulator/patients")
    async def patients() -> Response:
        return _json({
            "patients": [
                {"nhs_number": p.nhs_number, "fault": p.fault.value if p.fault else None,
                 "practice": p.practice_ods, "sources": p.sources}
                for p in data.patients.values()
            ],
            "practices": [{"ods": p.ods, "asid": p.asid, "endpoints": list(p.endpoints)}
                          for p in data.practices.values()],
            "skipped": [{"file": name, "reason": reason} for name, reason in data.skipped],
        }, media_type="application/json")

    @app.put("/simulator/practices/{ods}/failure")
    async def fail_practice(ods: str, status: int = 503, hang: bool = False) -> dict[str, Any]:
        state.fail_practice(ods, None if hang else status)
        return {"failing": sorted(state.failing_practices)}

    @app.delete("/simulator/practices/{ods}/failure")
    async def restore_practice(ods: str) -> dict[str, Any]:
        state.restore_practice(ods)
        return {"failing": sorted(state.failing_practices)}

    app.include_router(terminology_router())  # the NHS England Terminology Server (issue 13)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _gzip_of_zeros(size: int) -> bytes:
    """A small gzip member that inflates to ``size`` zero bytes (about a thousand to one)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(min(size, 1024 * 1024))
    parts = []
    left = size
    while left > 0:
        parts.append(compressor.compress(block[: min(left, len(block))]))
        left -= len(block)
    parts.append(compressor.flush())
    return b"".join(parts)


def _not_found() -> ProviderError:
    return ProviderError(404, "not-found", "PATIENT_NOT_FOUND", "Patient record not found")


def _normalise_target(target: str) -> str:
    # Some proxies collapse the '//' of the embedded scheme; accept both spellings of the provider root.
    for scheme in ("https:/", "http:/"):
        if target.startswith(scheme) and not target.startswith(scheme + "/"):
            target = scheme + "/" + target[len(scheme):]
    return target.rstrip("/")


__all__ = [
    "DEFAULT_API_KEY",
    "PDS_PATH",
    "SDS_PATH",
    "SSP_PATH",
    "TOKEN_PATH",
    "SimulatorConfig",
    "SimulatorState",
    "create_simulator_app",
]
