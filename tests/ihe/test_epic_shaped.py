"""An Epic Care Everywhere-shaped exchange: ``s:``/``a:`` prefixes, pretty-printed envelopes, the SAML attributes
of epic-saml-attributes.xml in a signed assertion, and ITI-39 sent as MTOM without attachments (SPEC §3.2, §4.2).
"""

from __future__ import annotations

import hashlib

import pytest
from tests.support.pki import trusted_signing_key
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    ACTION_55,
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


@pytest.fixture
async def epic(harness_factory, make_settings, tmp_path):
    signer, cert = trusted_signing_key(tmp_path, "epic.pem")
    harness = await harness_factory(make_settings(saml_verify="required", saml_trusted_certs=[cert]))
    return harness, signer


async def test_epic_shaped_discovery_query_and_mtom_retrieve(epic, data_dir):
    harness, signer = epic

    def security():
        return epic_security(data_dir, signer)

    raw = envelope(ACTION_55, iti55_body(), security=security(), pretty=True)
    assert raw.count(b"<s:Envelope") == 1 and b"<a:Action" in raw
    response = await harness.post("/SOAP/iti55", raw)
    assert body_of(parse_response(response)).find("hl7:controlActProcess/hl7:queryAck/hl7:queryResponseCode",
                                                  NS).get("code") == "OK"

    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security(), pretty=True))
    entry = body_of(parse_response(response)).find("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
    unique_id = unique_id_of(entry)
    digest = slot_value(entry, "hash")

    request = iti39_body([(harness.settings.home_community_urn, harness.settings.repository_unique_id, unique_id)])
    wrapped, content_type = mtom_wrap(envelope(ACTION_39, request, security=security(), pretty=True))
    response = await harness.post("/SOAP/iti39", wrapped, content_type)
    assert response.status_code == 200
    message = body_of(parse_response(response))
    href = message.find("xdsb:DocumentResponse/xdsb:Document/xop:Include", NS).get("href")
    assert hashlib.sha1(parts_of(response)[href[4:]]).hexdigest() == digest

    # The verified Epic identity fed GP Connect and the audit trail of all three transactions.
    caller = harness.gpconnect.callers[0]
    assert caller.verified and caller.user_name == "CONE, Stephen" and caller.role_code == "224608005"
    assert caller.purpose_of_use == "TREATMENT"
    for transaction in ("ITI-55", "ITI-38", "ITI-39"):
        event = (await harness.events(transaction=transaction))[0]
        assert event["saml_verified"] is True and event["organization"].startswith("UCLH")
        assert event["home_community_id"] == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
