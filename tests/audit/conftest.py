from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from xhuma.store.audit import SqlAuditStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def audit_database_url(request: pytest.FixtureRequest, sqlite_database_url: str) -> str:
    """SQLite file, or this session's real PostgreSQL database."""
    return sqlite_database_url if request.param == "sqlite" else str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
async def audit_store(audit_database_url: str) -> AsyncIterator[SqlAuditStore]:
    """The audit store on SQLite and on the real PostgreSQL, migrated and emptied for the test."""
    url = audit_database_url
    store = SqlAuditStore(url)
    await store.migrate()
    async with store.engine.begin() as connection:
        from xhuma.store.audit import audit_event

        await connection.execute(audit_event.delete())
    yield store
    await store.close()


def caller(**overrides: Any) -> Any:
    from xhuma.ports import CallerIdentity

    values: dict[str, Any] = {
        "user_id": "U123", "user_name": "CONE, Stephen", "role_code": "224608005",
        "role_display": "Administrative healthcare staff", "organization": "UCLH",
        "organization_id": "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884.100",
        "home_community_id": "urn:oid:1.2.840.114350.1.13.525.3.7.3.688884", "purpose_of_use": "TREATMENT",
        "verified": True, "client_cert_subject": "CN=Epic Gateway,O=UCLH,C=GB", "client_address": "192.0.2.10",
    }
    values.update(overrides)
    return CallerIdentity(**values)
