"""The simulator behaves like the services: it rejects what a GP Connect provider, the SSP and the NHS API
platform reject, with the status and Spine code the specifications give (SPEC §5.2, §7.1-7.5)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from xhuma.config import Settings
from xhuma.nhs.auth import (
    CLIENT_ASSERTION_TYPE,
    encode_unsigned,
    generate_rsa_key,
    gp_connect_claims,
    load_private_key,
)
from xhuma.nhs.gpconnect import build_parameters
from xhuma.nhs.sds import GPC_STRUCTURED_INTERACTION
from xhuma.nhs.simulator.patients import DEMO_PATIENT
from xhuma.nhs.simulator.records import provider_root, synthetic_asid
from xhuma.nhs.simulator.server import RunningSimulator
from xhuma.ports import CallerIdentity

from .conftest import API_KEY, KID

ROOT = provider_root("B82617")
NHS = "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture
async def http(simulator: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    assert simulator.urls is not None
    async with httpx.AsyncClient(base_url=simulator.urls.base, timeout=5) as client:
        yield client


def claims(**changes: Any) -> dict[str, Any]:
    value = gp_connect_claims(Settings(), CallerIdentity(user_id="u1", user_name="SMITH, Jane"), ROOT, time.time())
    for name, new in changes.items():
        if new is None:
            value.pop(name, None)
        else:
            value[name] = new
    return value


def spine_headers(**changes: str | None) -> dict[str, str]:
    headers = {
        "Ssp-TraceID": str(uuid.uuid4()),
        "Ssp-From": "200000000359",
        "Ssp-To": synthetic_asid("B82617"),
        "Ssp-InteractionID": GPC_STRUCTURED_INTERACTION,
        "Authorization": "Bearer " + encode_unsigned(claims()),
        "Content-Type": "application/fhir+json;charset=utf-8",
        "Accept": "application/fhir+json;charset=utf-8",
    }
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def parameters(*extra: dict[str, Any], nhs_number: str = DEMO_PATIENT) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patientNHSNumber", "valueIdentifier": {"system": NHS, "value": nhs_number}}, *extra]}


async def post(http: httpx.AsyncClient, body: Any = None, **header_changes: str | None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body if body is not None else parameters()).encode()
    return await http.post(f"/ssp/{ROOT}/Patient/$gpc.getstructuredrecord", content=content,
                           headers=spine_headers(**header_changes))


def spine_code(response: httpx.Response) -> str:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["meta"]["profile"] == ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-OperationOutcome-1"]
    coding = outcome["issue"][0]["details"]["coding"][0]
    assert coding["system"] == "https://fhir.nhs.uk/STU3/CodeSystem/Spine-ErrorOrWarningCode-1"
    return str(coding["code"])


async def test_a_well_formed_request_gets_the_bundle_with_the_trace_id(http: httpx.AsyncClient) -> None:
    response = await post(http, parameters({"name": "includeAllergies", "part": [
        {"name": "includeResolvedAllergies", "valueBoolean": False}]}),
        Ssp_TraceID="0b5f5e47-8c7a-4a5b-9f0e-8d3b1c2a4f60")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["cache-control"] == "no-store"
    bundle = response.json()
    assert bundle["id"] == "0b5f5e47-8c7a-4a5b-9f0e-8d3b1c2a4f60"
    codes = [r["code"]["coding"][0]["code"] for e in bundle["entry"] if (r := e["resource"])["resourceType"] == "List"]
    assert codes == ["886921000000105"]  # only the area asked for; resolved allergies not asked for


@pytest.mark.parametrize("header", ["Ssp-TraceID", "Ssp-From", "Ssp-To", "Ssp-InteractionID"])
async def test_missing_spine_header_is_400_bad_request_spec_7_1(http: httpx.AsyncClient, header: str) -> None:
    response = await post(http, **{header.replace("-", "_"): None})
    assert response.status_code == 400 and spine_code(response) == "BAD_REQUEST"


async def test_wrong_interaction_id_is_400_bad_request(http: httpx.AsyncClient) -> None:
    response = await post(http, Ssp_InteractionID="urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1")
    assert response.status_code == 400 and spine_code(response) == "BAD_REQUEST"


async def test_wrong_receiver_asid_is_refused_by_the_ssp(http: httpx.AsyncClient) -> None:
    response = await post(http, Ssp_To="918999198738")
    assert response.status_code == 403


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "signed (HS256)": lambda: jwt.encode(claims(), "a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256"),
    "no trailing dot": lambda: encode_unsigned(claims()).rstrip("."),
    "alg not none": lambda: _b64({"alg": "RS256", "typ": "JWT"}) + "." + _b64(claims()) + ".",
    "exp not iat + 300": lambda: encode_unsigned(claims(exp=int(time.time()) + 600)),
    "expired": lambda: encode_unsigned(claims(iat=int(time.time()) - 400, exp=int(time.time()) - 100)),
    "iat in the future": lambda: encode_unsigned(claims(iat=int(time.time()) + 120, exp=int(time.time()) + 420)),
    "aud is another endpoint": lambda: encode_unsigned(claims(aud=provider_root("A20047"))),
    "empty aud": lambda: encode_unsigned(claims(aud="")),
    "reason not directcare": lambda: encode_unsigned(claims(reason_for_request="migration")),
    "scope not patient read": lambda: encode_unsigned(claims(requested_scope="organization/*.read")),
    "sub differs from practitioner id": lambda: encode_unsigned(claims(sub="someone-else")),
    "no requesting_device": lambda: encode_unsigned(claims(requesting_device=None)),
    "organisation without ODS": lambda: encode_unsigned(claims(requesting_organization={
        "resourceType": "Organization", "name": "X"})),
    "practitioner without SDS ids": lambda: encode_unsigned(claims(requesting_practitioner={
        "resourceType": "Practitioner", "id": "u1", "name": [{"family": "SMITH"}], "identifier": []})),
    "not a JWT": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("problem", list(BAD_TOKENS))
async def test_bad_audit_jwt_is_400_bad_request_spec_7_2(http: httpx.AsyncClient, problem: str) -> None:
    response = await post(http, Authorization="Bearer " + BAD_TOKENS[problem]())
    assert response.status_code == 400 and spine_code(response) == "BAD_REQUEST"


async def test_missing_authorization_is_400_bad_request(http: httpx.AsyncClient) -> None:
    response = await post(http, Authorization=None)
    assert response.status_code == 400 and spine_code(response) == "BAD_REQUEST"


PERIOD = {"start": "2020-01-01", "end": "2021-01-01"}
BAD_PARAMETERS: dict[str, tuple[Any, int, str]] = {
    "consultations with medicationSearchFromDate": (parameters(
        {"name": "includeConsultations", "part": [{"name": "includeNumberOfMostRecent", "valuePositiveInt": 3}]},
        {"name": "includeMedication", "part": [{"name": "medicationSearchFromDate", "valueDate": "2020-01-01"}]},
    ), 422, "INVALID_PARAMETER"),
    "problems with uncategorisedDataSearchPeriod": (parameters(
        {"name": "includeProblems"},
        {"name": "includeUncategorisedData",
         "part": [{"name": "uncategorisedDataSearchPeriod", "valuePeriod": PERIOD}]},
    ), 422, "INVALID_PARAMETER"),
    "consultations with filterStatus": (parameters(
        {"name": "includeConsultations"},
        {"name": "includeProblems", "part": [{"name": "filterStatus", "valueCode": "active"}]},
    ), 422, "INVALID_PARAMETER"),
    "problems with includeNotGiven": (parameters(
        {"name": "includeProblems"},
        {"name": "includeImmunisations", "part": [{"name": "includeNotGiven", "valueBoolean": True}]},
    ), 422, "INVALID_PARAMETER"),
    "consultationSearchPeriod with includeNumberOfMostRecent": (parameters(
        {"name": "includeConsultations", "part": [{"name": "consultationSearchPeriod", "valuePeriod": PERIOD},
                                                  {"name": "includeNumberOfMostRecent", "valuePositiveInt": 3}]},
    ), 422, "INVALID_RESOURCE"),
    "includeAllergies without includeResolvedAllergies": (parameters({"name": "includeAllergies"}),
                                                          422, "INVALID_PARAMETER"),
    "unknown parameter": (parameters({"name": "includeEverything"}), 422, "INVALID_PARAMETER"),
    "missing patientNHSNumber": ({"resourceType": "Parameters", "parameter": [{"name": "includeProblems"}]},
                                 422, "INVALID_PARAMETER"),
    "future medicationSearchFromDate": (parameters(
        {"name": "includeMedication", "part": [{"name": "medicationSearchFromDate", "valueDate": "2999-01-01"}]},
    ), 422, "INVALID_PARAMETER"),
    "date with time": (parameters(
        {"name": "includeMedication", "part": [{"name": "medicationSearchFromDate", "valueDate": "2020-01-01T10:00"}]},
    ), 422, "INVALID_PARAMETER"),
    "part without value": (parameters({"name": "includeMedication", "part": [{"name": "includePrescriptionIssues"}]}),
                           422, "INVALID_PARAMETER"),
    "not a Parameters resource": ({"resourceType": "Patient"}, 422, "INVALID_RESOURCE"),
    "invalid NHS number": (parameters(nhs_number="9690937287"), 400, "INVALID_NHS_NUMBER"),
    "wrong identifier system": ({"resourceType": "Parameters", "parameter": [{"name": "patientNHSNumber",
        "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.1.4.1", "value": DEMO_PATIENT}}]},
        400, "INVALID_IDENTIFIER_SYSTEM"),
    "malformed JSON": (b'{"resourceType": "Parameters", ', 400, "BAD_REQUEST"),
    "unknown patient": (parameters(nhs_number="9434765919"), 404, "PATIENT_NOT_FOUND"),
}


@pytest.mark.parametrize("problem", list(BAD_PARAMETERS))
async def test_bad_parameters_answered_as_the_gp_connect_specification_describes_spec_7_3_7_5(
    http: httpx.AsyncClient, problem: str
) -> None:
    body, status, code = BAD_PARAMETERS[problem]
    response = await post(http, body)
    assert response.status_code == status and spine_code(response) == code


async def test_the_clients_own_parameters_are_accepted(http: httpx.AsyncClient) -> None:
    from datetime import date

    response = await post(http, build_parameters(DEMO_PATIENT, Settings(), date.today()))
    assert response.status_code == 200


# --- the NHS API platform token endpoint (SPEC §5.2) ---------------------------------------------------------------
def assertion(simulator: RunningSimulator, *, key: Any, kid: str = KID, **changes: Any) -> str:
    assert simulator.urls is not None
    now = int(time.time())
    body = {"iss": API_KEY, "sub": API_KEY, "aud": simulator.urls.pds_token_url, "jti": str(uuid.uuid4()),
            "exp": now + 300}
    body.update(changes)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS512",
                      headers={"kid": kid})


@pytest.fixture
def trusted_key(client_key_file: Path) -> Any:
    return load_private_key(client_key_file.read_bytes())


async def token_request(http: httpx.AsyncClient, client_assertion: str, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion, **form}
    return await http.post("/pds/oauth2/token", data=data)


async def test_token_endpoint_issues_a_token_for_a_valid_assertion(
    http: httpx.AsyncClient, simulator: RunningSimulator, trusted_key: Any
) -> None:
    response = await token_request(http, assertion(simulator, key=trusted_key))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == "599" and body["access_token"]


@pytest.mark.parametrize(
    ("problem", "status"),
    [("untrusted key", 401), ("unknown kid", 401), ("wrong aud", 401), ("iss is not the API key", 401),
     ("expired", 400), ("exp beyond 5 minutes", 400), ("no jti", 400), ("reused jti", 400), ("HS512", 400)],
)
async def test_token_endpoint_checks_the_client_assertion_claims_and_signature(
    http: httpx.AsyncClient, simulator: RunningSimulator, trusted_key: Any, problem: str, status: int
) -> None:
    now = int(time.time())
    if problem == "untrusted key":
        token = assertion(simulator, key=generate_rsa_key(2048))
    elif problem == "unknown kid":
        token = assertion(simulator, key=trusted_key, kid="other")
    elif problem == "wrong aud":
        token = assertion(simulator, key=trusted_key, aud="https://int.api.service.nhs.uk/oauth2/token")
    elif problem == "iss is not the API key":
        token = assertion(simulator, key=trusted_key, iss="someone", sub="someone")
    elif problem == "expired":
        token = assertion(simulator, key=trusted_key, exp=now - 10)
    elif problem == "exp beyond 5 minutes":
        token = assertion(simulator, key=trusted_key, exp=now + 3600)
    elif problem == "no jti":
        token = assertion(simulator, key=trusted_key, jti=None)
    elif problem == "reused jti":
        token = assertion(simulator, key=trusted_key, jti="once")
        assert (await token_request(http, token)).status_code == 200
        token = assertion(simulator, key=trusted_key, jti="once")
    else:
        token = jwt.encode({"iss": API_KEY}, "s" * 64, algorithm="HS512", headers={"kid": KID})
    response = await token_request(http, token)
    assert response.status_code == status
    assert response.json()["error"]


async def test_pds_rejects_a_missing_or_unknown_bearer_token(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/pds/personal-demographics/FHIR/R4/Patient/{DEMO_PATIENT}",
                              headers={"X-Request-ID": str(uuid.uuid4()), "Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "ACCESS_DENIED"
