"""XUA: the SAML 2.0 assertion is parsed and verified before its identity is used (SPEC §4; LESSONS 13).

Keys and certificates are generated in the test and the assertions signed with signxml.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree
from tests.ihe.support import (
    ACTION_38,
    ACTION_55,
    DEMO_NHS,
    NS,
    OTHER_NHS,
    SAML2,
    assertion,
    body_of,
    cx,
    envelope,
    epic_statement,
    iti38_body,
    iti55_body,
    new_signing_key,
    parse_response,
    security_header,
)

from xhuma.ihe.saml import identity_from_statement


@pytest.fixture(scope="module")
def signer():
    return new_signing_key()


@pytest.fixture
def trusted(tmp_path, signer):
    path = tmp_path / "epic-saml.pem"
    path.write_bytes(signer.cert_pem)
    return path


@pytest.fixture
async def strict(harness_factory, make_settings, trusted):
    return await harness_factory(
        make_settings(
            saml_verify="required", saml_trusted_certs=[trusted], saml_audience=["https://xhuma.example.nhs.uk"]
        )
    )


def fault_subcode(response):
    env = parse_response(response)
    return env.findtext("env:Body/env:Fault/env:Code/env:Subcode/env:Value", namespaces=NS)


def test_epic_attribute_statement_is_read_including_PurposeForUse(data_dir):
    identity = identity_from_statement(epic_statement(data_dir))
    assert identity.user_name == "CONE, Stephen"
    assert identity.organization == "UCLH - University College London Hospitals - TST"
    assert identity.organization_id == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
    assert identity.home_community_id == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"
    assert (identity.role_code, identity.role_display) == ("224608005", "Administrative healthcare staff")
    assert identity.purpose_of_use == "TREATMENT"
    assert identity.resource_id == "9690937278^^^&2.16.840.1.113883.2.1.4.1&ISO"
    assert identity.verified is False


def test_purpose_of_use_element_of_ihe_xua_is_read_too(data_dir):
    statement = epic_statement(data_dir)
    for element in statement.iter("{urn:hl7-org:v3}PurposeForUse"):
        element.tag = "{urn:hl7-org:v3}PurposeOfUse"
    assert identity_from_statement(statement).purpose_of_use == "TREATMENT"


async def test_verified_assertion_identity_reaches_gp_connect_and_the_audit_LESSONS_13(strict, data_dir, signer):
    saml = assertion(epic_statement(data_dir, resource_id=cx()), signer=signer, audience=OURS)
    response = await strict.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security_header(saml)))
    assert response.status_code == 200 and b"ExtrinsicObject" in response.content
    caller = strict.gpconnect.callers[0]
    assert caller.verified is True and caller.user_name == "CONE, Stephen" and caller.user_id == "epic-user-1234"
    event = (await strict.events(transaction="ITI-38"))[0]
    assert event["saml_verified"] is True and event["user_name"] == "CONE, Stephen"
    assert event["organization_id"] == "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100"


OURS = "https://xhuma.example.nhs.uk"  # the audience the strict gateway is configured with
REFUSAL_REASON = {
    "unsigned": "SamlUnsigned", "tampered": "SamlBadSignature", "untrusted-signer": "SamlBadSignature",
    "expired": "SamlExpired", "not-yet-valid": "SamlNotYetValid", "other-audience": "SamlAudience",
    "no-audience-restriction": "SamlAudience", "purpose-not-allowed": "SamlPurposeOfUse",
    "resource-id-other-patient": "SamlResourceMismatch", "no-assertion": "SamlMissing",
}


def _tamper(saml):
    for value in saml.iter(f"{{{SAML2}}}AttributeValue"):
        if value.text == "CONE, Stephen":
            value.text = "ADMIN, Mallory"
    return saml


@pytest.mark.parametrize(
    ("make", "subcode"),
    [
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx())), "wsse:FailedAuthentication", id="unsigned"
        ),
        pytest.param(
            lambda d, s: _tamper(assertion(epic_statement(d, resource_id=cx()), signer=s)),
            "wsse:FailedAuthentication",
            id="tampered",
        ),
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx()), signer=new_signing_key("Mallory")),
            "wsse:FailedAuthentication",
            id="untrusted-signer",
        ),
        pytest.param(
            lambda d, s: assertion(
                epic_statement(d, resource_id=cx()), signer=s, not_on_or_after=datetime.now(UTC) - timedelta(minutes=10)
            ),
            "wsse:MessageExpired",
            id="expired",
        ),
        pytest.param(
            lambda d, s: assertion(
                epic_statement(d, resource_id=cx()), signer=s, not_before=datetime.now(UTC) + timedelta(minutes=10)
            ),
            "wsse:MessageExpired",
            id="not-yet-valid",
        ),
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx()), signer=s, audience="https://elsewhere.example"),
            "wsse:FailedAuthentication",
            id="other-audience",
        ),
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx()), signer=s),
            "wsse:FailedAuthentication",
            id="no-audience-restriction",
        ),
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx(), purpose="MARKETING"), signer=s, audience=OURS),
            "wsse:FailedAuthentication",
            id="purpose-not-allowed",
        ),
        pytest.param(
            lambda d, s: assertion(epic_statement(d, resource_id=cx(OTHER_NHS)), signer=s, audience=OURS),
            "wsse:FailedAuthentication",
            id="resource-id-other-patient",
        ),
        pytest.param(lambda d, s: None, "wsse:InvalidSecurity", id="no-assertion"),
    ],
)
async def test_required_mode_rejects_unverifiable_assertions_with_a_ws_security_fault_LESSONS_13(
    strict, data_dir, signer, make, subcode, request
):
    saml = make(data_dir, signer)
    response = await strict.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security_header(saml)))
    assert response.status_code == 400
    assert fault_subcode(response) == subcode
    assert strict.gpconnect.calls == 0
    event = (await strict.events(transaction="ITI-38"))[0]
    assert event["outcome"] == "denied"
    # Each case is refused for its own reason (the audit says which), not by an earlier check.
    assert event["reason"] == REFUSAL_REASON[request.node.callspec.id]


async def test_clock_skew_tolerates_a_slightly_early_assertion(strict, data_dir, signer):
    saml = assertion(
        epic_statement(data_dir, resource_id=cx()), signer=signer, audience=OURS,
        not_before=datetime.now(UTC) + timedelta(seconds=30),
    )
    response = await strict.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security_header(saml)))
    assert response.status_code == 200


async def test_required_mode_checks_resource_id_against_the_iti55_patient(strict, data_dir, signer):
    saml = assertion(epic_statement(data_dir, resource_id=cx(OTHER_NHS)), signer=signer, audience=OURS)
    response = await strict.post("/SOAP/iti55", envelope(ACTION_55, iti55_body(), security=security_header(saml)))
    assert response.status_code == 400 and fault_subcode(response) == "wsse:FailedAuthentication"
    saml = assertion(epic_statement(data_dir, resource_id=cx(DEMO_NHS)), signer=signer, audience=OURS)
    response = await strict.post("/SOAP/iti55", envelope(ACTION_55, iti55_body(), security=security_header(saml)))
    assert response.status_code == 200 and b"registrationEvent" in response.content


async def test_wrapped_assertion_cannot_change_the_signed_identity(strict, data_dir, signer):
    """Signature wrapping: an unsigned copy placed first must not be the identity we use."""
    signed = assertion(epic_statement(data_dir), signer=signer, audience=OURS)
    forged = _tamper(etree.fromstring(etree.tostring(signed)))
    forged.set("ID", "_forged")
    security = security_header(forged)
    security.append(signed)
    response = await strict.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security))
    assert response.status_code == 400
    assert strict.gpconnect.calls == 0


async def test_optional_mode_logs_the_failure_and_continues_unverified(
    harness_factory, make_settings, data_dir, trusted
):
    harness = await harness_factory(make_settings(saml_verify="optional", saml_trusted_certs=[trusted]))
    saml = assertion(epic_statement(data_dir))  # unsigned
    response = await harness.post("/SOAP/iti38", envelope(ACTION_38, iti38_body(), security=security_header(saml)))
    assert response.status_code == 200 and b"ExtrinsicObject" in response.content
    caller = harness.gpconnect.callers[0]
    assert caller.verified is False and caller.user_name == "CONE, Stephen"
    event = (await harness.events(transaction="ITI-38"))[0]
    assert event["saml_verified"] is False


def test_strict_profiles_default_to_required_verification(make_settings):
    assert make_settings(profile="int", cache_keys=None).saml_verify.value == "required"
    assert make_settings().saml_verify.value == "optional"


async def test_iti55_with_verified_assertion_is_answered(strict, data_dir, signer):
    saml = assertion(epic_statement(data_dir, resource_id=cx(DEMO_NHS)), signer=signer, audience=OURS)
    response = await strict.post("/SOAP/iti55", envelope(ACTION_55, iti55_body(), security=security_header(saml)))
    assert body_of(parse_response(response)).find("hl7:acknowledgement/hl7:typeCode", NS).get("code") == "AA"
