"""Admin and console data need a bearer token (LESSONS 30): static tokens compared in constant time, or OIDC JWTs
validated against a JWKS (key generated here), issuer, audience, expiry and role."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from xhuma.app import create_app
from xhuma.security.admin import AdminAuthenticator

TOKEN = "t" * 40
ISSUER = "https://login.trust.example.nhs.uk/realms/ops"
AUDIENCE = "xhuma-admin"


def test_admin_api_refuses_missing_wrong_and_url_tokens(make_settings: Any) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    with TestClient(app) as client:
        missing = client.get("/api/status")
        wrong = client.get("/api/status", headers={"Authorization": "Bearer " + "x" * 40})
        basic = client.get("/api/status", headers={"Authorization": f"Basic {TOKEN}"})
        in_url = client.get(f"/api/status?access_token={TOKEN}&token={TOKEN}")
        good = client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        metrics = client.get("/metrics").text
    assert [r.status_code for r in (missing, wrong, basic, in_url)] == [401, 401, 401, 401]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert good.status_code == 200 and good.json()["profile"] == "simulator"
    assert "xhuma_admin_auth_failures_total 4.0" in metrics


def test_admin_api_is_closed_when_no_admin_auth_is_configured(make_settings: Any) -> None:
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/api/audit", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "XHUMA_ADMIN_TOKENS" in response.json()["detail"]


@pytest.fixture
def oidc() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    fetches = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(200, json={"keys": [jwk]})

    return {"key": key, "client": httpx.AsyncClient(transport=httpx.MockTransport(handler)), "fetches": fetches}


def oidc_token(key: Any, *, kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ops-engineer-7", "iat": now, "exp": now + 300,
              "roles": ["xhuma-admin"]}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def oidc_app(make_settings: Any, oidc: dict[str, Any]) -> Any:
    settings = make_settings(admin_oidc_jwks_url="https://login.trust.example.nhs.uk/jwks", admin_oidc_issuer=ISSUER,
                             admin_oidc_audience=AUDIENCE, admin_oidc_role="xhuma-admin")
    app = create_app(settings)
    app.state.admin_authenticator = AdminAuthenticator(settings, http_client=oidc["client"])
    return app


def test_oidc_token_signed_by_a_jwks_key_with_issuer_audience_and_role_is_accepted(make_settings: Any,
                                                                                   oidc: dict[str, Any]) -> None:
    with TestClient(oidc_app(make_settings, oidc)) as client:
        response = client.get("/api/status", headers={"Authorization": "Bearer " + oidc_token(oidc["key"])})
    assert response.status_code == 200
    assert oidc["fetches"] == ["https://login.trust.example.nhs.uk/jwks"]


@pytest.mark.parametrize("case", ["expired", "wrong-audience", "wrong-issuer", "no-role", "foreign-key",
                                  "tampered", "alg-none"])
def test_oidc_token_that_is_expired_misaddressed_unprivileged_or_forged_is_refused(
        make_settings: Any, oidc: dict[str, Any], case: str) -> None:
    key = oidc["key"]
    if case == "expired":
        token = oidc_token(key, exp=int(time.time()) - 600, iat=int(time.time()) - 900)
    elif case == "wrong-audience":
        token = oidc_token(key, aud="some-other-api")
    elif case == "wrong-issuer":
        token = oidc_token(key, iss="https://evil.example")
    elif case == "no-role":
        token = oidc_token(key, roles=["reader"])
    elif case == "foreign-key":
        token = oidc_token(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif case == "tampered":
        header, payload, signature = oidc_token(key).split(".")
        claims = json.loads(jwt.utils.base64url_decode(payload))
        claims["sub"] = "someone-else"
        payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
        token = ".".join((header, payload, signature))
    else:
        token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": 1, "exp": 2**40}, None,
                           algorithm="none", headers={"kid": "k1"})
    with TestClient(oidc_app(make_settings, oidc)) as client:
        response = client.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == (403 if case == "no-role" else 401)
