"""A full ITI-55 -> ITI-38 -> ITI-39 exchange with a SAML assertion signed by a key generated in the test and a
client certificate forwarded by a (trusted) proxy, against the app and its built-in NHS simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from lxml import etree
from tests.dataprotection.exchange import RIM, UNIQUE_ID_SCHEME, retrieved_document, soap_parts
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    NHS_OID,
    SOAP_CT,
    SigningKey,
    assertion,
    envelope,
    epic_statement,
    iti38_body,
    iti39_body,
    iti55_body,
    security_header,
)

# The simulator's demo patient (src/xhuma/nhs/simulator/data/pds/9690937286.json).
NHS_NUMBER = "9690937286"
FAMILY, GIVEN, MIDDLE = "SKELLY", "HORACE", "Josiah"
BIRTH_DATE, BIRTH_HL7 = "1925-04-21", "19250421"
IDENTIFYING = [NHS_NUMBER, "969 093 7286", "969-093-7286", FAMILY, GIVEN, MIDDLE, BIRTH_DATE, BIRTH_HL7]
AUDIENCE = "urn:xhuma:test-gateway"


@dataclass
class Exchange:
    ccd: bytes
    unique_id: str
    message_ids: dict[str, str]
    home: str
    repository: str


def signed_security(data_dir: Any, signer: SigningKey, **overrides: Any) -> etree._Element:
    statement = epic_statement(data_dir, resource_id=f"{NHS_NUMBER}^^^&{NHS_OID}&ISO")
    overrides.setdefault("audience", AUDIENCE)
    return security_header(assertion(statement, signer=signer, **overrides))


async def post(client: httpx.AsyncClient, path: str, action: str, body: etree._Element, security: etree._Element,
               message_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    data = envelope(action, body, security=security, message_id=message_id)
    return await client.post(path, content=data, headers={"content-type": SOAP_CT, **(headers or {})})


def forwarded_cert_headers(pem: str) -> dict[str, str]:
    return {"X-SSL-Client-Cert": quote(pem), "X-Forwarded-For": "192.0.2.44"}


async def query_steps(client: httpx.AsyncClient, data_dir: Any, signer: SigningKey,
                      headers: dict[str, str] | None = None) -> tuple[str, str, str, dict[str, str]]:
    """ITI-55 and ITI-38; returns (home, repository, uniqueId, message ids)."""
    ids = {"ITI-55": "urn:uuid:00000000-0000-4000-8000-000000000055",
           "ITI-38": "urn:uuid:00000000-0000-4000-8000-000000000038",
           "ITI-39": "urn:uuid:00000000-0000-4000-8000-000000000039"}
    response = await post(client, "/SOAP/iti55", ACTION_55,
                          iti55_body([[(NHS_OID, NHS_NUMBER)]], family=FAMILY, given=GIVEN, birth=BIRTH_HL7,
                                     gender="M"),
                          signed_security(data_dir, signer), ids["ITI-55"], headers)
    assert response.status_code == 200, response.text[:2000]
    env, _ = soap_parts(response)
    assert env.find(".//{urn:hl7-org:v3}queryResponseCode").get("code") == "OK", response.text[:3000]
    response = await post(client, "/SOAP/iti38", ACTION_38, iti38_body(nhs=NHS_NUMBER),
                          signed_security(data_dir, signer), ids["ITI-38"], headers)
    assert response.status_code == 200, response.text[:2000]
    env, _ = soap_parts(response)
    entry = env.find(f".//{{{RIM}}}ExtrinsicObject")
    assert entry is not None, response.text[:3000]
    unique_id = next(identifier.get("value") for identifier in entry.iter(f"{{{RIM}}}ExternalIdentifier")
                     if identifier.get("identificationScheme") == UNIQUE_ID_SCHEME)
    repository = next(slot.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value")
                      for slot in entry.iter(f"{{{RIM}}}Slot") if slot.get("name") == "repositoryUniqueId")
    return entry.get("home"), repository, unique_id, ids


async def retrieve(client: httpx.AsyncClient, data_dir: Any, signer: SigningKey, home: str, repository: str,
                   unique_id: str, message_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return await post(client, "/SOAP/iti39", ACTION_39, iti39_body([(home, repository, unique_id)]),
                      signed_security(data_dir, signer), message_id, headers)


async def full_exchange(client: httpx.AsyncClient, data_dir: Any, signer: SigningKey,
                        headers: dict[str, str] | None = None) -> Exchange:
    home, repository, unique_id, ids = await query_steps(client, data_dir, signer, headers)
    response = await retrieve(client, data_dir, signer, home, repository, unique_id, ids["ITI-39"], headers)
    assert response.status_code == 200, response.text[:2000]
    return Exchange(retrieved_document(response), unique_id, ids, home, repository)
