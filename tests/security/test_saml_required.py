"""SAML in required mode (issue 15, item 7): one use per assertion across replicas, a bounded lifetime, the
assertion bound to the patient, and every refusal audited with its MessageID and answered with RelatesTo.

Assertions are signed with a key generated here (tests/support/pki.py). The gateway is the real SOAP endpoint
over a real audit store; the replica test runs two applications sharing the real Redis (db 11).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis_asyncio
from lxml import etree
from signxml import XMLSigner
from tests.ihe.support import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
    DEMO_NHS,
    NS,
    OTHER_NHS,
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
    unique_id_of,
)
from tests.support.exchange import AUDIENCE, BIRTH_HL7, FAMILY, GIVEN, NHS_NUMBER, app_client
from tests.support.pki import SigningKey, new_signing_key
from tests.support.soap import NHS_OID, SOAP_CT

from xhuma.app import create_app
from xhuma.store.crypto import new_key_text

REPLICA_REDIS_DB = 11  # this module's own Redis database; only its own namespace is deleted


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return new_signing_key()


@pytest.fixture
def trusted(tmp_path: Path, signer: SigningKey) -> Path:
    path = tmp_path / "epic-saml.pem"
    path.write_bytes(signer.cert_pem)
    return path


@pytest.fixture
async def strict_factory(make_settings: Any, sqlite_database_url: str, trusted: Path) -> AsyncIterator[Any]:
    made: list[Harness] = []

    async def factory(**overrides: Any) -> Harness:
        settings = make_settings(saml_verify="required", saml_trusted_certs=[trusted], saml_audience=[AUDIENCE],
                                 **overrides)
        harness = await make_harness(settings, database_url=sqlite_database_url)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.records.aclose()
        await harness.client.aclose()
        await harness.audit.close()


@pytest.fixture
async def strict(strict_factory: Any) -> Harness:
    harness: Harness = await strict_factory()
    return harness


def signed(data_dir: Path, signer: SigningKey, nhs: str | None = DEMO_NHS, *, drop: tuple[str, ...] = (),
           **conditions: Any) -> etree._Element:
    """An Epic assertion about ``nhs`` (None: without resource-id), addressed to us, signed by ``signer``; ``drop``
    removes Conditions attributes (NotBefore, NotOnOrAfter) or the assertion's IssueInstant before signing."""
    statement = epic_statement(data_dir, resource_id=cx(nhs) if nhs else None)
    if nhs is None:
        for attribute in list(statement):
            if attribute.get("Name") == "urn:oasis:names:tc:xacml:2.0:resource:resource-id":
                statement.remove(attribute)
    element = assertion(statement, audience=AUDIENCE, **conditions)
    conditions_element = element.find(f"{{{SAML2}}}Conditions")
    for name in drop:
        (element if name == "IssueInstant" else conditions_element).attrib.pop(name)
    signed_element: etree._Element = XMLSigner(
        signature_algorithm="rsa-sha256", digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    ).sign(element, key=signer.key_pem, cert=[signer.cert], reference_uri=element.get("ID"))
    return signed_element


def fault_of(response: httpx.Response) -> tuple[str | None, str | None]:
    """(the WS-Security subcode, RelatesTo) of a SOAP Fault answer."""
    env = parse_response(response)
    subcode = env.findtext("env:Body/env:Fault/env:Code/env:Subcode/env:Value", namespaces=NS)
    return subcode, env.findtext("env:Header/wsa:RelatesTo", namespaces=NS)


async def send(harness: Harness, path: str, action: str, body: etree._Element,
               saml: etree._Element | None) -> tuple[httpx.Response, str]:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    data = envelope(action, body, message_id=message_id, security=security_header(saml))
    return await harness.post(path, data), message_id


async def refused(harness: Harness, response: httpx.Response, message_id: str, transaction: str) -> str:
    """The refusal's audit reason, after checking it is a WS-Security Fault related to the request and audited
    with its MessageID."""
    assert response.status_code == 400, response.text[:500]
    subcode, relates_to = fault_of(response)
    assert subcode is not None and subcode.startswith("wsse:")
    assert relates_to == message_id
    rows = await harness.events(message_id=message_id)
    assert [(row["transaction"], row["outcome"]) for row in rows] == [(transaction, "denied")]
    reason: str = rows[0]["reason"]
    return reason


