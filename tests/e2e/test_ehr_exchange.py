"""End to end over real HTTP: Xhuma (create_app on the embedded defaults, served by uvicorn on loopback) in front of
the built-in NHS simulator, driven as an EHR would drive it: ITI-55 → ITI-38 → ITI-39. The retrieved CCD must
pass the C-CDA validation of the converter (CDA schema + C-CDA R2.1 schematron).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from lxml import etree
from tests.ihe.schemas import schema_errors
from tests.support.pki import trusted_signing_key
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    NHS_OID,
    NS,
    body_of,
    envelope,
    epic_security,
    iti38_body,
    iti39_body,
    iti55_body,
    mtom_wrap,
    parse_response,
    slot_value,
    unique_id_of,
)
from tests.support.soap import attachments as parts_of

from xhuma.ccda.validate import validate_bytes
from xhuma.ihe.demo import demo_demographics, embedded_xhuma, run_demo
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XHUMA_WORKING_DIR", str(tmp_path))
    return tmp_path


def _demographics_kwargs(nhs: str) -> dict:
    known = demo_demographics(nhs)
    return {"family": known.family, "given": known.given[0] if known.given else None, "birth": known.birth_date,
            "gender": known.gender}


async def test_e2e_iti55_iti38_iti39_against_the_simulator_and_the_ccd_validates(workdir, data_dir):
    signer, cert = trusted_signing_key(workdir, "epic.pem")
    overrides = {"saml_verify": "required", "saml_trusted_certs": [cert], "working_dir": workdir}
    async with embedded_xhuma(overrides) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        def security() -> object:
            return epic_security(data_dir, signer, DEMO_PATIENT)

        # ITI-55
        request = iti55_body([[(NHS_OID, DEMO_PATIENT)]], **_demographics_kwargs(DEMO_PATIENT))
        response = await http.post("/SOAP/iti55", content=envelope(ACTION_55, request, security=security()),
                                    headers={"content-type": "application/soap+xml"})
        message = body_of(parse_response(response))
        assert schema_errors(message) == []
        assert message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code") == "OK"

        # ITI-38
        response = await http.post("/SOAP/iti38", content=envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT),
                                                                    security=security()),
                                    headers={"content-type": "application/soap+xml"})
        message = body_of(parse_response(response))
        assert schema_errors(message) == []
        (entry,) = message.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
        unique_id = unique_id_of(entry)
        advertised_hash, advertised_size = slot_value(entry, "hash"), slot_value(entry, "size")

        # ITI-39, MTOM as Epic sends it
        request = iti39_body([(entry.get("home"), slot_value(entry, "repositoryUniqueId"), unique_id)])
        wrapped, content_type = mtom_wrap(envelope(ACTION_39, request, security=security()))
        response = await http.post("/SOAP/iti39", content=wrapped, headers={"content-type": content_type})
        message = body_of(parse_response(response))
        assert schema_errors(message) == []
        href = message.find("xdsb:DocumentResponse/xdsb:Document/xop:Include", NS).get("href")
        ccd = parts_of(response)[href[4:]]
        assert hashlib.sha1(ccd).hexdigest() == advertised_hash and str(len(ccd)) == advertised_size

        result = validate_bytes(ccd)
        assert result.valid, result.findings[:5]
        document = etree.fromstring(ccd)
        assert document.find("{urn:hl7-org:v3}recordTarget/{urn:hl7-org:v3}patientRole/{urn:hl7-org:v3}id[@extension="
                             f"'{DEMO_PATIENT}']") is not None


async def test_e2e_demo_command_flow_saves_a_valid_ccd(workdir):
    out = workdir / "ccd.xml"
    lines: list[str] = []
    async with embedded_xhuma({"working_dir": workdir}) as base:
        outcome = await run_demo(base, DEMO_PATIENT, demo_demographics(DEMO_PATIENT), out, echo=lines.append)
    assert out.read_bytes() == outcome.ccd
    assert validate_bytes(out.read_bytes()).valid
    assert lines[0].startswith("1. ITI-55") and any(line.startswith("3. ITI-39") for line in lines)
    assert not any(DEMO_PATIENT in line for line in lines)  # the demo prints no NHS number


@pytest.mark.parametrize(
    ("fault", "status", "error"),
    [
        (Fault.NO_CONSENT, "Success", None),  # no documents: a plain Success without a RegistryError (issue 14)
        (Fault.NO_ENDPOINT, "Success", None),
        (Fault.GPC_INTERNAL_ERROR, "Failure", "Error"),
    ],
)
async def test_e2e_gp_connect_faults_become_registry_errors_not_http_500(workdir, fault, status, error):
    nhs = fault_patient(fault)
    async with embedded_xhuma({"working_dir": workdir, "http_retries": 0}) as base, \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post("/SOAP/iti38", content=envelope(ACTION_38, iti38_body(nhs=nhs)),
                                   headers={"content-type": "application/soap+xml"})
    assert response.status_code == 200
    message = body_of(parse_response(response))
    assert message.get("status").endswith(status)
    registry_error = message.find("rs:RegistryErrorList/rs:RegistryError", NS)
    if error is None:
        assert registry_error is None and not len(message.find("rim:RegistryObjectList", NS))
    else:
        assert registry_error.get("severity").endswith(error)
    assert schema_errors(message) == []
    assert nhs.encode() not in response.content


async def test_e2e_restricted_patient_is_no_match(workdir):
    nhs = fault_patient(Fault.RESTRICTED)
    async with embedded_xhuma({"working_dir": workdir}) as base, \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post("/SOAP/iti55", content=envelope(ACTION_55, iti55_body(
            [[(NHS_OID, nhs)]], family="XHUMA-RESTRICTED", given="Rachel", birth="19800101",
            gender="F")), headers={"content-type": "application/soap+xml"})
    message = body_of(parse_response(response))
    assert message.find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AA"
    assert message.find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode", NS).get("code") == "NF"
