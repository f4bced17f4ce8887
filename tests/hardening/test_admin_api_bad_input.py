"""The admin API under bad query parameters and bodies: a 4xx that names the problem without echoing the input,
never a 500 (LESSONS 7; docs/security.md "Admin API"; tests/web/test_audit_api.py 'refused without echoing')."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from xhuma.app import create_app
from xhuma.config import Settings

TOKEN = "b" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    overrides: dict[str, Any] = {"admin_tokens": [TOKEN], "working_dir": tmp_path_factory.mktemp("admin")}
    if request.param == "postgresql":
        from xhuma.store.audit import upgrade

        url = request.getfixturevalue("pg_database_url")
        upgrade(url)
        overrides["database_url"] = url
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("XHUMA_") and not name.startswith("XHUMA_TEST_"):
                patch.delenv(name)
        with TestClient(create_app(Settings(**overrides)), raise_server_exceptions=False) as test_client:
            yield test_client


BAD_QUERIES = [
    {"since": "notadate"}, {"since": "2020-13-45"}, {"until": "9999999999999999999999"}, {"since": "1e400"},
    {"limit": "-1"}, {"limit": "0"}, {"limit": "10" * 20}, {"limit": "abc"}, {"offset": "-5"},
    {"offset": str(2**63)}, {"offset": "9" * 40}, {"transaction": "FOO"}, {"outcome": "x" * 500},
    {"nhs_number": "123"}, {"nhs_number": "9690937287"},
]


@pytest.mark.parametrize("params", BAD_QUERIES, ids=lambda p: "-".join(f"{k}={v[:12]}" for k, v in p.items()))
def test_bad_query_parameters_are_422_never_500(client: TestClient, params: dict[str, str]) -> None:
    """Before the fix an offset beyond a signed 64-bit integer reached SQLite/PostgreSQL (OverflowError: 500)."""
    response = client.get("/api/audit", params=params, headers=AUTH)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"]
    for value in params.values():
        if len(value) >= 5:
            assert value not in response.text  # the bad input is named, not echoed


BAD_BODIES: list[bytes] = [
    b"", b"null", b"[]", b"{", b"\xff\xfe", b'{"limit": -1}', b'{"since": "x"}', b'{"offset": 1e400}',
    b'{"offset": 9223372036854775808}', b'{"offset": NaN}', b'{"limit": Infinity}', b'{"unknown": 1}',
    b'{"nhs_number": 9690937286}', b'{"nhs_number": ["9690937286"]}', b'{"transaction": "ITI-55"}',
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_search_bodies_are_422_never_500_and_never_echo_an_nhs_number(client: TestClient, body: bytes) -> None:
    """Before the fix a non-finite number (1e400, NaN) made FastAPI's own 422 handler fail serialising the echoed
    input (a bare 500), and a JSON number in nhs_number was echoed back in the 422."""
    response = client.post("/api/audit/search", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert "9690937286" not in response.text and "Internal Server Error" not in response.text
    assert all(set(item) == {"type", "loc", "msg"} for item in response.json()["detail"])


def test_time_bounds_with_an_offset_are_compared_in_utc(client: TestClient) -> None:
    """An event just written is found by since = now - 1 min written with a +14:00 offset, and excluded by
    until = the same instant; before the fix the offset was dropped on SQLite (14 hours out)."""
    newest = client.post("/api/audit/search", json={"limit": 1}, headers=AUTH).json()["items"][0]["id"]  # now
    instant = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=14)))
    found = client.get("/api/audit", params={"since": instant.isoformat(), "transaction": "ADMIN"}, headers=AUTH)
    assert found.status_code == 200 and newest in {item["id"] for item in found.json()["items"]}
    before = client.get("/api/audit", params={"until": instant.isoformat(), "transaction": "ADMIN", "limit": 500},
                        headers=AUTH)
    assert before.status_code == 200 and newest not in {item["id"] for item in before.json()["items"]}


def test_largest_offset_is_an_empty_page_not_an_error(client: TestClient) -> None:
    response = client.get("/api/audit", params={"offset": str(2**63 - 1)}, headers=AUTH)
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize("header", ["Bearer \x7f", "Basic abc", "Bearer " + "a" * 20_000,
                                    "Bearer eyJhbGciOiJub25lIn0.e30.", "bearer", "Bearer  "])
def test_malformed_authorization_is_401_never_500(client: TestClient, header: str) -> None:
    response = client.get("/api/audit", headers={"Authorization": header})
    assert response.status_code in (401, 403) and "Traceback" not in response.text