# --- one use per assertion -------------------------------------------------------------------------------------
async def test_the_same_assertion_is_accepted_once_and_its_replay_refused(strict: Harness, data_dir: Path,
                                                                          signer: SigningKey) -> None:
    saml = signed(data_dir, signer)
    first, _ = await send(strict, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
    assert first.status_code == 200 and b"ExtrinsicObject" in first.content
    for _ in range(3):
        again, message_id = await send(strict, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
        assert await refused(strict, again, message_id, "ITI-38") == "SamlReplayed"
    assert strict.gpconnect.calls == 1


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[str, str]]:
    """(URL of this module's Redis database, a fresh namespace); the namespace's keys are deleted afterwards."""
    url = f"redis://127.0.0.1:6379/{REPLICA_REDIS_DB}"
    namespace = f"xhuma-saml-{uuid.uuid4().hex[:12]}"
    yield url, namespace
    client = redis_asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def iti55(client: httpx.AsyncClient, saml: etree._Element) -> tuple[httpx.Response, str]:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    body = iti55_body([[(NHS_OID, NHS_NUMBER)]], family=FAMILY, given=GIVEN, birth=BIRTH_HL7, gender="M")
    data = envelope(ACTION_55, body, message_id=message_id, security=security_header(saml))
    return await client.post("/SOAP/iti55", content=data, headers={"content-type": SOAP_CT}), message_id


async def test_an_assertion_used_at_one_replica_is_refused_at_another_sharing_redis(
        make_settings: Any, tmp_path: Path, trusted: Path, data_dir: Path, signer: SigningKey,
        shared_redis: tuple[str, str]) -> None:
    url, namespace = shared_redis
    keys = new_key_text("k1")
    apps = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        apps.append(create_app(make_settings(
            working_dir=tmp_path / name, redis_url=url, redis_namespace=namespace, cache_keys=keys,
            saml_verify="required", saml_trusted_certs=[trusted], saml_audience=[AUDIENCE])))
    saml = signed(data_dir, signer, NHS_NUMBER)
    async with app_client(apps[0]) as first, app_client(apps[1]) as second:
        accepted, _ = await iti55(first, saml)
        replayed, message_id = await iti55(second, saml)
        rows = await apps[1].state.runtime.audit.query(message_id=message_id)
        marks = await apps[0].state.runtime.cache.keys("saml:")
    assert accepted.status_code == 200, accepted.text[:500]
    assert replayed.status_code == 400
    assert fault_of(replayed) == ("wsse:FailedAuthentication", message_id)
    assert [(row["outcome"], row["reason"]) for row in rows] == [("denied", "SamlReplayed")]
    assert len(marks) == 1  # the mark lives in the shared Redis, under a hash (never the caller's id)


async def test_a_replay_is_refused_by_the_in_process_record_while_redis_is_unreachable(
        make_settings: Any, tmp_path: Path, trusted: Path, data_dir: Path, signer: SigningKey) -> None:
    app = create_app(make_settings(
        redis_url="redis://127.0.0.1:1/11", redis_timeout_seconds=0.2,
        saml_verify="required", saml_trusted_certs=[trusted], saml_audience=[AUDIENCE]))
    saml = signed(data_dir, signer, NHS_NUMBER)
    async with app_client(app) as client:
        accepted, _ = await iti55(client, saml)
        replayed, message_id = await iti55(client, saml)
        rows = await app.state.runtime.audit.query(message_id=message_id)
    assert accepted.status_code == 200, accepted.text[:500]
    assert replayed.status_code == 400 and fault_of(replayed) == ("wsse:FailedAuthentication", message_id)
    assert rows[0]["reason"] == "SamlReplayed"


# --- lifetime -------------------------------------------------------------------------------------------------
async def test_an_assertion_without_not_on_or_after_is_refused(strict: Harness, data_dir: Path,
                                                               signer: SigningKey) -> None:
    saml = signed(data_dir, signer, drop=("NotOnOrAfter",))
    response, message_id = await send(strict, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
    assert await refused(strict, response, message_id, "ITI-38") == "SamlNoExpiry"
    assert strict.gpconnect.calls == 0


@pytest.mark.parametrize("drop", [(), ("NotBefore",)], ids=["from-not-before", "from-issue-instant"])
async def test_an_assertion_valid_longer_than_the_configured_lifetime_is_refused(
        strict_factory: Any, data_dir: Path, signer: SigningKey, drop: tuple[str, ...]) -> None:
    now = datetime.now(UTC)
    default = await strict_factory()  # XHUMA_SAML_MAX_LIFETIME_SECONDS: 3600
    saml = signed(data_dir, signer, drop=drop, not_before=now - timedelta(minutes=1),
                  not_on_or_after=now + timedelta(hours=2))
    response, message_id = await send(default, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
    assert await refused(default, response, message_id, "ITI-38") == "SamlLifetimeTooLong"
    longer = await strict_factory(saml_max_lifetime_seconds=3 * 3600)
    response, _ = await send(longer, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
    assert response.status_code == 200, response.text[:500]


# --- bound to the patient ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("transaction", ["ITI-55", "ITI-38"])
async def test_an_assertion_without_resource_id_is_refused_unless_the_setting_allows_it(
        strict_factory: Any, data_dir: Path, signer: SigningKey, transaction: str) -> None:
    path, action, body = (("/SOAP/iti55", ACTION_55, iti55_body) if transaction == "ITI-55"
                          else ("/SOAP/iti38", ACTION_38, iti38_body))
    strict = await strict_factory()
    response, message_id = await send(strict, path, action, body(), signed(data_dir, signer, None))
    assert await refused(strict, response, message_id, transaction) == "SamlNoResourceId"
    relaxed = await strict_factory(saml_require_resource_id=False)
    response, _ = await send(relaxed, path, action, body(), signed(data_dir, signer, None))
    assert response.status_code == 200, response.text[:500]


async def advertised(harness: Harness, data_dir: Path, signer: SigningKey, nhs: str) -> str:
    """ITI-38 for ``nhs`` with an assertion about that patient; the uniqueId it advertises."""
    response, _ = await send(harness, "/SOAP/iti38", ACTION_38, iti38_body(nhs=nhs), signed(data_dir, signer, nhs))
    assert response.status_code == 200, response.text[:500]
    entry = body_of(parse_response(response)).find("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    return unique_id_of(entry)


def retrieve_body(harness: Harness, *unique_ids: str) -> etree._Element:
    settings = harness.settings
    return iti39_body([(settings.home_community_urn, settings.repository_unique_id, uid) for uid in unique_ids])


@pytest.mark.parametrize("named", ["other-patient", "no-resource-id"])
async def test_iti39_needs_an_assertion_naming_the_patient_of_the_cached_document(
        strict: Harness, data_dir: Path, signer: SigningKey, named: str) -> None:
    unique_id = await advertised(strict, data_dir, signer, DEMO_NHS)
    saml = signed(data_dir, signer, OTHER_NHS if named == "other-patient" else None)
    response, message_id = await send(strict, "/SOAP/iti39", ACTION_39, retrieve_body(strict, unique_id), saml)
    reason = await refused(strict, response, message_id, "ITI-39")
    assert reason == ("SamlResourceMismatch" if named == "other-patient" else "SamlNoResourceId")
    assert b"ClinicalDocument" not in response.content
    response, _ = await send(strict, "/SOAP/iti39", ACTION_39, retrieve_body(strict, unique_id),
                             signed(data_dir, signer, DEMO_NHS))
    assert response.status_code == 200 and b"ClinicalDocument" in response.content


async def test_iti39_refused_at_a_later_document_records_no_disclosure_of_an_earlier_one(
        strict: Harness, data_dir: Path, signer: SigningKey) -> None:
    """Two documents of two patients with an assertion about the first: the request is refused, and the audit
    trail must not claim that the first document was disclosed (nothing was sent)."""
    mine = await advertised(strict, data_dir, signer, DEMO_NHS)
    other = await advertised(strict, data_dir, signer, OTHER_NHS)
    response, message_id = await send(strict, "/SOAP/iti39", ACTION_39, retrieve_body(strict, mine, other),
                                      signed(data_dir, signer, DEMO_NHS))
    assert await refused(strict, response, message_id, "ITI-39") == "SamlResourceMismatch"


# --- every refusal: audited with its MessageID, answered with RelatesTo ---------------------------------------------
REFUSALS = ["unsigned", "untrusted-signer", "expired", "no-assertion", "other-patient", "replayed"]


@pytest.mark.parametrize("case", REFUSALS)
@pytest.mark.parametrize("transaction", ["ITI-55", "ITI-38", "ITI-39"])
async def test_every_saml_refusal_is_audited_with_its_message_id_and_answered_with_relates_to(
        strict: Harness, data_dir: Path, signer: SigningKey, case: str, transaction: str) -> None:
    unique_id = await advertised(strict, data_dir, signer, DEMO_NHS) if transaction == "ITI-39" else "1.2.3"
    saml: etree._Element | None
    if case == "unsigned":
        saml = assertion(epic_statement(data_dir, resource_id=cx()), audience=AUDIENCE)
    elif case == "untrusted-signer":
        saml = signed(data_dir, new_signing_key("Mallory"))
    elif case == "expired":
        past = datetime.now(UTC) - timedelta(hours=1)
        saml = signed(data_dir, signer, not_before=past, not_on_or_after=past + timedelta(minutes=5))
    elif case == "no-assertion":
        saml = None
    elif case == "other-patient":
        saml = signed(data_dir, signer, OTHER_NHS)
    else:
        saml = signed(data_dir, signer)
        await send(strict, "/SOAP/iti38", ACTION_38, iti38_body(), saml)
    path, action, body = {
        "ITI-55": ("/SOAP/iti55", ACTION_55, iti55_body()),
        "ITI-38": ("/SOAP/iti38", ACTION_38, iti38_body()),
        "ITI-39": ("/SOAP/iti39", ACTION_39, retrieve_body(strict, unique_id)),
    }[transaction]
    response, message_id = await send(strict, path, action, body, saml)
    await refused(strict, response, message_id, transaction)
