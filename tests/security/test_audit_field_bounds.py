"""No request fails because of its own identifiers' length (issue 15, item 6).

Every caller-controlled value that reaches an audit column is sent with 10,000 characters through the real SOAP
endpoints, on SQLite and on the real PostgreSQL: the request is answered as it would be with a short value (or
with its normal error), and it leaves an audit row whose value is cut to the column and ends with a hash of the
whole value. Before the fix PostgreSQL refused the INSERT (value too long for type character varying), so the
request was refused and left no row.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    DEMO_NHS,
    GET_DOCUMENTS,
    NS,
    SAML2,
    Harness,
    assertion,
    body_of,
    cx,
    envelope,
    epic_statement,
    iti38_body,
    iti39_body,
    iti55_body,
    make_harness,
    parse_response,
    security_header,
)
from tests.support.exchange import app_client, forwarded_cert_headers
from tests.support.pki import SigningKey, certificate, new_signing_key
from tests.support.soap import SOAP_CT

from xhuma import tracing
from xhuma.app import create_app
from xhuma.security.client_auth import fingerprint
from xhuma.store.audit import upgrade

LONG = 10_000
AUDIENCE = "https://xhuma.example.nhs.uk"


def long_value(label: str) -> str:
    """10,000 characters, unique per call (so rows of one test are told apart in a shared database)."""
    head = f"{label}-{uuid.uuid4().hex}-"
    return head + "x" * (LONG - len(head))


def cut(value: str, limit: int) -> str:
    """What the audit column must hold: the beginning, then '…sha256:' and 16 hex digits of the whole value."""
    tail = "…sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return value[: limit - len(tail)] + tail


PURPOSE = long_value("purpose")  # allowed by the strict gateway's settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_database_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_database_url
    url: str = request.getfixturevalue("pg_database_url")
    return url


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return new_signing_key()


@pytest.fixture
async def gateway(make_settings: Any, database_url: str) -> AsyncIterator[Harness]:
    """The real SOAP endpoints over a real audit store, no SAML required."""
    harness = await make_harness(make_settings(), database_url=database_url)
    yield harness
    await harness.records.aclose()
    await harness.client.aclose()
    await harness.audit.close()


@pytest.fixture
async def strict_gateway(make_settings: Any, database_url: str, tmp_path: Path, signer: SigningKey,
                         ) -> AsyncIterator[Harness]:
    """SAML required; a 10,000-character purpose of use is allowed, so that it reaches the audit row."""
    cert = tmp_path / "saml.pem"
    cert.write_bytes(signer.cert_pem)
    harness = await make_harness(
        make_settings(saml_verify="required", saml_trusted_certs=[cert], saml_audience=[AUDIENCE],
                      allowed_purposes_of_use=["TREATMENT", PURPOSE]),
        database_url=database_url,
    )
    yield harness
    await harness.records.aclose()
    await harness.client.aclose()
    await harness.audit.close()


async def only_row(harness: Harness, message_id: str, transaction: str) -> dict[str, Any]:
    rows = await harness.events(message_id=message_id)
    assert [row["transaction"] for row in rows] == [transaction], rows
    return rows[0]


def answer(response: Any) -> etree._Element:
    return body_of(parse_response(response))


# --- WS-Addressing -------------------------------------------------------------------------------------------
async def test_a_10000_character_message_id_is_answered_related_and_audited_cut_with_its_hash(
        gateway: Harness) -> None:
    message_id = "urn:uuid:" + long_value("mid")
    response = await gateway.post("/SOAP/iti55", envelope(ACTION_55, iti55_body(), message_id=message_id))
    assert response.status_code == 200
    env = parse_response(response)
    assert env.findtext("env:Header/wsa:RelatesTo", namespaces=NS) == message_id  # echoed whole
    assert body_of(env).find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AA"
    row = await only_row(gateway, message_id, "ITI-55")
    assert row["outcome"] == "success"
    assert row["message_id"] == cut(message_id, 256)


async def test_a_10000_character_reply_to_gets_its_addressing_fault_and_an_audit_row(gateway: Harness) -> None:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    data = envelope(ACTION_38, iti38_body(), message_id=message_id, reply_to="https://" + long_value("reply"))
    response = await gateway.post("/SOAP/iti38", data)
    assert response.status_code == 400
    assert parse_response(response).find("env:Body/env:Fault", NS) is not None
    row = await only_row(gateway, message_id, "ITI-38")
    assert row["outcome"] in ("error", "denied")


# --- ITI-38 and ITI-39 identifiers --------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["query-id", "patient-id", "home-community-id", "get-documents-unique-id",
                                   "get-documents-entry-uuid"])
async def test_a_10000_character_iti38_identifier_gets_its_registry_error_and_an_audit_row(
        gateway: Harness, field: str) -> None:
    value = long_value(field)
    if field == "query-id":
        body = iti38_body(query_id="urn:uuid:" + value)
    elif field == "patient-id":
        body = iti38_body({"$XDSDocumentEntryPatientId": [f"'{value}^^^&2.16.840.1.113883.2.1.4.1&ISO'"],
                           "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
    elif field == "home-community-id":
        body = iti38_body(home="urn:oid:" + value)
    else:
        slot = "$XDSDocumentEntryUniqueId" if field == "get-documents-unique-id" else "$XDSDocumentEntryEntryUUID"
        body = iti38_body({slot: [f"('{value}')"]}, query_id=GET_DOCUMENTS,
                          home=gateway.settings.home_community_urn)
    message_id = f"urn:uuid:{uuid.uuid4()}"
    response = await gateway.post("/SOAP/iti38", envelope(ACTION_38, body, message_id=message_id))
    assert response.status_code == 200
    row = await only_row(gateway, message_id, "ITI-38")
    if field.startswith("get-documents"):  # nothing by that id: an empty success, audited as no-match
        assert answer(response).find("rim:RegistryObjectList/rim:ExtrinsicObject", NS) is None
        assert row["outcome"] == "no-match"
        return
    error = answer(response).find("rs:RegistryErrorList/rs:RegistryError", NS)
    assert error is not None and error.get("errorCode", "").startswith("XDS")
    assert row["outcome"] in ("error", "no-match")


@pytest.mark.parametrize("field", ["document-unique-id", "home-community-id", "repository-unique-id"])
async def test_a_10000_character_iti39_identifier_gets_its_registry_error_and_an_audit_row(
        gateway: Harness, field: str) -> None:
    value = long_value(field)
    home, repository = gateway.settings.home_community_urn, gateway.settings.repository_unique_id
    unique_id = "1.2.3." + value if field == "document-unique-id" else "1.2.3.4"
    if field == "home-community-id":
        home = "urn:oid:" + value
    elif field == "repository-unique-id":
        repository = value
    message_id = f"urn:uuid:{uuid.uuid4()}"
    response = await gateway.post("/SOAP/iti39", envelope(ACTION_39, iti39_body([(home, repository, unique_id)]),
                                                          message_id=message_id))
    assert response.status_code == 200
    error = answer(response).find("rs:RegistryResponse/rs:RegistryErrorList/rs:RegistryError", NS)
    assert error is not None and error.get("errorCode", "").startswith("XDS")
    row = await only_row(gateway, message_id, "ITI-39")
    assert row["outcome"] == "error"
    assert row["document_unique_id"] == (cut(unique_id, 128) if field == "document-unique-id" else unique_id)


# --- SAML attributes -------------------------------------------------------------------------------------------
def _set_attribute(statement: etree._Element, name: str, text: str) -> None:
    for attribute in statement:
        if attribute.get("Name") == name:
            attribute[0].text = text
            return
    raise AssertionError(name)


def _set_coded(statement: etree._Element, local: str, attribute: str, value: str) -> None:
    for element in statement.iter(f"{{urn:hl7-org:v3}}{local}"):
        element.set(attribute, value)
        return
    raise AssertionError(local)


SAML_FIELDS = {  # field: (audit column, its length)
    "name-id": ("user_id", 256),
    "subject-id": ("user_name", 256),
    "role-code": ("user_role", 128),
    "role-display": ("user_role", 128),
    "organization": ("organization", 256),
    "organization-id": ("organization_id", 256),
    "home-community-id": ("home_community_id", 256),
    "purpose-of-use": ("purpose_of_use", 64),
}


@pytest.mark.parametrize("field", sorted(SAML_FIELDS))
async def test_a_10000_character_saml_value_is_answered_and_audited_cut_with_its_hash(
        strict_gateway: Harness, data_dir: Path, signer: SigningKey, field: str) -> None:
    value = PURPOSE if field == "purpose-of-use" else long_value(field)
    statement = epic_statement(data_dir, resource_id=cx(DEMO_NHS))
    name_id = value if field == "name-id" else "epic-user-1234"
    expected = value
    if field == "subject-id":
        _set_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:subject-id", value)
    elif field == "organization":
        _set_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:organization", value)
    elif field == "organization-id":
        _set_attribute(statement, "urn:oasis:names:tc:xspa:1.0:subject:organization-id", value)
    elif field == "home-community-id":
        _set_attribute(statement, "urn:nhin:names:saml:homeCommunityId", value)
    elif field == "role-code":
        _set_coded(statement, "Role", "code", value)
        expected = f"{value} Administrative healthcare staff"
    elif field == "role-display":
        _set_coded(statement, "Role", "displayName", value)
        expected = f"224608005 {value}"
    elif field == "purpose-of-use":
        _set_coded(statement, "PurposeForUse", "code", value)
    saml = assertion(statement, signer=signer, audience=AUDIENCE, name_id=name_id)
    assert saml.find(f"{{{SAML2}}}Subject") is not None
    message_id = f"urn:uuid:{uuid.uuid4()}"
    response = await strict_gateway.post(
        "/SOAP/iti55", envelope(ACTION_55, iti55_body(), message_id=message_id, security=security_header(saml)))
    assert response.status_code == 200, response.text[:500]
    assert answer(response).find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AA"
    row = await only_row(strict_gateway, message_id, "ITI-55")
    assert row["outcome"] == "success" and row["saml_verified"] is True
    column, limit = SAML_FIELDS[field]
    assert row[column] == cut(expected, limit)


# --- request and trace ids -------------------------------------------------------------------------------------
LETTERS_ONLY = str.maketrans("0123456789", "ghijklmnop")


@pytest.mark.parametrize("length", [LONG, 128])
async def test_long_request_and_trace_ids_are_answered_and_audited_within_their_columns(
        make_settings: Any, database_url: str, length: int) -> None:
    """X-Request-ID / X-Trace-ID: 10,000 characters are replaced by our own id; 128 plain characters (the longest
    accepted) are kept, cut to their 64-character columns with the hash."""
    if database_url.startswith("postgresql"):
        await asyncio.to_thread(upgrade, database_url)
    app = create_app(make_settings(database_url=database_url))
    # Unique, in letters only: a caller's id holding ten digits in a row could be an NHS number and is replaced by
    # our own (tests/foundation/test_logging.py), which a random hex tail does in about one run in forty.
    request_id = ("r" * length)[: length - 32] + uuid.uuid4().hex.translate(LETTERS_ONLY)
    trace_id = ("t" * length)[: length - 32] + uuid.uuid4().hex.translate(LETTERS_ONLY)
    message_id = f"urn:uuid:{uuid.uuid4()}"
    async with app_client(app) as client:
        response = await client.post(
            "/SOAP/iti55", content=envelope(ACTION_55, iti55_body(), message_id=message_id),
            headers={"content-type": SOAP_CT, "x-request-id": request_id, "x-trace-id": trace_id})
        rows = await app.state.runtime.audit.query(message_id=message_id)
    assert response.status_code == 200, response.text[:500]
    assert [row["transaction"] for row in rows] == ["ITI-55"]
    row = rows[0]
    if length == LONG:
        assert row["request_id"] == response.headers["x-request-id"] != request_id
        assert len(row["trace_id"]) <= 64
    else:
        assert response.headers["x-request-id"] == request_id
        assert row["request_id"] == cut(request_id, 64)
        if tracing.enabled():
            # An OpenTelemetry provider is installed for this process (tests/audit/test_tracing.py installs one): the
            # server span's trace id labels the row instead of the caller's (xhuma.app.RequestContextMiddleware).
            assert re.fullmatch(r"[0-9a-f]{32}", row["trace_id"])
        else:
            assert row["trace_id"] == cut(trace_id, 64)


# --- the calling system's certificate ------------------------------------------------------------------------------
async def test_a_client_certificate_with_a_10000_character_subject_is_served_and_audited_cut_with_its_hash(
        make_settings: Any, database_url: str) -> None:
    """An allow-listed gateway (by fingerprint) whose certificate, forwarded by a trusted proxy, has a subject of
    10,000 characters (one long OU): it is served, and its subject is kept cut to the 512-character column."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, long_value("ou")),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Epic Gateway")])
    cert = certificate(subject, key, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    if database_url.startswith("postgresql"):
        await asyncio.to_thread(upgrade, database_url)
    app = create_app(make_settings(database_url=database_url, trusted_proxies=["127.0.0.1"],
                                   client_cert_allow_list=[f"sha256:{fingerprint(cert)}"]))
    message_id = f"urn:uuid:{uuid.uuid4()}"
    async with app_client(app) as client:
        response = await client.post(
            "/SOAP/iti55", content=envelope(ACTION_55, iti55_body(), message_id=message_id),
            headers={"content-type": SOAP_CT, **forwarded_cert_headers(pem)})
        rows = await app.state.runtime.audit.query(message_id=message_id)
    assert response.status_code == 200, response.text[:500]
    assert [row["transaction"] for row in rows] == ["ITI-55"]
    assert rows[0]["client_cert_subject"] == cut(cert.subject.rfc4514_string(), 512)
