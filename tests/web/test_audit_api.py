"""GET /api/audit (and POST /api/audit/search): filters, paging, JSON, NHS number hashed server-side, behind
the admin bearer token; on SQLite and PostgreSQL (SCAL GEN-05; LESSONS 30, 31)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from xhuma.app import create_app

TOKEN = "admin-" + "z" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATIENT_A, PATIENT_B = "9690937278", "9000000009"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, make_settings: Any) -> Iterator[TestClient]:
    overrides: dict[str, Any] = {"admin_tokens": [TOKEN], "audit_hmac_key": "p" * 32}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("pg_database_url")
    app = create_app(make_settings(**overrides))
    with TestClient(app) as test_client:
        runtime = app.state.runtime
        portal = test_client.portal  # run coroutines on the app's event loop

        async def seed() -> None:
            if not runtime.audit.is_sqlite:
                await runtime.audit.migrate()
            async with runtime.audit.engine.begin() as connection:
                await connection.execute(sa.text("DELETE FROM audit_event"))
            auditor = runtime.auditor
            for _ in range(3):
                await auditor.record("ITI-55", "success", nhs_number=PATIENT_A, message_id="urn:uuid:a")
            await auditor.record("ITI-55", "no-match", nhs_number=PATIENT_B)
            await auditor.record("ITI-38", "success", nhs_number=PATIENT_A)
            await auditor.record("ITI-39", "error", nhs_number=PATIENT_A, error_code="AuditUnavailable",
                                 document_unique_id="1.2.3.9")
            await auditor.record("PDS", "success", nhs_number=PATIENT_B)

        portal.call(seed)
        yield test_client


def test_audit_requires_the_admin_token(client: TestClient) -> None:
    assert client.get("/api/audit").status_code == 401
    assert client.post("/api/audit/search", json={}).status_code == 401


def test_filter_by_nhs_number_hashes_it_and_never_returns_it(client: TestClient) -> None:
    response = client.get("/api/audit", params={"nhs_number": PATIENT_A}, headers=AUTH)
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 5
    assert {item["patient_pseudonym"] for item in page["items"]} == {page["patient"]}
    assert PATIENT_A not in response.text and PATIENT_B not in response.text
    same = client.post("/api/audit/search", json={"nhs_number": "969 093 7278"}, headers=AUTH).json()
    assert same["total"] == 5 and same["patient"] == page["patient"]
    by_pseudonym = client.get("/api/audit", params={"patient": page["patient"]}, headers=AUTH).json()
    assert by_pseudonym["total"] == 5


def test_filters_by_transaction_outcome_and_time_with_paging(client: TestClient) -> None:
    both = client.get("/api/audit", params=[("transaction", "ITI-55"), ("transaction", "ITI-38")],
                      headers=AUTH).json()
    assert both["total"] == 5
    no_match = client.get("/api/audit", params={"outcome": "no-match"}, headers=AUTH).json()
    assert [item["transaction"] for item in no_match["items"]] == ["ITI-55"]
    errors = client.post("/api/audit/search", json={"outcome": ["error"]}, headers=AUTH).json()
    assert errors["items"][0]["error_code"] == "AuditUnavailable"
    assert errors["items"][0]["document_unique_id"] == "1.2.3.9"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.post("/api/audit/search", json={"since": future}, headers=AUTH).json()["total"] == 0
    first = client.get("/api/audit", params={"transaction": "ITI-55", "limit": 2}, headers=AUTH).json()
    second = client.get("/api/audit", params={"transaction": "ITI-55", "limit": 2, "offset": 2}, headers=AUTH).json()
    assert (first["total"], len(first["items"]), first["next_offset"]) == (4, 2, 2)
    assert (len(second["items"]), second["next_offset"]) == (2, None)
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}


def test_bad_filters_are_refused_without_echoing_them(client: TestClient) -> None:
    bad_number = client.get("/api/audit", params={"nhs_number": "9690937279"}, headers=AUTH)
    assert bad_number.status_code == 422 and "9690937279" not in bad_number.text
    assert client.get("/api/audit", params={"transaction": "DROP"}, headers=AUTH).status_code == 422
    assert client.get("/api/audit", params={"limit": 5000}, headers=AUTH).status_code == 422
    assert client.post("/api/audit/search", json={"sql": "1=1"}, headers=AUTH).status_code == 422


def test_searching_the_audit_trail_is_itself_audited(client: TestClient) -> None:
    client.post("/api/audit/search", json={"nhs_number": PATIENT_B}, headers=AUTH)
    admin = client.get("/api/audit", params={"transaction": "ADMIN"}, headers=AUTH).json()
    # The first search above plus this one; the newest first.
    assert admin["total"] == 2
    details = admin["items"][1]["details"]
    assert details["action"] == "audit-search" and details["filters"] == ["patient_pseudonym"]
    assert details["by"].startswith("token:") and TOKEN not in str(admin)
