"""PDS client against the simulator over real HTTP (SPEC §5; LESSONS 14, 16, 17)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from xhuma.errors import (
    InvalidNhsNumber,
    PatientNotFound,
    UpstreamUnauthorised,
    UpstreamUnavailable,
)
from xhuma.nhs.auth import generate_rsa_key, private_key_pem
from xhuma.nhs.pds import pds_outcome
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient
from xhuma.store.cache import RedisCache, ResilientCache

from .conftest import Nhs


async def test_pds_found_demo_patient_with_request_headers_spec_5_3(nhs: Nhs) -> None:
    patient = await nhs.pds.get_patient(DEMO_PATIENT, correlation_id="msg.123")
    assert patient.nhs_number == DEMO_PATIENT
    assert patient.family == "SKELLY" and patient.birth_date == "1925-04-21"
    assert patient.gp_ods_code == "B82617"
    assert pds_outcome(patient) == "found"
    headers = nhs.state.pds_requests[-1]
    uuid.UUID(headers["x-request-id"])
    assert headers["x-correlation-id"] == "msg-123"  # PDS: no '.' in the correlation id
    assert headers["nhsd-end-user-organisation-ods"] == nhs.settings.end_user_org_ods
    assert headers["accept"] == "application/fhir+json"


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [(Fault.RESTRICTED, "restricted"), (Fault.DECEASED, "deceased"), (Fault.SUPERSEDED, "superseded")],
)
async def test_pds_restricted_deceased_superseded_are_typed_outcomes_lesson_17(
    nhs: Nhs, fault: Fault, outcome: str
) -> None:
    patient = await nhs.pds.get_patient(fault_patient(fault))
    assert pds_outcome(patient) == outcome
    if fault is Fault.RESTRICTED:
        assert patient.security == "R" and patient.gp_ods_code is None and patient.addresses == ()
    if fault is Fault.SUPERSEDED:
        assert patient.nhs_number == DEMO_PATIENT and patient.requested_nhs_number == fault_patient(fault)


@pytest.mark.parametrize(
    ("fault", "error", "detail"),
    [
        (Fault.NOT_FOUND, PatientNotFound, "RESOURCE_NOT_FOUND"),
        (Fault.INVALIDATED, PatientNotFound, "INVALIDATED_RESOURCE"),
        (Fault.PDS_UNAVAILABLE, UpstreamUnavailable, None),
        (Fault.PDS_TIMEOUT, UpstreamUnavailable, None),
    ],
)
async def test_pds_each_status_maps_to_its_own_outcome_never_restricted_lesson_16(
    nhs: Nhs, fault: Fault, error: type[Exception], detail: str | None
) -> None:
    with pytest.raises(error) as caught:
        await nhs.pds.get_patient(fault_patient(fault))
    if detail:
        assert caught.value.detail == detail  # type: ignore[attr-defined]


async def test_pds_unauthorised_when_the_client_key_is_not_trusted_lesson_16(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., Any], tmp_path: Any
) -> None:
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(private_key_pem(generate_rsa_key(2048)))
    nhs = make_nhs(settings=nhs_settings(pds_private_key_file=stranger))
    with pytest.raises(UpstreamUnauthorised):
        await nhs.pds.get_patient(DEMO_PATIENT)
    assert nhs.state.requests["pds"] == 0  # no token, no Patient call


async def test_invalid_nhs_number_never_reaches_pds_spec_9(nhs: Nhs) -> None:
    for number in ("9000000000", "123456789", "96909372860", "969093728x", ""):
        with pytest.raises(InvalidNhsNumber):
            await nhs.pds.get_patient(number)
    assert nhs.state.requests["pds"] == 0 and nhs.state.requests["token"] == 0


async def test_pds_retry_fails_twice_then_succeeds_with_the_same_request_id(nhs: Nhs) -> None:
    patient = await nhs.pds.get_patient(fault_patient(Fault.PDS_FLAKY))
    assert patient.nhs_number == fault_patient(Fault.PDS_FLAKY)
    attempts = list(nhs.state.pds_requests)[-3:]
    assert len({headers["x-request-id"] for headers in attempts}) == 1  # SPEC §5.3: reuse X-Request-ID on retry
    event = [e for e in nhs.sink.events if e.details and e.details.get("operation") == "read"][-1]
    assert event.details is not None and event.details["attempts"] == 3


async def test_pds_token_reused_across_calls_and_refreshed_after_expiry(make_nhs: Callable[..., Nhs]) -> None:
    now = [time.time()]
    nhs = make_nhs(clock=lambda: now[0])
    await nhs.pds.get_patient(DEMO_PATIENT)
    await nhs.pds.get_patient(fault_patient(Fault.DECEASED))
    await nhs.pds.get_patient(fault_patient(Fault.RESTRICTED))
    assert nhs.state.requests["token"] == 1 and nhs.tokens.fetches == 1
    now[0] += 599 - nhs.settings.pds_token_margin_seconds + 1  # past expiry minus the margin
    await nhs.pds.get_patient(DEMO_PATIENT)
    assert nhs.state.requests["token"] == 2 and nhs.tokens.fetches == 2


async def test_pds_token_renewed_once_when_pds_answers_401(nhs: Nhs) -> None:
    await nhs.pds.get_patient(DEMO_PATIENT)
    nhs.state.tokens.clear()  # the platform revoked every token
    patient = await nhs.pds.get_patient(DEMO_PATIENT)
    assert patient.nhs_number == DEMO_PATIENT
    assert nhs.state.requests["token"] == 2


@pytest.mark.redis
async def test_pds_token_shared_between_replicas_through_real_redis_lesson_14(
    make_nhs: Callable[..., Nhs], redis_url: str, redis_namespace: str
) -> None:
    replicas = []
    for _ in range(2):
        cache = ResilientCache(RedisCache(redis_url, namespace=redis_namespace), name="redis")
        replicas.append(make_nhs(cache=cache))
    await replicas[0].pds.get_patient(DEMO_PATIENT)
    await replicas[1].pds.get_patient(DEMO_PATIENT)
    assert replicas[0].state.requests["token"] == 1
    assert replicas[1].tokens.fetches == 0
    for replica in replicas:
        await replica.cache.close()


async def test_pds_calls_are_audited_with_a_pseudonym_never_the_nhs_number(nhs: Nhs) -> None:
    await nhs.pds.get_patient(DEMO_PATIENT)
    with pytest.raises(PatientNotFound):
        await nhs.pds.get_patient(fault_patient(Fault.NOT_FOUND))
    events = [e for e in nhs.sink.events if e.transaction == "PDS"]
    token, found, missing = events
    assert token.details == {"operation": "oauth-token"} and token.jwt_summary and token.jwt_summary["alg"] == "RS512"
    assert found.outcome == "success" and found.reason == "found"
    assert found.patient_pseudonym == nhs.auditor.pseudonym(DEMO_PATIENT)
    assert missing.outcome == "no-match" and missing.error_code == "PatientNotFound"
    assert all(DEMO_PATIENT not in repr(e) for e in events)
    assert nhs.metrics.stage_seconds.labels(stage="pds")._sum.get() > 0
