"""Refused admin requests are audited (issue 15, item 7), not only counted: one ``ADMIN``/``denied`` event each,
with a reason code, the route and the caller's address; the subject only of a token whose signature was
verified; never the token (static or OIDC) nor its digest."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support.exchange import app_client

from xhuma.app import create_app
from xhuma.security.admin import AdminAuthenticator

TOKEN = "t" * 40
ISSUER = "https://login.trust.example.nhs.uk/realms/ops"
AUDIENCE = "xhuma-admin"
JWKS_URL = "https://login.trust.example.nhs.uk/jwks"


async def denied_rows(app: Any) -> list[dict[str, Any]]:
    rows = await app.state.runtime.audit.query(transaction="ADMIN", outcome="denied")
    return sorted(rows, key=lambda row: row["id"])


def holds(row: dict[str, Any], secret: str) -> bool:
    text = json.dumps(row, default=str)
    return secret in text or hashlib.sha256(secret.encode()).hexdigest()[:8] in text


async def test_refused_static_bearer_requests_are_audited_with_a_reason_and_never_the_token(
        make_settings: Any) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    wrong = "w" * 40
    async with app_client(app, peer=("192.0.2.7", 5000)) as client:
        statuses = [
            (await client.get("/api/status")).status_code,
            (await client.get("/api/status", headers={"Authorization": f"Bearer {wrong}"})).status_code,
            (await client.get("/api/audit", headers={"Authorization": f"Basic {TOKEN}"})).status_code,
            (await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})).status_code,
        ]
        rows = await denied_rows(app)
    assert statuses == [401, 401, 401, 200]
    assert [(row["reason"], row["error_code"]) for row in rows] == [
        ("AdminTokenMissing", "401"), ("AdminTokenInvalid", "401"), ("AdminTokenMissing", "401")]
    assert [row["details"]["route"] for row in rows] == ["/api/status", "/api/status", "/api/audit"]
    assert {row["client_address"] for row in rows} == {"192.0.2.7"}
    assert not any(holds(row, wrong) or holds(row, TOKEN) for row in rows)


async def test_a_closed_admin_api_audits_each_refusal(make_settings: Any) -> None:
    app = create_app(make_settings())
    async with app_client(app) as client:
        response = await client.get("/api/audit", headers={"Authorization": "Bearer anything-at-all"})
        rows = await denied_rows(app)
    assert response.status_code == 403
    assert [(row["reason"], row["error_code"]) for row in rows] == [("AdminApiDisabled", "403")]


@pytest.fixture
def oidc() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [jwk]}))
    return {"key": key, "client": httpx.AsyncClient(transport=transport)}


def oidc_token(key: Any, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ops-engineer-7", "iat": now, "exp": now + 300,
              "roles": ["xhuma-admin"], **overrides}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


async def test_refused_oidc_tokens_are_audited_with_the_subject_only_when_verified_and_bounded(
        make_settings: Any, oidc: dict[str, Any]) -> None:
    settings = make_settings(admin_oidc_jwks_url=JWKS_URL, admin_oidc_issuer=ISSUER, admin_oidc_audience=AUDIENCE,
                             admin_oidc_role="xhuma-admin")
    app = create_app(settings)
    app.state.admin_authenticator = AdminAuthenticator(settings, http_client=oidc["client"])
    now = int(time.time())
    expired = oidc_token(oidc["key"], sub="expired-engineer", exp=now - 600, iat=now - 900)
    long_subject = "s" * 10_000
    no_role = oidc_token(oidc["key"], sub=long_subject, roles=["reader"])
    async with app_client(app) as client:
        statuses = [(await client.get("/api/status", headers={"Authorization": f"Bearer {token}"})).status_code
                    for token in (expired, no_role)]
        rows = await denied_rows(app)
    assert statuses == [401, 403]
    assert [row["reason"] for row in rows] == ["AdminTokenInvalid", "AdminRoleMissing"]
    # An expired token's claims are not trusted: no subject. The role-less token was verified: its subject,
    # 10,000 characters, is kept cut to the column with a hash of the whole.
    assert rows[0]["user_id"] is None and not holds(rows[0], "expired-engineer")
    digest = hashlib.sha256(long_subject.encode()).hexdigest()[:16]
    assert rows[1]["user_id"] == long_subject[:256 - 24] + "…sha256:" + digest
    assert not any(holds(row, expired) or holds(row, no_role) for row in rows)
