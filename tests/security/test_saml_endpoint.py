"""SAML/XUA through the real SOAP endpoint (LESSONS 13), with a signing key generated here: a valid assertion is
accepted and its identity audited as verified; a tampered, expired or wrongly addressed one is refused with a
WS-Security SOAP Fault, audited as denied, and no NHS service is called."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from lxml import etree
from tests.support.exchange import AUDIENCE, BIRTH_HL7, FAMILY, GIVEN, NHS_NUMBER, app_client, signed_security
from tests.support.pki import new_signing_key, trusted_signing_key
from tests.support.soap import ACTION_55, NHS_OID, SAML2, SOAP12, SOAP_CT, envelope, iti55_body

from xhuma.app import create_app
from xhuma.store.audit import audit_event


def tamper(security: etree._Element) -> etree._Element:
    """Change the signed user name after signing."""
    for value in security.iter(f"{{{SAML2}}}AttributeValue"):
        if value.text == "CONE, Stephen":
            value.text = "ADMIN, Super"
    return security


@pytest.mark.parametrize("case", ["valid", "tampered", "expired", "wrong-audience", "untrusted-signer"])
async def test_saml_assertion_is_verified_at_the_soap_endpoint(make_settings: Any, tmp_path: Path, data_dir: Path,
                                                               case: str) -> None:
    signer, cert_file = trusted_signing_key(tmp_path)
    app = create_app(make_settings(saml_verify="required", saml_trusted_certs=[cert_file],
                                   saml_audience=[AUDIENCE], audit_hmac_key="h" * 40))
    if case == "valid":
        security = signed_security(data_dir, signer)
    elif case == "tampered":
        security = tamper(signed_security(data_dir, signer))
    elif case == "expired":
        past = datetime.now(UTC) - timedelta(hours=2)
        security = signed_security(data_dir, signer, not_before=past, not_on_or_after=past + timedelta(minutes=5))
    elif case == "wrong-audience":
        security = signed_security(data_dir, signer, audience="urn:some:other:gateway")
    else:
        security = signed_security(data_dir, new_signing_key("Impostor"))
    body = iti55_body([[(NHS_OID, NHS_NUMBER)]], family=FAMILY, given=GIVEN, birth=BIRTH_HL7, gender="M")
    async with app_client(app) as client:
        response = await client.post("/SOAP/iti55", content=envelope(ACTION_55, body, security=security),
                                     headers={"content-type": SOAP_CT})
        async with app.state.runtime.audit.engine.connect() as connection:
            events = [dict(r._mapping) for r in await connection.execute(sa.select(audit_event))]
    transactions = {event["transaction"]: event for event in events}
    if case == "valid":
        assert response.status_code == 200, response.text[:1000]
        assert transactions["ITI-55"]["outcome"] == "success"
        assert transactions["ITI-55"]["saml_verified"] is True
        assert transactions["ITI-55"]["user_name"] == "CONE, Stephen"
        assert "PDS" in transactions
        return
    fault = etree.fromstring(response.content)
    subcode = fault.findtext(f".//{{{SOAP12}}}Subcode/{{{SOAP12}}}Value")
    assert response.status_code in (400, 500) and subcode and subcode.endswith(
        ("FailedAuthentication", "InvalidSecurity", "MessageExpired")), response.text[:1000]
    assert transactions["ITI-55"]["outcome"] == "denied"
    assert transactions["ITI-55"]["user_name"] != "ADMIN, Super"  # the forged identity is never recorded as-is
    assert not {"PDS", "SDS", "GPC"} & set(transactions)  # refused before any NHS service was called
