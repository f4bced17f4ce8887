"""No PHI in any log line, in the error paths above all (SPEC §9; docs/security.md; LESSONS 7): hostile and failing
requests through the running gateway and its simulator, logged at DEBUG as JSON, must leave no NHS number (any
spacing), patient name or birth date in the log output."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from tests.hardening.conftest import DATA, Target, start
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    NHS_OID,
    assertion,
    cx,
    envelope,
    epic_statement,
    iti38_body,
    iti39_body,
    iti55_body,
    mtom_wrap,
    security_header,
)

from xhuma.nhs.simulator.patients import DEMO_PATIENT
from xhuma.nhs.simulator.patients import FAULT_PATIENTS as FAULTS
from xhuma.observability import configure_logging

FAULT_PATIENTS = list(FAULTS.values())


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging("DEBUG", "json")
    try:
        yield capsys
    finally:
        root.handlers, root.level = handlers, level
        structlog.configure(**config)


@pytest.fixture
def failing_target(tmp_path: Path) -> Iterator[Target]:
    yield from start(tmp_path, saml_verify="optional", http_read_timeout_seconds=0.5, http_retries=0,
                     breaker_failure_threshold=1000)


def _phi_patterns(target: Target) -> list[re.Pattern[str]]:
    numbers = {DEMO_PATIENT, *(patient.nhs_number for patient in FAULT_PATIENTS)}
    patterns = [re.compile(rf"{n[:3]}\W?{n[3:6]}\W?{n[6:]}") for n in numbers]
    names = {target.demographics.family or "", *target.demographics.given, "Smith", "Jane"}
    for patient in FAULT_PATIENTS:
        names |= {patient.family, patient.given}
    patterns += [re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE) for name in names if name]
    births = {target.demographics.birth_date or "", "19520531",
              *(patient.birth_date.replace("-", "") for patient in FAULT_PATIENTS)}
    patterns += [re.compile(rf"{b[:4]}-?{b[4:6]}-?{b[6:]}") for b in births if b]
    return patterns


def test_error_paths_never_log_nhs_numbers_names_or_birth_dates(
    failing_target: Target, json_logs: pytest.CaptureFixture[str]
) -> None:
    target = failing_target
    demo = target.demographics
    json_logs.readouterr()  # start-up lines are not what this test is about

    def post(path: str, body: bytes, content_type: str = "application/soap+xml") -> None:
        response = target.post(path, body, content_type)
        assert response.status_code in (200, 400, 500)

    # every built-in failing patient: PDS 404/500/timeout, restricted, deceased, no endpoint, GP Connect 403/500/...
    for patient in FAULT_PATIENTS:
        post("/SOAP/iti55", envelope(ACTION_55, iti55_body(
            [[(NHS_OID, patient.nhs_number)]], family=patient.family, given=patient.given,
            birth=patient.birth_date.replace("-", ""), gender=patient.gender[:1].upper())))
        post("/SOAP/iti38", envelope(ACTION_38, iti38_body(nhs=patient.nhs_number)))
    # the demo patient: a match, a demographic conflict, a spaced NHS number
    post("/SOAP/iti55", envelope(ACTION_55, iti55_body([[(NHS_OID, DEMO_PATIENT)]], family=demo.family,
                                                       given=demo.given[0], birth=demo.birth_date, gender=demo.gender)))
    post("/SOAP/iti55", envelope(ACTION_55, iti55_body([[(NHS_OID, f"{DEMO_PATIENT[:3]} {DEMO_PATIENT[3:6]} "
                                                                    f"{DEMO_PATIENT[6:]}")]], family="Smith",
                                                       given="Jane", birth="19520531")))
    # malformed requests that carry PHI in the part that fails
    good = envelope(ACTION_55, iti55_body([[(NHS_OID, DEMO_PATIENT)]], family=demo.family, birth=demo.birth_date))
    post("/SOAP/iti55", good[: len(good) - 40])
    post("/SOAP/iti55", good.replace(b"</s:Header>", b"<a:MessageID>x</a:MessageID></s:Header>"))
    post("/SOAP/iti55", good.replace(b"<s:Envelope", b"<s:Envelope \xff"))
    post("/SOAP/iti55", good, "text/plain")
    post("/SOAP/iti39", *mtom_wrap(good[:200]))
    post("/SOAP/iti38", envelope(ACTION_38, iti38_body({"$XDSDocumentEntryPatientId": [f"('{cx(DEMO_PATIENT)}'"]})))
    post("/SOAP/iti39", envelope(ACTION_39, iti39_body([(target.home, target.repository, DEMO_PATIENT)])))
    # SAML about another patient, and a broken signature naming the patient
    other = assertion(epic_statement(DATA, resource_id=cx(FAULT_PATIENTS[0].nhs_number)), signer=target.signer)
    post("/SOAP/iti38", envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT), security=security_header(other)))
    broken = assertion(epic_statement(DATA, resource_id=cx(DEMO_PATIENT)), name_id=f"{demo.family} {DEMO_PATIENT}")
    post("/SOAP/iti38", envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT), security=security_header(broken)))
    # the admin API looked up by NHS number, well and badly
    auth = {"Authorization": "Bearer " + "a" * 40}
    target.client.post("/api/audit/search", json={"nhs_number": DEMO_PATIENT}, headers=auth)
    target.client.post("/api/audit/search", json={"nhs_number": int(DEMO_PATIENT)}, headers=auth)
    target.client.get("/api/audit", params={"nhs_number": DEMO_PATIENT[:9] + "0"}, headers=auth)

    output = json_logs.readouterr()
    logged = output.err + output.out
    assert logged.count('"event": "transaction"') >= 2 * len(FAULT_PATIENTS)  # the logs were really captured
    assert '"level": "debug"' in logged
    for pattern in _phi_patterns(target):
        match = pattern.search(logged)
        assert match is None, f"PHI in the logs: {logged[max(0, match.start() - 200): match.end() + 50]}"
