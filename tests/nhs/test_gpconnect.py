"""GP Connect Access Record: Structured client against the simulator (SPEC §7; SCAL GEN-07; LESSONS 17-19)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from datetime import date

import httpx
import pytest

from xhuma.config import Settings
from xhuma.errors import (
    AccessDenied,
    AmbiguousEndpoint,
    CircuitOpen,
    ConsentRefused,
    DemographicsMismatch,
    InvalidNhsNumber,
    NoEndpoint,
    PatientNotFound,
    UpstreamInvalidResponse,
    UpstreamUnavailable,
)
from xhuma.nhs.gpconnect import AREA_PARAMETERS, build_parameters, cross_check
from xhuma.nhs.nhs_number import is_valid_nhs_number
from xhuma.nhs.pds import pds_outcome
from xhuma.nhs.simulator.patients import DEMO_PATIENT, FAULT_PATIENTS, Fault, fault_patient
from xhuma.nhs.simulator.provider import parse_parameters
from xhuma.nhs.transport import BreakerState, build_upstream, url_origin
from xhuma.observability import Metrics
from xhuma.ports import CallerIdentity, PdsPatient, StructuredRecord

from .conftest import FAST, Nhs

CALLER = CallerIdentity(
    user_id="EPIC-1234", user_name="SMITH, Jane", role_code="224608005", organization="Example Hospital",
    organization_id="urn:oid:1.2.3", purpose_of_use="TREATMENT", verified=True,
)


async def fetch(nhs: Nhs, number: str, caller: CallerIdentity = CALLER) -> tuple[PdsPatient, StructuredRecord]:
    """The whole consumer path: PDS trace, SDS route, GP Connect record (what xhuma.records does)."""
    patient = await nhs.pds.get_patient(number)
    if pds_outcome(patient) in ("restricted", "deceased"):
        raise PatientNotFound(detail=pds_outcome(patient))
    assert patient.gp_ods_code
    route = await nhs.sds.gp_connect_route(patient.gp_ods_code)
    record = await nhs.gpconnect.get_structured_record(patient.nhs_number, route, caller, pds_patient=patient)
    return patient, record


async def test_structured_record_for_the_demo_patient_with_spine_headers_and_audit_jwt(nhs: Nhs) -> None:
    _, record = await fetch(nhs, DEMO_PATIENT)
    sent = nhs.state.gpc_requests[-1]
    headers, claims = sent["headers"], sent["jwt"]
    assert headers["ssp-traceid"] == record.trace_id == record.bundle["id"]
    assert headers["ssp-from"] == nhs.settings.gpc_from_asid
    assert headers["ssp-to"] == record.asid
    assert headers["ssp-interactionid"] == "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1"
    assert claims["exp"] == claims["iat"] + 300 and abs(claims["iat"] - time.time()) < 5
    assert claims["reason_for_request"] == "directcare" and claims["requested_scope"] == "patient/*.read"
    assert claims["iss"] == nhs.settings.gpc_jwt_issuer
    assert claims["sub"] == claims["requesting_practitioner"]["id"] == "EPIC-1234"
    assert claims["requesting_practitioner"]["name"] == [{"family": "SMITH", "given": ["Jane"]}]
    assert claims["requesting_organization"]["identifier"][0]["value"] == nhs.settings.gpc_consumer_ods
    assert claims["requesting_organization"]["name"] == "Example Hospital"
    assert claims["requesting_device"]["model"] == nhs.settings.gpc_device_name
    resources = [entry["resource"] for entry in record.bundle["entry"]]
    lists = {r["code"]["coding"][0]["code"] for r in resources if r["resourceType"] == "List"}
    assert {"886921000000105", "933361000000108", "717711000000103", "887191000000108"} <= lists
    events = {e.transaction: e for e in nhs.sink.events}
    gpc = events["GPC"]
    assert gpc.outcome == "success" and gpc.spine_trace_id == record.trace_id and gpc.ssp_to == record.asid
    assert gpc.jwt_summary and gpc.jwt_summary["requesting_practitioner_id"] == "EPIC-1234"
    assert gpc.user_id == "EPIC-1234" and gpc.patient_pseudonym == nhs.auditor.pseudonym(DEMO_PATIENT)
    assert events["SDS"].ssp_to == record.asid
    for stage in ("pds", "sds", "gpconnect"):
        assert nhs.metrics.stage_seconds.labels(stage=stage)._sum.get() > 0


@pytest.mark.parametrize(
    "user_name",
    ["SMITH, Jane", "Jane Smith", "Dr Jane Mary Smith", "12345^Smith^Jane^^^Dr", "Smith^Jane",
     "jane.smith@trust.nhs.uk", "Cher", "", None, "  Ó'Brien-Murphy ,  Seán (Prof) ", "Dr.", ",", "^^^"],
)
async def test_audit_jwt_accepted_by_the_provider_for_any_user_name_format_lesson_18(
    nhs: Nhs, user_name: str | None
) -> None:
    caller = CallerIdentity(user_id=None, user_name=user_name, organization=None)
    _, record = await fetch(nhs, DEMO_PATIENT, caller)
    claims = nhs.state.gpc_requests[-1]["jwt"]
    assert claims["requesting_practitioner"]["name"][0]["family"]
    assert claims["sub"] == claims["requesting_practitioner"]["id"]
    assert record.bundle["resourceType"] == "Bundle"


# Every built-in fault patient and what the consumer must make of it.
FAULT_OUTCOMES: dict[Fault, type[Exception] | str] = {
    Fault.RESTRICTED: PatientNotFound,
    Fault.DECEASED: PatientNotFound,
    Fault.SUPERSEDED: "superseded",
    Fault.NOT_FOUND: PatientNotFound,
    Fault.INVALIDATED: PatientNotFound,
    Fault.PDS_FLAKY: "ok",
    Fault.PDS_UNAVAILABLE: UpstreamUnavailable,
    Fault.PDS_TIMEOUT: UpstreamUnavailable,
    Fault.NO_ENDPOINT: NoEndpoint,
    Fault.AMBIGUOUS_ENDPOINT: AmbiguousEndpoint,
    Fault.NO_CONSENT: ConsentRefused,
    Fault.ACCESS_DENIED: AccessDenied,
    Fault.GPC_INTERNAL_ERROR: UpstreamUnavailable,
    Fault.GPC_UNAVAILABLE: UpstreamUnavailable,
    Fault.GPC_TIMEOUT: UpstreamUnavailable,
    Fault.MALFORMED_JSON: UpstreamInvalidResponse,
    Fault.GPC_FLAKY: "ok",
    Fault.DEMOGRAPHICS_MISMATCH: DemographicsMismatch,
    Fault.AREA_NOT_SUPPORTED: "warning",
    Fault.GPC_GZIP_BOMB: UpstreamInvalidResponse,
}


def test_every_fault_patient_has_an_expected_outcome_and_a_valid_number() -> None:
    assert set(FAULT_OUTCOMES) == set(Fault)
    assert {p.fault for p in FAULT_PATIENTS.values()} == set(Fault)
    assert [number for number in FAULT_PATIENTS if not is_valid_nhs_number(number)] == []


@pytest.mark.parametrize("fault", list(Fault), ids=lambda fault: fault.value)
async def test_every_fault_maps_to_its_typed_outcome(nhs: Nhs, fault: Fault) -> None:
    expected = FAULT_OUTCOMES[fault]
    number = fault_patient(fault)
    if isinstance(expected, type):
        with pytest.raises(expected):
            await fetch(nhs, number)
        return
    patient, record = await fetch(nhs, number)
    if expected == "superseded":
        assert patient.superseded and record.bundle["id"] == record.trace_id
    if expected == "warning":
        assert "NOT_IMPLEMENTED" in record.warnings  # OperationOutcome inside the 200 bundle kept for the converter
    if fault is Fault.GPC_FLAKY:
        traces = [r["headers"]["ssp-traceid"] for r in list(nhs.state.gpc_requests)[-3:]]
        assert traces == [record.trace_id] * 3  # retried with the same Ssp-TraceID


async def test_gpconnect_retry_fails_twice_then_succeeds(nhs: Nhs) -> None:
    before = nhs.state.requests["gpc"]
    await fetch(nhs, fault_patient(Fault.GPC_FLAKY))
    assert nhs.state.requests["gpc"] - before == 3
    event = [e for e in nhs.sink.events if e.transaction == "GPC"][-1]
    assert event.details is not None and event.details["attempts"] == 3


async def test_gpconnect_500_is_not_retried_but_503_is(nhs: Nhs) -> None:
    before = nhs.state.requests["gpc"]
    with pytest.raises(UpstreamUnavailable) as caught:
        await fetch(nhs, fault_patient(Fault.GPC_INTERNAL_ERROR))
    assert caught.value.spine_code == "INTERNAL_SERVER_ERROR"
    assert nhs.state.requests["gpc"] - before == 1
    before = nhs.state.requests["gpc"]
    with pytest.raises(UpstreamUnavailable):
        await fetch(nhs, fault_patient(Fault.GPC_UNAVAILABLE))
    assert nhs.state.requests["gpc"] - before == 3


async def test_demographics_mismatch_with_pds_is_an_error_scal_gen_07(nhs: Nhs) -> None:
    with pytest.raises(DemographicsMismatch) as caught:
        await fetch(nhs, fault_patient(Fault.DEMOGRAPHICS_MISMATCH))
    assert caught.value.detail == "birth-date"
    event = [e for e in nhs.sink.events if e.transaction == "GPC"][-1]
    assert event.outcome == "no-match" and event.error_code == "DemographicsMismatch"


def test_cross_check_compares_nhs_number_birth_date_and_family_name_scal_gen_07() -> None:
    bundle = {"entry": [{"resource": {
        "resourceType": "Patient", "birthDate": "1925-04-21", "name": [{"family": "Skelly"}],
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": DEMO_PATIENT}],
    }}]}
    pds = PdsPatient(nhs_number=DEMO_PATIENT, family="SKELLY", birth_date="1925-04-21")
    cross_check(bundle, pds)
    for changed, detail in (({"nhs_number": "9434765919"}, "nhs-number"), ({"birth_date": "1925-04-22"}, "birth-date"),
                            ({"family": "SMITH"}, "name")):
        with pytest.raises(DemographicsMismatch) as caught:
            cross_check(bundle, PdsPatient(**{"nhs_number": DEMO_PATIENT, "family": "SKELLY",
                                              "birth_date": "1925-04-21", **changed}))
        assert caught.value.detail == detail


async def test_cross_check_looks_up_pds_when_the_caller_does_not_pass_it(nhs: Nhs) -> None:
    route = await nhs.sds.gp_connect_route("B82617")
    with pytest.raises(DemographicsMismatch):
        await nhs.gpconnect.get_structured_record(fault_patient(Fault.DEMOGRAPHICS_MISMATCH), route, CALLER)
    assert any(e.transaction == "PDS" and e.outcome == "success" for e in nhs.sink.events)


async def test_invalid_nhs_number_never_reaches_gp_connect_spec_9(nhs: Nhs) -> None:
    route = await nhs.sds.gp_connect_route("B82617")
    with pytest.raises(InvalidNhsNumber):
        await nhs.gpconnect.get_structured_record("9690937287", route, CALLER)
    assert nhs.state.requests["gpc"] == 0 and nhs.state.requests["pds"] == 0


async def test_only_the_clinical_areas_asked_for_are_returned(make_nhs: object, nhs_settings: object) -> None:
    settings: Settings = nhs_settings(gpc_clinical_areas=["medication"])  # type: ignore[operator]
    nhs: Nhs = make_nhs(settings=settings)  # type: ignore[operator]
    _, record = await fetch(nhs, DEMO_PATIENT)
    kinds = {e["resource"]["resourceType"] for e in record.bundle["entry"]}
    lists = [e["resource"] for e in record.bundle["entry"] if e["resource"]["resourceType"] == "List"]
    assert [lst["code"]["coding"][0]["code"] for lst in lists] == ["933361000000108"]
    assert {"MedicationStatement", "MedicationRequest", "Medication"} <= kinds
    assert not {"AllergyIntolerance", "Immunization", "DiagnosticReport"} & kinds


def test_parameters_never_hold_a_forbidden_combination_for_any_area_selection() -> None:
    today = date(2024, 2, 29)
    areas = list(AREA_PARAMETERS)
    base = {flags: Settings(gpc_include_resolved_allergies=flags, gpc_include_prescription_issues=flags)
            for flags in (True, False)}
    for size in range(len(areas) + 1):
        for chosen in itertools.combinations(areas, size):
            for flags in (True, False):
                settings = base[flags].model_copy(update={"gpc_clinical_areas": list(chosen)})
                # The simulator's provider-side check rejects every forbidden combination (SPEC §7.3).
                request = parse_parameters(build_parameters(DEMO_PATIENT, settings, today), today)
                assert request.areas == set(chosen)


async def test_dead_upstream_trips_the_breaker_and_then_fails_fast_lesson_19() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = Metrics()
    settings = Settings(**FAST)
    upstream = build_upstream("gpconnect", settings, mutual_tls=False, metrics=metrics)
    url = f"http://127.0.0.1:{port}/Patient/$gpc.getstructuredrecord"
    try:
        for _ in range(settings.breaker_failure_threshold):
            with pytest.raises(UpstreamUnavailable):
                await upstream.request("POST", url, headers={})
        breaker = upstream.breakers.breaker(url_origin(url))  # no endpoint named: the URL's origin
        assert breaker.state is BreakerState.OPEN
        assert metrics.registry.get_sample_value(
            "xhuma_breaker_open", {"service": "gpconnect", "endpoint": f"http://127.0.0.1:{port}"}) == 1
        sent: list[str] = []
        send = upstream.client.send

        async def counting_send(request: httpx.Request, **kwargs: object) -> object:
            sent.append(str(request.url))
            return await send(request, **kwargs)  # type: ignore[arg-type]

        upstream.client.send = counting_send  # type: ignore[method-assign]
        with pytest.raises(CircuitOpen):
            await upstream.request("POST", url, headers={})
        assert sent == []  # fails fast: nothing is sent while the breaker is open
        await asyncio.sleep(settings.breaker_reset_seconds)
        assert breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(UpstreamUnavailable):  # the one trial call fails: open again
            await upstream.request("POST", url, headers={})
        assert breaker.state is BreakerState.OPEN
    finally:
        await upstream.client.aclose()


async def test_breaker_closes_after_a_successful_trial(nhs: Nhs) -> None:
    breaker = nhs.upstreams["pds"].breakers.breaker(nhs.pds._base_url)
    for number in range(breaker.failure_threshold):
        breaker.admit(str(number)).failure()
    with pytest.raises(CircuitOpen):
        await nhs.pds.get_patient(DEMO_PATIENT)
    await asyncio.sleep(breaker.reset_seconds)
    assert (await nhs.pds.get_patient(DEMO_PATIENT)).nhs_number == DEMO_PATIENT
    assert breaker.state is BreakerState.CLOSED
    assert nhs.metrics.upstream_errors.labels(service="pds", code="CircuitOpen")._value.get() == 1


async def test_ssp_trace_id_sent_to_gp_connect_is_a_canonical_uuid(nhs: Nhs) -> None:
    _, record = await fetch(nhs, DEMO_PATIENT)
    sent = nhs.state.gpc_requests[-1]["headers"]["ssp-traceid"]
    assert sent == record.trace_id == str(uuid.UUID(sent))
