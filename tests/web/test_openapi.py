"""/openapi.json describes every admin route and parameter: served only behind the admin authentication, like
/api (issue 16); the interactive /docs and /redoc pages are off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from xhuma.app import create_app

TOKEN = "admin-" + "q" * 40


@pytest.fixture
def client(make_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(admin_tokens=[TOKEN], audit_hmac_key="p" * 32))) as test_client:
        yield test_client


def test_openapi_document_is_refused_without_the_admin_token_and_the_refusal_is_audited(client: TestClient) -> None:
    anonymous = client.get("/openapi.json")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "paths" not in anonymous.text
    assert client.get("/openapi.json", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def refusals() -> list[Any]:
        async with runtime.audit.engine.connect() as connection:
            return list(await connection.execute(sa.text(
                "SELECT reason FROM audit_event WHERE \"transaction\" = 'ADMIN' AND outcome = 'denied'")))

    assert len(client.portal.call(refusals)) == 2


def test_openapi_document_is_served_to_an_admin(client: TestClient) -> None:
    response = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Xhuma" and "/api/audit" in document["paths"]
    assert "/openapi.json" not in document["paths"]


def test_interactive_docs_are_not_served(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404


def test_openapi_document_is_refused_when_the_admin_api_is_disabled(make_settings: Any) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/openapi.json").status_code == 403
