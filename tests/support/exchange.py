"""A full ITI-55 -> ITI-38 -> ITI-39 exchange as an EHR drives it, against a running Xhuma (the app of create_app
over ASGI, or `xhuma serve` over HTTP) with the built-in NHS simulator behind it, for the simulator's demo patient.

Optionally every request carries a SAML assertion (``security``: a fresh WS-Security header per request, e.g.
``signed_by(data_dir, signer)``) and extra HTTP headers (e.g. a client certificate forwarded by a proxy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from lxml import etree
from tests.support.pki import SigningKey
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    HL7,
    NHS_OID,
    RIM,
    SOAP_CT,
    envelope,
    epic_security,
    iti38_body,
    iti39_body,
    iti55_body,
    retrieved_document,
    slot_value,
    soap_parts,
    unique_id_of,
)

# The simulator's demo patient (src/xhuma/nhs/simulator/data/pds/9690937286.json).
NHS_NUMBER = "9690937286"
FAMILY, GIVEN, MIDDLE = "SKELLY", "HORACE", "Josiah"
BIRTH_DATE, BIRTH_HL7 = "1925-04-21", "19250421"
IDENTIFYING = [NHS_NUMBER, "969 093 7286", "969-093-7286", FAMILY, GIVEN, MIDDLE, BIRTH_DATE, BIRTH_HL7]
AUDIENCE = "urn:xhuma:test-gateway"

MESSAGE_IDS = {
    "ITI-55": "urn:uuid:00000000-0000-4000-8000-000000000055",
    "ITI-38": "urn:uuid:00000000-0000-4000-8000-000000000038",
    "ITI-39": "urn:uuid:00000000-0000-4000-8000-000000000039",
}
ENDPOINTS = {"ITI-55": ("/SOAP/iti55", ACTION_55), "ITI-38": ("/SOAP/iti38", ACTION_38),
             "ITI-39": ("/SOAP/iti39", ACTION_39)}

Security = Callable[[], etree._Element]


@asynccontextmanager
async def app_client(app: FastAPI, *, peer: tuple[str, int] = ("127.0.0.1", 123)) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running (simulator, cache, audit store), and a client calling it over ASGI from
    ``peer``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://xhuma.test") as client:
            yield client


def signed_security(data_dir: Any, signer: SigningKey, **overrides: Any) -> etree._Element:
    """A WS-Security header with the Epic attribute statement for the demo patient, signed by ``signer`` and
    addressed to AUDIENCE unless ``overrides`` say otherwise."""
    overrides.setdefault("audience", AUDIENCE)
    return epic_security(data_dir, signer, NHS_NUMBER, **overrides)


def signed_by(data_dir: Any, signer: SigningKey) -> Security:
    return lambda: signed_security(data_dir, signer)


def forwarded_cert_headers(pem: str) -> dict[str, str]:
    """What a trusted TLS-terminating proxy adds: the client certificate and the client address."""
    return {"X-SSL-Client-Cert": quote(pem), "X-Forwarded-For": "192.0.2.44"}


@dataclass(frozen=True)
class DocumentRef:
    home: str
    repository: str
    unique_id: str


@dataclass
class Exchange:
    ccd: bytes
    unique_id: str
    message_ids: dict[str, str]
    home: str
    repository: str


async def post(client: httpx.AsyncClient, transaction: str, body: etree._Element, *,
               security: Security | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """One transaction ("ITI-55", "ITI-38", "ITI-39") with its fixed MessageID (MESSAGE_IDS)."""
    path, action = ENDPOINTS[transaction]
    data = envelope(action, body, security=security() if security else None, message_id=MESSAGE_IDS[transaction])
    return await client.post(path, content=data, headers={"content-type": SOAP_CT, **(headers or {})})


async def discover(client: httpx.AsyncClient, *, security: Security | None = None,
                   headers: dict[str, str] | None = None) -> None:
    """ITI-55 with the demo patient's NHS number and demographics; it must match."""
    body = iti55_body([[(NHS_OID, NHS_NUMBER)]], family=FAMILY, given=GIVEN, birth=BIRTH_HL7, gender="M")
    response = await post(client, "ITI-55", body, security=security, headers=headers)
    assert response.status_code == 200, response.text[:2000]
    env, _ = soap_parts(response)
    assert env.find(f".//{{{HL7}}}queryResponseCode").get("code") == "OK", response.text[:3000]


async def find_document(client: httpx.AsyncClient, *, security: Security | None = None,
                        headers: dict[str, str] | None = None) -> DocumentRef:
    """ITI-38 FindDocuments for the demo patient; it must list a document entry."""
    response = await post(client, "ITI-38", iti38_body(nhs=NHS_NUMBER), security=security, headers=headers)
    assert response.status_code == 200, response.text[:2000]
    env, _ = soap_parts(response)
    entry = env.find(f".//{{{RIM}}}ExtrinsicObject")
    assert entry is not None, response.text[:3000]
    home, repository = entry.get("home"), slot_value(entry, "repositoryUniqueId")
    assert home and repository, response.text[:3000]
    return DocumentRef(home, repository, unique_id_of(entry))


async def retrieve(client: httpx.AsyncClient, document: DocumentRef, *, security: Security | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
    """ITI-39 for ``document``; the response is the caller's to check."""
    body = iti39_body([(document.home, document.repository, document.unique_id)])
    return await post(client, "ITI-39", body, security=security, headers=headers)


async def full_exchange(client: httpx.AsyncClient, *, security: Security | None = None,
                        headers: dict[str, str] | None = None) -> Exchange:
    await discover(client, security=security, headers=headers)
    document = await find_document(client, security=security, headers=headers)
    response = await retrieve(client, document, security=security, headers=headers)
    assert response.status_code == 200, response.text[:2000]
    return Exchange(retrieved_document(response), document.unique_id, dict(MESSAGE_IDS), document.home,
                    document.repository)
